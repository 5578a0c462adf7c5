//! The cache of positive answers, and the rules that keep it true.
//!
//! Entries are valid `VerifyResponse`s keyed by the token's blake3 hash
//! (never its text), bounded by `capacity` (quick_cache's S3-FIFO). The
//! watch task feeds [`Cache::apply`]: a change drops the token's entry, a
//! reset drops them all, and every message proves the cache current
//! ([`Cache::is_fresh`]).
//!
//! The race a cache of remote answers must not lose: a Verify RPC answers
//! "valid", the token is revoked, the change arrives and finds nothing to
//! drop, and only then is the (now wrong) answer cached. So a miss takes a
//! [`Position`] before its RPC, and [`Cache::admit`] caches the answer only
//! if no change for that token (and no reset) was applied since; both run
//! under the one lock `apply` takes, so there is no gap between the check
//! and the insert. Hits never take that lock.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use quick_cache::{Lifecycle, UnitWeighter};

use crate::{
    format::{PassThroughBuilder, TokenHash},
    pb::{VerifyResponse, VerifyResult, WatchResponse},
};

/// Changes remembered for the race check. A miss whose RPC outlasts this
/// many changes is simply not cached.
const RECENT_CHANGES: usize = 4_096;

/// A tick that never comes: "never heard", "never expires".
const NEVER: u64 = u64::MAX;

/// Room for the granted scopes, space-separated, inside the entry itself.
const INLINE_SCOPES: usize = 48;

/// One cached valid answer. What a hit reads sits in this one allocation
/// (two cache lines): with 100,000 entries each hit is a cache miss, and
/// following the response's scope strings would add two more.
pub(crate) struct Entry {
    /// The answer for any required scopes the token grants.
    pub valid: Arc<VerifyResponse>,
    /// The tick the token expires at, or [`NEVER`].
    expires: u64,
    /// The tick of the last use tokend knows of (its own Verify, or our
    /// report); see `usage`.
    pub reported: AtomicU64,
    /// The granted scopes joined by spaces (which no scope contains), when
    /// they fit; `scopes_len` is `u8::MAX` when they do not.
    scopes: [u8; INLINE_SCOPES],
    scopes_len: u8,
    /// The answer when a required scope is missing: the token's id only.
    pub insufficient: Arc<VerifyResponse>,
}

impl Entry {
    pub(crate) fn new(valid: VerifyResponse, expires: u64, now: u64) -> Entry {
        let mut scopes = [0u8; INLINE_SCOPES];
        let joined = valid.scopes.join(" ");
        let scopes_len = if joined.len() <= INLINE_SCOPES {
            scopes[..joined.len()].copy_from_slice(joined.as_bytes());
            joined.len() as u8
        } else {
            u8::MAX
        };
        let insufficient = VerifyResponse {
            valid: false,
            result: VerifyResult::InsufficientScope.into(),
            token_id: valid.token_id.clone(),
            ..Default::default()
        };
        Entry {
            valid: Arc::new(valid),
            expires,
            reported: AtomicU64::new(now),
            scopes,
            scopes_len,
            insufficient: Arc::new(insufficient),
        }
    }

    /// Whether the token grants every scope in `required`.
    #[inline]
    pub fn grants<S: AsRef<str>>(&self, required: &[S]) -> bool {
        if self.scopes_len == u8::MAX {
            return required.iter().all(|r| self.valid.scopes.iter().any(|s| s == r.as_ref()));
        }
        let inline = &self.scopes[..usize::from(self.scopes_len)];
        required.iter().all(|r| inline.split(|&b| b == b' ').any(|s| s == r.as_ref().as_bytes()))
    }
}

/// Where the cache stood when a miss sent its RPC.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Position {
    changes: u64,
    resets: u64,
}

/// What the watch task and misses change together.
#[derive(Default)]
struct State {
    /// Which hash each cached token id is stored under (changes name ids).
    by_id: HashMap<String, TokenHash>,
    /// Changes applied so far.
    changes: u64,
    /// Resets applied so far.
    resets: u64,
    /// The ids of the last [`RECENT_CHANGES`] changes; the back one is
    /// change number `changes`.
    recent: VecDeque<String>,
}

impl State {
    /// Whether an answer for `token_id` fetched from `since` may be cached.
    fn unchanged_since(&self, since: Position, token_id: &str) -> bool {
        if since.resets != self.resets {
            return false;
        }
        let missed = (self.changes - since.changes) as usize;
        // More changes than remembered: cannot tell, so do not cache.
        missed <= self.recent.len() && !self.recent.iter().rev().take(missed).any(|id| id == token_id)
    }
}

/// Collects what an insert evicts, so the id index forgets it too.
#[derive(Clone, Default)]
struct Evictions;

impl Lifecycle<TokenHash, Arc<Entry>> for Evictions {
    type RequestState = Vec<String>;

    fn on_evict(&self, evicted: &mut Vec<String>, _hash: TokenHash, entry: Arc<Entry>) {
        evicted.push(entry.valid.token_id.clone());
    }
}

/// Monotonic ticks (nanoseconds since the cache was made): one clock read
/// per check serves both the staleness and the expiry test.
struct Clock {
    base: Instant,
}

impl Clock {
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// Counters a hit bumps, spread over cache lines so that threads checking
/// different tokens do not contend.
#[repr(align(128))]
#[derive(Default)]
struct Stripe(AtomicU64);

/// The cache. See the module docs.
pub(crate) struct Cache {
    entries: quick_cache::sync::Cache<TokenHash, Arc<Entry>, UnitWeighter, PassThroughBuilder, Evictions>,
    state: Mutex<State>,
    clock: Clock,
    /// The tick of the last message from the watch stream, or [`NEVER`].
    last_heard: AtomicU64,
    max_staleness: u64,
    hits: [Stripe; 16],
    misses: AtomicU64,
    invalidations: AtomicU64,
    resets: AtomicU64,
}

impl Cache {
    /// An empty cache of at most `capacity` answers, bypassed after
    /// `max_staleness` without a message from the stream.
    pub fn new(capacity: usize, max_staleness: Duration) -> Cache {
        let capacity = capacity.max(1);
        let entries = quick_cache::sync::Cache::with(
            capacity,
            capacity as u64,
            UnitWeighter,
            PassThroughBuilder::default(),
            Evictions,
        );
        Cache {
            entries,
            state: Mutex::default(),
            clock: Clock { base: Instant::now() },
            last_heard: AtomicU64::new(NEVER),
            max_staleness: max_staleness.as_nanos().min(u128::from(NEVER - 1)) as u64,
            hits: Default::default(),
            misses: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        }
    }

    /// The current tick.
    #[inline]
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Whether the stream has been heard from within `max_staleness` of
    /// `now`: only then may the cache answer.
    #[inline]
    pub fn is_fresh(&self, now: u64) -> bool {
        let heard = self.last_heard.load(Relaxed);
        heard != NEVER && now.saturating_sub(heard) <= self.max_staleness
    }

    /// How long ago the stream was last heard from; `None` if never.
    pub fn staleness(&self) -> Option<Duration> {
        let heard = self.last_heard.load(Relaxed);
        (heard != NEVER).then(|| Duration::from_nanos(self.now().saturating_sub(heard)))
    }

    /// The cached answer for `hash`, if there is one that has not expired
    /// by `now`. Counts a hit when there is.
    #[inline]
    pub fn get(&self, hash: &TokenHash, now: u64) -> Option<Arc<Entry>> {
        let entry = self.entries.get(hash)?;
        if now >= entry.expires {
            self.forget_expired(hash, &entry);
            return None;
        }
        self.hits[usize::from(hash.0[31] & 15)].0.fetch_add(1, Relaxed);
        Some(entry)
    }

    /// Drops an entry that expired (once per token, so the lock is fine).
    #[cold]
    fn forget_expired(&self, hash: &TokenHash, expired: &Arc<Entry>) {
        let mut state = self.lock();
        if self.entries.remove_if(hash, |current| Arc::ptr_eq(current, expired)).is_some() {
            state.by_id.remove(&expired.valid.token_id);
        }
    }

    /// Counts a call answered by the RPC.
    pub fn count_miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }

    /// Where the cache stands now; take it before a miss's RPC.
    pub fn position(&self) -> Position {
        let state = self.lock();
        Position { changes: state.changes, resets: state.resets }
    }

    /// Caches `response` (a valid answer for the token hashed `hash`,
    /// fetched after `since`) unless a change for the token or a reset came
    /// in meanwhile, or the cache is not current; returns it shared either
    /// way.
    pub fn admit(&self, since: Position, hash: TokenHash, response: VerifyResponse) -> Arc<VerifyResponse> {
        let now = self.now();
        let expires = match &response.expire_time {
            None => NEVER,
            Some(t) => match remaining(t) {
                // Expired by our clock already: answer, but do not keep.
                None => return Arc::new(response),
                Some(left) => now.saturating_add(left.as_nanos().min(u128::from(NEVER - 1)) as u64),
            },
        };
        let entry = Arc::new(Entry::new(response, expires, now));
        let answer = entry.valid.clone();
        let mut state = self.lock();
        if !self.is_fresh(now) || !state.unchanged_since(since, &answer.token_id) {
            return answer;
        }
        state.by_id.insert(answer.token_id.clone(), hash);
        let mut evicted = Vec::new();
        self.entries.insert_with_lifecycle(hash, entry, &mut evicted);
        for id in evicted {
            state.by_id.remove(&id);
        }
        answer
    }

    /// Applies one message from the watch stream.
    pub fn apply(&self, message: &WatchResponse) {
        let mut state = self.lock();
        if message.reset {
            self.entries.clear();
            state.by_id.clear();
            state.recent.clear();
            state.resets += 1;
            self.resets.fetch_add(1, Relaxed);
        }
        for change in &message.changes {
            if let Some(hash) = state.by_id.remove(&change.token_id) {
                self.entries.remove(&hash);
            }
            state.changes += 1;
            if state.recent.len() == RECENT_CHANGES {
                state.recent.pop_front();
            }
            state.recent.push_back(change.token_id.clone());
        }
        self.invalidations.fetch_add(message.changes.len() as u64, Relaxed);
        // Heard only once applied: a check that sees the cache fresh sees
        // these changes too.
        self.last_heard.store(self.now(), Relaxed);
    }

    /// Counters for `CacheStats`: hits, misses, invalidations, resets.
    pub fn counters(&self) -> (u64, u64, u64, u64) {
        let hits = self.hits.iter().map(|s| s.0.load(Relaxed)).sum();
        (hits, self.misses.load(Relaxed), self.invalidations.load(Relaxed), self.resets.load(Relaxed))
    }

    /// Answers cached now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every await-free step, so a panic
        // elsewhere while holding it leaves nothing half-done.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How long until `t`, or `None` if it has passed by this machine's clock.
fn remaining(t: &prost_types::Timestamp) -> Option<Duration> {
    let secs = u64::try_from(t.seconds).ok()?;
    let at = UNIX_EPOCH + Duration::new(secs, t.nanos.clamp(0, 999_999_999) as u32);
    at.duration_since(SystemTime::now()).ok().filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{TokenChange, TokenStatus};

    fn valid(id: &str, scopes: &[&str]) -> VerifyResponse {
        VerifyResponse {
            valid: true,
            result: VerifyResult::Ok.into(),
            token_id: id.into(),
            owner: "team".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn hash(n: u8) -> TokenHash {
        TokenHash([n; 32])
    }

    fn heartbeat() -> WatchResponse {
        WatchResponse { resume_token: "p".into(), ..Default::default() }
    }

    fn change(id: &str) -> WatchResponse {
        let change = TokenChange { token_id: id.into(), status: TokenStatus::Revoked.into(), expire_time: None };
        WatchResponse { resume_token: "p".into(), reset: false, changes: vec![change] }
    }

    fn fresh_cache(capacity: usize) -> Cache {
        let cache = Cache::new(capacity, Duration::from_secs(60));
        cache.apply(&WatchResponse { reset: true, ..heartbeat() });
        cache
    }

    #[test]
    fn nothing_is_cached_or_answered_before_the_stream_is_heard() {
        let cache = Cache::new(10, Duration::from_secs(60));
        assert!(!cache.is_fresh(cache.now()));
        assert_eq!(cache.staleness(), None);
        let since = cache.position();
        cache.admit(since, hash(1), valid("a", &[]));
        assert_eq!(cache.len(), 0);
        cache.apply(&heartbeat());
        assert!(cache.is_fresh(cache.now()));
    }

    #[test]
    fn a_change_drops_the_entry_and_a_reset_drops_all() {
        let cache = fresh_cache(10);
        cache.admit(cache.position(), hash(1), valid("a", &["read"]));
        cache.admit(cache.position(), hash(2), valid("b", &[]));
        let entry = cache.get(&hash(1), cache.now()).expect("cached");
        assert!(entry.grants(&["read"]) && !entry.grants(&["read", "write"]) && !entry.grants(&["rea"]));
        assert!(entry.grants::<&str>(&[]));
        cache.apply(&change("a"));
        assert!(cache.get(&hash(1), cache.now()).is_none());
        assert!(cache.get(&hash(2), cache.now()).is_some());
        cache.apply(&WatchResponse { reset: true, ..heartbeat() });
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.counters(), (2, 0, 1, 2));
    }

    #[test]
    fn an_answer_overtaken_by_a_change_or_a_reset_is_not_cached() {
        let cache = fresh_cache(10);
        let since = cache.position();
        cache.apply(&change("a"));
        cache.admit(since, hash(1), valid("a", &[]));
        assert!(cache.get(&hash(1), cache.now()).is_none(), "changed during the RPC");
        // A change to another token does not stop it.
        let since = cache.position();
        cache.apply(&change("other"));
        cache.admit(since, hash(1), valid("a", &[]));
        assert!(cache.get(&hash(1), cache.now()).is_some());
        let since = cache.position();
        cache.apply(&WatchResponse { reset: true, ..heartbeat() });
        cache.admit(since, hash(2), valid("b", &[]));
        assert!(cache.get(&hash(2), cache.now()).is_none(), "reset during the RPC");
        // More changes than remembered: cannot tell, so not cached.
        let since = cache.position();
        for i in 0..=RECENT_CHANGES {
            cache.apply(&change(&format!("x{i}")));
        }
        cache.admit(since, hash(3), valid("c", &[]));
        assert!(cache.get(&hash(3), cache.now()).is_none());
    }

    #[test]
    fn capacity_is_kept_and_evicted_ids_are_forgotten() {
        let cache = fresh_cache(100);
        for n in 0..=255u8 {
            cache.admit(cache.position(), hash(n), valid(&format!("t{n}"), &[]));
        }
        assert!(cache.len() <= 100, "{}", cache.len());
        let state = cache.lock();
        assert_eq!(state.by_id.len(), cache.len(), "the id index follows evictions");
    }

    #[test]
    fn scopes_too_long_to_keep_inline_are_checked_all_the_same() {
        let long: Vec<String> = (0..20).map(|i| format!("scope-number-{i}")).collect();
        let refs: Vec<&str> = long.iter().map(String::as_str).collect();
        let entry = Entry::new(valid("a", &refs), NEVER, 0);
        assert_eq!(entry.scopes_len, u8::MAX);
        assert!(entry.grants(&["scope-number-0", "scope-number-19"]));
        assert!(!entry.grants(&["scope-number-20"]));
        let short = Entry::new(valid("b", &["a:b", "c"]), NEVER, 0);
        assert!(short.grants(&["c", "a:b"]) && !short.grants(&["a"]) && !short.grants(&["a:b c"]));
    }

    #[test]
    fn expired_answers_are_not_served() {
        let cache = fresh_cache(10);
        let mut soon = valid("a", &[]);
        let at = SystemTime::now() + Duration::from_millis(30);
        soon.expire_time = Some(at.into());
        cache.admit(cache.position(), hash(1), soon);
        assert!(cache.get(&hash(1), cache.now()).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&hash(1), cache.now()).is_none());
        assert!(cache.lock().by_id.is_empty());
        let mut past = valid("b", &[]);
        past.expire_time = Some((SystemTime::now() - Duration::from_secs(1)).into());
        cache.admit(cache.position(), hash(2), past);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn silence_longer_than_max_staleness_makes_the_cache_stale() {
        let cache = Cache::new(10, Duration::from_millis(20));
        cache.apply(&heartbeat());
        assert!(cache.is_fresh(cache.now()));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!cache.is_fresh(cache.now()));
        assert!(cache.staleness().unwrap() >= Duration::from_millis(30));
    }
}
