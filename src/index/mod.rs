//! The in-memory token set: what Verify reads, and what List and Get read.
//!
//! Two views over the same entries (packed: see [`Entry`]):
//!
//! * the hot map, `TokenHash → Entry` (see `hot.rs`), which Verify reads;
//! * the admin view, every entry in id (= creation) order, and each owner's
//!   entries in id order, for Get, List and quotas.
//!
//! Every replica holds every token, so each view is kept to a few bytes a
//! token; the README's 10M column measures the whole.
//!
//! Entries are immutable apart from their last-used time: a change (revoke,
//! rotate) replaces the entry in every view. Every change arrives through
//! [`Index::apply`], whether it was made by this process or (later) arrives
//! from another replica through a store's change feed.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, RwLock, atomic::Ordering},
};

use crate::{
    change::Change,
    clock::Time,
    id::TokenId,
    intern::Interner,
    record::{Status, TokenRecord},
    token::TokenHash,
    watch::Changes,
};

mod entry;
mod hot;

pub use entry::Entry;
use hot::HotMap;

/// Last-used times are recorded at most once per second per token: a busy
/// token would otherwise write the same cache line from every core on every
/// call, and nobody reads last-used to the nanosecond.
const TOUCH_GRANULARITY_NANOS: i64 = 1_000_000_000;

/// Entries in id order, in a plain vector.
///
/// Ids are time-ordered, so nearly every new token goes at the end, and a
/// late one (minted on another replica a moment before the newest held)
/// lands a few places from it: insertion is a push or a short move. Tokens
/// are never removed. Eight bytes a token, where a `BTreeMap` from id to
/// entry spent about fifty at ten million.
#[derive(Default)]
struct ById(Vec<Arc<Entry>>);

impl ById {
    fn position(&self, id: TokenId) -> Result<usize, usize> {
        self.0.binary_search_by(|e| e.id().cmp(&id))
    }

    fn get(&self, id: TokenId) -> Option<&Arc<Entry>> {
        self.position(id).ok().map(|i| &self.0[i])
    }

    /// Puts `entry` in its place, replacing the entry with its id; returns
    /// whether its id is new.
    fn put(&mut self, entry: Arc<Entry>) -> bool {
        if self.0.last().is_none_or(|newest| newest.id() < entry.id()) {
            self.0.push(entry);
            return true;
        }
        match self.position(entry.id()) {
            Ok(i) => {
                self.0[i] = entry;
                false
            }
            Err(i) => {
                self.0.insert(i, entry);
                true
            }
        }
    }

    /// The entries after `after` (all, if `None`), in id order.
    fn after(&self, after: Option<TokenId>) -> &[Arc<Entry>] {
        let start = after.map_or(0, |after| self.0.partition_point(|e| e.id() <= after));
        &self.0[start..]
    }

    /// Sorts entries pushed out of order (loading), once.
    fn sort(&mut self) {
        self.0.sort_unstable_by_key(|e| e.id());
        // A store holds one record per id; were one read twice, keep the
        // newer version.
        self.0.dedup_by(|later, earlier| {
            let same = later.id() == earlier.id();
            if same && later.version() > earlier.version() {
                std::mem::swap(later, earlier);
            }
            same
        });
    }
}

#[derive(Default)]
struct AdminView {
    by_id: ById,
    /// Each owner's entries, in id order.
    by_owner: HashMap<Arc<str>, ById>,
    /// The one copy of each owner, scope set, label set and allowlist that
    /// entries share.
    interner: Interner,
    /// New tokens inserted so far (see [`Arrivals`]).
    arrivals: u64,
    /// Tokens whose id was below the newest id held when they arrived, by
    /// arrival number; the oldest are dropped past [`MAX_LATE`].
    late: BTreeMap<u64, TokenId>,
}

/// Late arrivals remembered for paging: a page token older than this many
/// late arrivals (on a replica behind many out-of-order writes) may miss one.
const MAX_LATE: usize = 100_000;

impl AdminView {
    /// The entries of `owner` (a shared copy), created empty if new.
    fn owned_by(&mut self, owner: &Arc<str>) -> &mut ById {
        self.by_owner.entry(owner.clone()).or_default()
    }
}

/// A page of [`Index::list`].
#[derive(Debug, Default)]
pub struct Page {
    /// Matching entries: late arrivals behind the cursor (see [`Arrivals`]),
    /// then the rest in id order.
    pub entries: Vec<Arc<Entry>>,
    /// Where the next page starts (exclusive), if there are more matches.
    pub next_after: Option<TokenId>,
    /// The insertions this page has accounted for; the next page's
    /// `late_since`.
    pub arrivals: Arrivals,
}

/// A position in the order tokens were inserted into one index.
///
/// Ids are minted by whichever replica issues a token, so a token can
/// arrive (through the change feed) after tokens with higher ids: behind
/// a List cursor that has already passed its id. The index numbers every
/// insertion and remembers those that arrived behind the newest id it held;
/// a page token carries the number at which its page was taken, and the
/// next page starts with the late arrivals since then that fall behind its
/// cursor, so paging skips none. Numbers belong to one index (`instance`):
/// a page token from another replica or process has none to offer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arrivals {
    /// The index that numbered the insertions (random per process).
    pub instance: u64,
    /// Insertions counted.
    pub seen: u64,
}

/// What List filters by; every filter given must match.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this owner's tokens.
    pub owner: Option<String>,
    /// Only tokens with this status at the query's `now`.
    pub status: Option<Status>,
    /// Only tokens whose name starts with this.
    pub name_prefix: Option<String>,
    /// Only tokens not used since this time (never-used ones included).
    pub last_used_before: Option<Time>,
    /// Only tokens that expire before this time (never-expiring ones
    /// excluded).
    pub expire_before: Option<Time>,
    /// Only tokens of these owners (a caller limited to several owners).
    pub within: Option<Vec<Arc<str>>>,
}

impl ListFilter {
    fn matches(&self, e: &Entry, now: Time) -> bool {
        self.owner.as_deref().is_none_or(|o| **e.owner() == *o)
            && self.within.as_ref().is_none_or(|owners| owners.iter().any(|o| *o == *e.owner()))
            && self.status.is_none_or(|s| e.status_at(now) == s)
            && self.name_prefix.as_deref().is_none_or(|p| e.name().starts_with(p))
            && self.last_used_before.is_none_or(|t| e.last_used().is_none_or(|used| used < t))
            && self.expire_before.is_none_or(|t| e.expire_time().is_some_and(|exp| exp < t))
    }
}

/// One page of [`Index::list`].
#[derive(Debug, Clone, Copy)]
pub struct ListQuery<'a> {
    /// Which tokens.
    pub filter: &'a ListFilter,
    /// Start after this id.
    pub after: Option<TokenId>,
    /// Include tokens that arrived behind `after` since this position.
    pub late_since: Option<Arrivals>,
    /// At most this many entries.
    pub limit: usize,
    /// The time statuses are judged at.
    pub now: Time,
}

/// The in-memory token set.
pub struct Index {
    /// Names this index's arrival numbers (see [`Arrivals`]).
    instance: u64,
    hot: HotMap,
    admin: RwLock<AdminView>,
    /// Entries whose last-used time changed since the last persistence pass.
    dirty: Mutex<Vec<Arc<Entry>>>,
    /// Every applied change, numbered, for `Watch`.
    changes: Changes,
}

impl Default for Index {
    fn default() -> Self {
        Index::with_capacity(0)
    }
}

impl Index {
    fn with_capacity(n: usize) -> Index {
        let instance = {
            use rand::TryRngCore as _;
            rand::rngs::OsRng.try_next_u64().expect("the operating system's random number generator failed")
        };
        Index {
            instance,
            changes: Changes::new(instance),
            hot: HotMap::with_capacity(n),
            admin: RwLock::default(),
            dirty: Mutex::default(),
        }
    }

    /// Builds an index from records (benchmarks, tests).
    pub fn load(records: Vec<TokenRecord>, last_used: &HashMap<TokenId, Time>) -> Index {
        let mut loader = Loader::new(records.len());
        let mut interner = Interner::default();
        for mut record in records {
            let used = last_used.get(&record.id).copied();
            interner.record(&mut record);
            loader.push(Arc::new(Entry::new(record, used)));
        }
        loader.finish(interner)
    }

    /// The entry for a token hash: the one lookup Verify makes.
    #[inline]
    pub fn lookup(&self, hash: &TokenHash) -> Option<Arc<Entry>> {
        self.hot.get(hash)
    }

    /// The entry for an id.
    pub fn get(&self, id: TokenId) -> Option<Arc<Entry>> {
        read(&self.admin).by_id.get(id).cloned()
    }

    /// The newest id, if any.
    pub fn newest_id(&self) -> Option<TokenId> {
        read(&self.admin).by_id.0.last().map(|e| e.id())
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        read(&self.admin).by_id.0.len()
    }

    /// Whether the index holds no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies committed changes: those a local write just stored, and those
    /// a shared store's change feed delivers. A record no newer than the one
    /// held (by version) is skipped, so a change delivered twice, or after a
    /// later one, changes nothing. Returns how many records were applied.
    pub fn apply(&self, changes: &[Change]) -> usize {
        let mut admin = write(&self.admin);
        let mut applied = Vec::new();
        for change in changes {
            if let Change::Put(record) = change {
                let current = admin.by_id.get(record.id);
                if current.is_some_and(|e| e.version() >= record.version) {
                    continue;
                }
                let previous = current.and_then(|e| e.last_used());
                self.insert_locked(&mut admin, record.clone(), previous);
                applied.push(record);
            }
        }
        // Under the write lock: numbered in the order applied.
        self.changes.push(applied.iter().copied());
        applied.len()
    }

    /// The numbered changes this index applied (for `Watch`).
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// Takes a last-used time another replica recorded, if later than the
    /// one held. Not queued for persistence: it came from the store.
    pub fn merge_last_used(&self, id: TokenId, at: Time) {
        if let Some(entry) = read(&self.admin).by_id.get(id) {
            entry.last_used.fetch_max(at.0, Ordering::Relaxed);
        }
    }

    fn insert_locked(&self, admin: &mut AdminView, mut record: TokenRecord, last_used: Option<Time>) {
        let newest = admin.by_id.0.last().map(|e| e.id());
        admin.interner.record(&mut record);
        let entry = Arc::new(Entry::new(record, last_used));
        admin.owned_by(entry.owner()).put(entry.clone());
        self.hot.insert(entry.clone());
        let id = entry.id();
        if admin.by_id.put(entry) {
            admin.arrivals += 1;
            if newest.is_some_and(|newest| newest > id) {
                let n = admin.arrivals;
                admin.late.insert(n, id);
                if admin.late.len() > MAX_LATE {
                    admin.late.pop_first();
                }
            }
        }
    }

    /// Records a successful use at `now` (O(1); at most one queue push per
    /// token per persistence interval).
    #[inline]
    pub fn touch(&self, entry: &Arc<Entry>, now: Time) {
        if now.0 - entry.last_used.load(Ordering::Relaxed) < TOUCH_GRANULARITY_NANOS {
            return;
        }
        entry.last_used.fetch_max(now.0, Ordering::Relaxed);
        if !entry.dirty.swap(true, Ordering::AcqRel) {
            lock(&self.dirty).push(entry.clone());
        }
    }

    /// Takes the last-used times changed since the previous call.
    pub fn take_last_used(&self) -> Vec<(TokenId, Time)> {
        // Hand the queue a vector as large as the one taken, allocated here,
        // off the Verify path: left to grow from empty, it would reallocate
        // and copy up to a million pointers inside `touch`, under the lock.
        let capacity = lock(&self.dirty).len();
        let mut dirty = Vec::with_capacity(capacity);
        std::mem::swap(&mut *lock(&self.dirty), &mut dirty);
        dirty
            .into_iter()
            .filter_map(|e| {
                // Clear first: a use racing with this pass queues the entry again.
                e.dirty.store(false, Ordering::Release);
                e.last_used().map(|t| (e.id(), t))
            })
            .collect()
    }

    /// Number of `owner`'s tokens that are active at `now`.
    pub fn count_active(&self, owner: &str, now: Time) -> usize {
        let admin = read(&self.admin);
        admin
            .by_owner
            .get(owner)
            .map_or(0, |entries| entries.0.iter().filter(|e| e.status_at(now) == Status::Active).count())
    }

    /// Counts of tokens by status at `now`: (active, expired, revoked).
    pub fn count_by_status(&self, now: Time) -> (usize, usize, usize) {
        let admin = read(&self.admin);
        admin.by_id.0.iter().fold((0, 0, 0), |(a, e, r), entry| match entry.status_at(now) {
            Status::Active => (a + 1, e, r),
            Status::Expired => (a, e + 1, r),
            Status::Revoked => (a, e, r + 1),
        })
    }

    /// One page of tokens in id order.
    pub fn list(&self, q: ListQuery<'_>) -> Page {
        let admin = read(&self.admin);
        let now_at = Arrivals { instance: self.instance, seen: admin.arrivals };
        let wanted = |e: &&Arc<Entry>| q.filter.matches(e, q.now);
        // Late arrivals behind the cursor since the previous page.
        let mut late: Vec<(u64, Arc<Entry>)> = match (q.after, q.late_since) {
            (Some(after), Some(since)) if since.instance == self.instance => admin
                .late
                .range(since.seen + 1..)
                .filter(|(_, id)| **id <= after)
                .filter_map(|(n, id)| admin.by_id.get(*id).filter(wanted).map(|e| (*n, e.clone())))
                .take(q.limit + 1)
                .collect(),
            _ => Vec::new(),
        };
        if late.len() > q.limit {
            // More late arrivals than a page: the next page resumes among them.
            late.truncate(q.limit);
            let seen = late.last().map_or(now_at.seen, |(n, _)| *n);
            let entries = late.into_iter().map(|(_, e)| e).collect();
            return Page { entries, next_after: q.after, arrivals: Arrivals { seen, ..now_at } };
        }
        let room = q.limit - late.len();
        let scope = match q.filter.owner.as_deref() {
            Some(owner) => admin.by_owner.get(owner).map_or(&[][..], |entries| entries.after(q.after)),
            None => admin.by_id.after(q.after),
        };
        let mut entries: Vec<Arc<Entry>> = scope.iter().filter(wanted).take(room + 1).cloned().collect();
        let next_after = if entries.len() > room {
            entries.truncate(room);
            Some(entries.last().map_or(q.after, |e| Some(e.id()))).flatten()
        } else {
            None
        };
        let mut page: Vec<Arc<Entry>> = late.into_iter().map(|(_, e)| e).collect();
        page.extend(entries);
        Page { entries: page, next_after, arrivals: now_at }
    }
}

/// Builds an [`Index`] from the records a store reads at start-up.
///
/// Nothing can read the index until it is built, so the loader fills its
/// maps without locks, appending in the order records come, and sorts once
/// at the end only if they did not come in id order.
pub struct Loader {
    index: Index,
    admin: AdminView,
    /// The last id pushed, and whether every id so far came in increasing
    /// order (stores read in id order, so sorting is then skipped: each
    /// owner's entries, a subsequence, are in order too).
    last: Option<TokenId>,
    in_order: bool,
}

impl Loader {
    /// A loader with room for `expected` tokens.
    pub fn new(expected: usize) -> Loader {
        let admin = AdminView { by_id: ById(Vec::with_capacity(expected)), ..AdminView::default() };
        Loader { index: Index::with_capacity(expected), admin, last: None, in_order: true }
    }

    /// Adds one entry packed from a record read from the store, its shared
    /// parts from the interner [`Loader::finish`] will be given. (Packing is
    /// the caller's, so that start-up can pack on the thread that decoded
    /// the record: see `load`.)
    pub fn push(&mut self, entry: Arc<Entry>) {
        let id = entry.id();
        self.in_order &= self.last.is_none_or(|last| last < id);
        self.last = Some(id);
        self.admin.owned_by(entry.owner()).0.push(entry.clone());
        self.index.hot.insert_mut(entry.clone());
        self.admin.by_id.0.push(entry);
    }

    /// The finished index, sharing with the entries pushed the copies held
    /// by `interner`.
    pub fn finish(mut self, interner: Interner) -> Index {
        let admin = &mut self.admin;
        admin.interner = interner;
        if !self.in_order {
            admin.by_id.sort();
            admin.by_owner.values_mut().for_each(ById::sort);
        }
        admin.by_id.0.shrink_to_fit();
        admin.by_owner.values_mut().for_each(|entries| entries.0.shrink_to_fit());
        // Everything loaded counts as arrived in order: no page token of
        // this index's predates it.
        admin.arrivals = admin.by_id.0.len() as u64;
        *write(&self.index.admin) = std::mem::take(admin);
        self.index
    }
}

// Lock poisoning only means another thread panicked mid-update of plain data
// that every writer leaves consistent at each step; keep serving.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{id::IdGenerator, token::Secret};

    fn record(ids: &IdGenerator, owner: &str) -> TokenRecord {
        crate::record::sample(ids.next(Time(1_000_000_000)), &Secret::generate("tk"), owner)
    }

    /// An index holding one token, the token, and its entry.
    fn index_of_one() -> (Index, TokenRecord, Arc<Entry>) {
        let index = Index::default();
        let r = record(&IdGenerator::default(), "a");
        index.apply(&[Change::Put(r.clone())]);
        let e = index.lookup(&r.hash).unwrap();
        (index, r, e)
    }

    #[test]
    fn apply_replaces_entries_in_both_views_and_keeps_last_used() {
        let (index, r, e) = index_of_one();
        index.touch(&e, Time(5_000_000_000));
        let mut revoked = r.revised();
        revoked.revoke_time = Some(Time(6));
        assert_eq!(index.apply(&[Change::Put(revoked.clone())]), 1);
        // A replay, and a change older than the one held, change nothing.
        assert_eq!(index.apply(&[Change::Put(revoked.clone()), Change::Put(r.clone())]), 0);
        let r = revoked;
        let e = index.lookup(&r.hash).unwrap();
        assert_eq!(e.revoke_time(), Some(Time(6)));
        assert_eq!(index.get(r.id).unwrap().revoke_time(), Some(Time(6)));
        assert_eq!(e.last_used(), Some(Time(5_000_000_000)));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_loader_given_records_out_of_order_builds_the_same_index() {
        let ids = IdGenerator::default();
        let records: Vec<_> = (0..50).map(|i| record(&ids, if i % 3 == 0 { "x" } else { "y" })).collect();
        let mut shuffled = records.clone();
        shuffled.reverse();
        shuffled.swap(3, 40);
        // The same id twice, the older version read last: the newer wins.
        let mut newer = records[7].revised();
        newer.revoke_time = Some(Time(1));
        shuffled.insert(0, newer.clone());
        let index = Index::load(shuffled, &HashMap::new());
        assert_eq!(index.len(), 50);
        let all = ListFilter::default();
        let q = ListQuery { filter: &all, after: None, late_since: None, limit: 100, now: Time(2) };
        let listed: Vec<_> = index.list(q).entries.iter().map(|e| e.id()).collect();
        assert_eq!(listed, records.iter().map(|r| r.id).collect::<Vec<_>>(), "in id order");
        let x = ListFilter { owner: Some("x".into()), ..Default::default() };
        let xs: Vec<_> = index.list(ListQuery { filter: &x, ..q }).entries.iter().map(|e| e.id()).collect();
        let want: Vec<_> = records.iter().filter(|r| &*r.owner == "x").map(|r| r.id).collect();
        assert_eq!(xs, want, "each owner's entries in id order");
        assert_eq!(index.get(newer.id).unwrap().record(), newer);
        assert_eq!(index.lookup(&newer.hash).unwrap().record(), newer, "the hot map agrees");
        for r in &records {
            assert_eq!(index.lookup(&r.hash).unwrap().id(), r.id);
        }
        // Arrivals after loading are numbered from the loaded count.
        assert_eq!(index.list(q).arrivals.seen, 50);
    }

    #[test]
    fn tokens_arriving_out_of_id_order_take_their_place_in_every_view() {
        let ids = IdGenerator::default();
        let records: Vec<_> = (0..8).map(|_| record(&ids, "o")).collect();
        let index = Index::default();
        for i in [0, 5, 7, 2, 1, 6, 3, 4] {
            index.apply(&[Change::Put(records[i].clone())]);
        }
        let o = ListFilter { owner: Some("o".into()), ..Default::default() };
        let q = ListQuery { filter: &o, after: Some(records[2].id), late_since: None, limit: 3, now: Time(2) };
        let page: Vec<_> = index.list(q).entries.iter().map(|e| e.id()).collect();
        assert_eq!(page, records[3..6].iter().map(|r| r.id).collect::<Vec<_>>());
        assert_eq!(index.newest_id(), Some(records[7].id));
        for r in &records {
            assert_eq!(index.get(r.id).unwrap().id(), r.id);
        }
    }

    #[test]
    fn owners_scopes_and_labels_are_shared_between_tokens() {
        let ids = IdGenerator::default();
        let index = Index::default();
        let mut a = record(&ids, "team");
        a.scopes = ["x".to_string(), "y".to_string()].into_iter().collect();
        a.labels = [("env".to_string(), "prod".to_string())].into_iter().collect();
        let mut b = record(&ids, "team");
        b.scopes = ["x".to_string(), "y".to_string()].into_iter().collect();
        b.labels = [("env".to_string(), "prod".to_string())].into_iter().collect();
        index.apply(&[Change::Put(a.clone()), Change::Put(b.clone())]);
        let (ea, eb) = (index.get(a.id).unwrap(), index.get(b.id).unwrap());
        assert!(Arc::ptr_eq(ea.owner(), eb.owner()));
        assert!(ea.scopes().shares_allocation(eb.scopes()));
        assert!(ea.labels().shares_allocation(eb.labels()));
        assert_eq!(eb.record(), b, "interning changes no value");
    }

    #[test]
    fn touch_queues_once_and_respects_granularity() {
        let (index, r, e) = index_of_one();
        index.touch(&e, Time(10_000_000_000));
        index.touch(&e, Time(10_500_000_000)); // within a second: not recorded
        assert_eq!(index.take_last_used(), vec![(r.id, Time(10_000_000_000))]);
        assert!(index.take_last_used().is_empty());
        index.touch(&e, Time(12_000_000_000));
        assert_eq!(index.take_last_used(), vec![(r.id, Time(12_000_000_000))]);
    }

    #[test]
    fn the_dirty_queue_keeps_its_capacity_across_passes() {
        let ids = IdGenerator::default();
        let index = Index::default();
        let records: Vec<_> = (0..1000).map(|_| record(&ids, "a")).collect();
        index.apply(&records.iter().cloned().map(Change::Put).collect::<Vec<_>>());
        for r in &records {
            index.touch(&index.lookup(&r.hash).unwrap(), Time(5_000_000_000));
        }
        assert_eq!(index.take_last_used().len(), 1000);
        // The next interval's uses must not regrow the queue inside `touch`.
        assert!(lock(&index.dirty).capacity() >= 1000);
    }

    /// Pages every matching token exactly once, following page tokens.
    fn page_through(index: &Index, q: ListQuery<'_>, between: impl Fn(usize)) -> Vec<TokenId> {
        let (mut seen, mut page) = (Vec::new(), index.list(q));
        for n in 1.. {
            seen.extend(page.entries.iter().map(|e| e.id()));
            between(n);
            let Some(after) = page.next_after else { return seen };
            page = index.list(ListQuery { after: Some(after), late_since: Some(page.arrivals), ..q });
        }
        unreachable!()
    }

    #[test]
    fn paging_skips_no_token_that_arrives_behind_the_cursor() {
        let ids = IdGenerator::default();
        let index = Index::default();
        let all: Vec<_> = (0..12).map(|_| record(&ids, "a")).collect();
        // Tokens 1, 2, 3 and 5 were minted early on another replica and reach
        // this one late, after the listing passed their ids.
        let late = [1, 2, 3, 5];
        let on_time: Vec<_> = (0..12).filter(|i| !late.contains(i)).map(|i| Change::Put(all[i].clone())).collect();
        index.apply(&on_time);
        let filter = ListFilter { owner: Some("a".into()), ..Default::default() };
        let q = ListQuery { filter: &filter, after: None, late_since: None, limit: 2, now: Time(2) };
        let seen = page_through(&index, q, |page| {
            if page == 2 {
                // After the second page (cursor past 6): all four arrive,
                // more than a page's worth.
                index.apply(&late.map(|i| Change::Put(all[i].clone())));
            }
        });
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "no token twice");
        assert_eq!(sorted, all.iter().map(|r| r.id).collect::<Vec<_>>(), "every token once");

        // A page token without arrival numbers (an earlier version, another
        // replica) cannot see them: the guarantee comes from the numbers.
        let p = index.list(ListQuery { after: Some(all[6].id), ..q });
        assert!(p.entries.iter().all(|e| e.id() > all[6].id));
    }

    #[test]
    fn list_pages_filters_and_counts() {
        let ids = IdGenerator::default();
        let index = Index::default();
        let mut all = Vec::new();
        for i in 0..10 {
            let mut r = record(&ids, if i % 2 == 0 { "even" } else { "odd" });
            if i % 3 == 0 {
                r.revoke_time = Some(Time(1));
            }
            all.push(r.clone());
            index.apply(&[Change::Put(r)]);
        }
        let everything = ListFilter::default();
        let q = ListQuery { filter: &everything, after: None, late_since: None, limit: 4, now: Time(2) };
        let p1 = index.list(q);
        assert_eq!(p1.entries.len(), 4);
        let p2 = index.list(ListQuery { after: p1.next_after, ..q });
        let p3 = index.list(ListQuery { after: p2.next_after, ..q });
        assert_eq!(p3.entries.len(), 2);
        assert!(p3.next_after.is_none());
        let seen: Vec<TokenId> = [p1, p2, p3].iter().flat_map(|p| p.entries.iter().map(|e| e.id())).collect();
        assert_eq!(seen, all.iter().map(|r| r.id).collect::<Vec<_>>());

        let filter = ListFilter { owner: Some("even".into()), status: Some(Status::Active), ..Default::default() };
        let even_active = index.list(ListQuery { filter: &filter, limit: 100, ..q });
        assert_eq!(even_active.entries.len(), 3); // 2, 4, 8
        assert_eq!(index.count_active("even", Time(2)), 3);
        assert_eq!(index.count_active("nobody", Time(2)), 0);
        assert_eq!(index.count_by_status(Time(2)), (6, 0, 4));
        // An exact final page has no next page.
        let exact = index.list(ListQuery { limit: 10, ..q });
        assert!(exact.next_after.is_none());
    }

    #[test]
    fn list_filters_by_name_prefix_last_use_and_expiry() {
        let ids = IdGenerator::default();
        let index = Index::default();
        let mut all = Vec::new();
        for i in 0..6 {
            let mut r = record(&ids, "o");
            r.name = if i < 3 { format!("ci-{i}") } else { format!("deploy-{i}") }.into();
            r.expire_time = (i % 2 == 0).then_some(Time(100 + i));
            index.apply(&[Change::Put(r.clone())]);
            all.push(r);
        }
        // Tokens 0 and 3 used at 10 s, token 1 at 50 s; the rest never.
        for (i, at) in [(0, 10), (3, 10), (1, 50)] {
            index.touch(&index.lookup(&all[i].hash).unwrap(), Time(at * 1_000_000_000));
        }
        let names = |filter: ListFilter| -> Vec<String> {
            let q = ListQuery { filter: &filter, after: None, late_since: None, limit: 1, now: Time(0) };
            page_through(&index, q, |_| {}).into_iter().map(|id| index.get(id).unwrap().name().to_owned()).collect()
        };
        let prefix = |p: &str| ListFilter { name_prefix: Some(p.into()), ..Default::default() };
        assert_eq!(names(prefix("ci-")), ["ci-0", "ci-1", "ci-2"]);
        assert_eq!(names(prefix("CI")), Vec::<String>::new());
        // Not used since 20 s: the never-used 2, 4, 5 and 0, 3 (used at 10 s).
        let stale = names(ListFilter { last_used_before: Some(Time(20_000_000_000)), ..Default::default() });
        assert_eq!(stale, ["ci-0", "ci-2", "deploy-3", "deploy-4", "deploy-5"]);
        // Expiring before 104: tokens 0 and 2 (never-expiring ones excluded).
        assert_eq!(names(ListFilter { expire_before: Some(Time(104)), ..Default::default() }), ["ci-0", "ci-2"]);
        // Combined with each other.
        let combined = ListFilter {
            last_used_before: Some(Time(20_000_000_000)),
            expire_before: Some(Time(1_000)),
            ..prefix("deploy-")
        };
        assert_eq!(names(combined), ["deploy-4"]);
    }
}
