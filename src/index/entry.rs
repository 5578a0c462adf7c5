//! One token in memory, packed.
//!
//! Every replica holds every token, so an entry's size is multiplied by the
//! token count and again by the replica count. A [`TokenRecord`] is the
//! convenient shape for code that changes tokens (options, a `Box<str>` per
//! text, a `Duration`); an [`Entry`] is the compact shape the index keeps:
//!
//! * times as plain `i64`s with one value meaning "none" (an `Option<Time>`
//!   takes 16 bytes, this 8);
//! * the hint and the name in one allocation (two small allocations cost
//!   about 64 bytes with their allocator headers, one about 48);
//! * what only a rotated or revoked-with-a-reason token has (successor,
//!   predecessor, reason) behind one pointer that is null for the others;
//! * owner, scopes, labels and allowlist shared between entries (see
//!   `intern`).
//!
//! Verify reads only the hot fields, through accessors; admin paths that
//! need the whole record rebuild a [`TokenRecord`] with [`Entry::record`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use crate::{
    cidr::Allowlist,
    clock::Time,
    id::TokenId,
    record::{Labels, Scopes, Status, TokenRecord},
    token::TokenHash,
};

/// An optional time in 8 bytes: `i64::MIN` (a nanosecond in 1677, never a
/// time a request can name: see `service::convert::time`) means "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MaybeTime(i64);

impl MaybeTime {
    const NONE: i64 = i64::MIN;

    fn new(t: Option<Time>) -> MaybeTime {
        // A stored `Some(Time(i64::MIN))` cannot come from a request; were
        // one ever read, it stays a time (one nanosecond later), never
        // "none", which would turn a revocation or an expiry off.
        MaybeTime(t.map_or(Self::NONE, |t| t.0.max(Self::NONE + 1)))
    }

    #[inline]
    fn get(self) -> Option<Time> {
        (self.0 != Self::NONE).then_some(Time(self.0))
    }
}

/// What few tokens have: kept out of line so the others pay one null
/// pointer for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rare {
    revoke_reason: Box<str>,
    rotated_from: Option<TokenId>,
    rotated_to: Option<TokenId>,
}

/// One token in memory: the record, packed, and its last-used time.
///
/// Entries are immutable apart from the last-used time: a change replaces
/// the entry.
///
/// In declaration order (`repr(C)`): what every verification reads first,
/// right behind the `Arc`'s counts, so that at ten million tokens a lookup
/// touches as few cache lines as it can; then what Verify's reply reads;
/// then what only admin calls read.
#[derive(Debug)]
#[repr(C)]
pub struct Entry {
    hash: TokenHash,
    revoke_time: MaybeTime,
    expire_time: MaybeTime,
    not_before: MaybeTime,
    /// Last successful verification, nanoseconds since the epoch; 0 = never.
    pub(super) last_used: AtomicI64,
    scopes: Scopes,
    allowed_cidrs: Allowlist,
    id: TokenId,
    owner: Arc<str>,
    labels: Labels,
    /// Set while the entry waits in the dirty list, so it is queued once per
    /// persistence interval however often it is used.
    pub(super) dirty: AtomicBool,
    /// Bytes of `text` that are the hint (at most 28: a 16-byte prefix,
    /// the separator, eight characters and the ellipsis).
    hint_len: u8,
    /// The hint, then the name.
    text: Box<str>,
    create_time: Time,
    update_time: Time,
    /// The TTL in nanoseconds; `u64::MAX` = none. TTLs are at most 100
    /// years (`spec::MAX_DURATION`), far below 2^64 ns (584 years).
    ttl_nanos: u64,
    version: u64,
    rare: Option<Box<Rare>>,
}

impl Entry {
    /// Packs `record`, last used at `last_used`. Its owner, scopes, labels
    /// and allowlist are kept as they are: the index's interner (or, at
    /// start-up, the store's decoder) has made them the shared copies.
    pub fn new(record: TokenRecord, last_used: Option<Time>) -> Entry {
        let TokenRecord {
            id,
            hash,
            hint,
            name,
            owner,
            scopes,
            labels,
            create_time,
            ttl,
            expire_time,
            not_before,
            allowed_cidrs,
            update_time,
            revoke_time,
            revoke_reason,
            rotated_from,
            rotated_to,
            version,
        } = record;
        // tokend's hints (`token::hint`) are at most 28 bytes; a longer one
        // was not written by tokend and keeps its first 255 bytes (to a
        // character boundary), the most `hint_len` counts.
        let hint_len = (0..=hint.len().min(usize::from(u8::MAX))).rev().find(|&i| hint.is_char_boundary(i));
        let hint_len = hint_len.unwrap_or(0);
        let text = [&hint[..hint_len], &*name].concat().into_boxed_str();
        let rare = (!revoke_reason.is_empty() || rotated_from.is_some() || rotated_to.is_some())
            .then(|| Box::new(Rare { revoke_reason, rotated_from, rotated_to }));
        Entry {
            hash,
            id,
            owner,
            scopes,
            labels,
            allowed_cidrs,
            text,
            create_time,
            update_time,
            expire_time: MaybeTime::new(expire_time),
            not_before: MaybeTime::new(not_before),
            revoke_time: MaybeTime::new(revoke_time),
            ttl_nanos: ttl.map_or(u64::MAX, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)),
            version,
            rare,
            last_used: AtomicI64::new(last_used.map_or(0, Time::as_nanos)),
            hint_len: hint_len as u8,
            dirty: AtomicBool::new(false),
        }
    }

    /// An entry outside any index, never used.
    #[cfg(test)]
    pub fn for_test(record: TokenRecord) -> Entry {
        Entry::new(record, None)
    }

    /// The whole record, unpacked (admin paths: a change starts from it).
    pub fn record(&self) -> TokenRecord {
        let rare = self.rare.as_deref();
        TokenRecord {
            id: self.id,
            hash: self.hash,
            hint: self.hint().into(),
            name: self.name().into(),
            owner: self.owner.clone(),
            scopes: self.scopes.clone(),
            labels: self.labels.clone(),
            create_time: self.create_time,
            ttl: self.ttl(),
            expire_time: self.expire_time(),
            not_before: self.not_before(),
            allowed_cidrs: self.allowed_cidrs.clone(),
            update_time: self.update_time,
            revoke_time: self.revoke_time(),
            revoke_reason: rare.map_or_else(Box::default, |r| r.revoke_reason.clone()),
            rotated_from: self.rotated_from(),
            rotated_to: self.rotated_to(),
            version: self.version,
        }
    }

    /// blake3 of the token.
    #[inline]
    pub fn hash(&self) -> &TokenHash {
        &self.hash
    }

    /// The token's id.
    #[inline]
    pub fn id(&self) -> TokenId {
        self.id
    }

    /// The owner (shared with the owner's other entries).
    #[inline]
    pub fn owner(&self) -> &Arc<str> {
        &self.owner
    }

    /// The granted scopes.
    #[inline]
    pub fn scopes(&self) -> &Scopes {
        &self.scopes
    }

    /// The labels.
    #[inline]
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// The networks the token may be presented from; empty = anywhere.
    #[inline]
    pub fn allowed_cidrs(&self) -> &Allowlist {
        &self.allowed_cidrs
    }

    /// The masked hint.
    pub fn hint(&self) -> &str {
        &self.text[..usize::from(self.hint_len)]
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.text[usize::from(self.hint_len)..]
    }

    /// When the token was created.
    pub fn create_time(&self) -> Time {
        self.create_time
    }

    /// When the token was last changed.
    pub fn update_time(&self) -> Time {
        self.update_time
    }

    /// When it stops verifying; `None` = never.
    #[inline]
    pub fn expire_time(&self) -> Option<Time> {
        self.expire_time.get()
    }

    /// Before this it does not verify yet.
    pub fn not_before(&self) -> Option<Time> {
        self.not_before.get()
    }

    /// When it was revoked, if it was.
    pub fn revoke_time(&self) -> Option<Time> {
        self.revoke_time.get()
    }

    /// Why it was revoked ("" if not, or if no reason was given).
    pub fn revoke_reason(&self) -> &str {
        self.rare.as_deref().map_or("", |r| &r.revoke_reason)
    }

    /// The TTL it was issued with.
    pub fn ttl(&self) -> Option<Duration> {
        (self.ttl_nanos != u64::MAX).then(|| Duration::from_nanos(self.ttl_nanos))
    }

    /// The token this one replaced by rotation.
    pub fn rotated_from(&self) -> Option<TokenId> {
        self.rare.as_deref().and_then(|r| r.rotated_from)
    }

    /// The token that replaced this one by rotation.
    pub fn rotated_to(&self) -> Option<TokenId> {
        self.rare.as_deref().and_then(|r| r.rotated_to)
    }

    /// How many times the record was written.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The status at `now` (the rule of [`TokenRecord::status_at`]).
    #[inline]
    pub fn status_at(&self, now: Time) -> Status {
        Status::of(self.revoke_time().is_some(), self.expire_time(), now)
    }

    /// Whether the token has come into force at `now`.
    #[inline]
    pub fn has_started(&self, now: Time) -> bool {
        self.not_before.get().is_none_or(|t| t <= now)
    }

    /// Whether the token grants every scope in `required`.
    #[inline]
    pub fn has_scopes<S: AsRef<str>>(&self, required: &[S]) -> bool {
        self.scopes.contains_all(required)
    }

    /// When the token last verified successfully.
    pub fn last_used(&self) -> Option<Time> {
        match self.last_used.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Time(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cidr::Cidr, id::IdGenerator, token::Secret};

    fn record() -> TokenRecord {
        let ids = IdGenerator::default();
        let mut r = crate::record::sample(ids.next(Time(1_000_000_000)), &Secret::generate("tk"), "team");
        r.name = "a name of twenty ch.".into();
        r.scopes = ["orders:read".to_string(), "orders:write".to_string()].into_iter().collect();
        r.labels = [("env".to_string(), "prod".to_string())].into_iter().collect();
        r
    }

    #[test]
    fn a_record_packs_and_unpacks_unchanged() {
        let ids = IdGenerator::default();
        let plain = record();
        let mut full = record();
        full.ttl = Some(Duration::new(86_400, 5));
        full.expire_time = Some(Time(-5));
        full.not_before = Some(Time(i64::MAX));
        full.revoke_time = Some(Time(0));
        full.revoke_reason = "leaked in a log".into();
        full.rotated_from = Some(ids.next(Time(1)));
        full.rotated_to = Some(ids.next(Time(2)));
        full.allowed_cidrs = Allowlist::new(["10.0.0.0/8".parse::<Cidr>().unwrap()]);
        full.version = 7;
        full.update_time = Time(99);
        let mut unicode = record();
        unicode.name = "naïve ✓".into();
        unicode.hint = "ƛ_abcd…wxyz".into();
        let mut rotated_only = record();
        rotated_only.rotated_to = Some(ids.next(Time(3)));
        for r in [plain, full, unicode, rotated_only] {
            let e = Entry::for_test(r.clone());
            assert_eq!(e.record(), r);
            assert_eq!((e.hint(), e.name()), (&*r.hint, &*r.name));
            assert_eq!(e.status_at(Time(1)), r.status_at(Time(1)));
            assert_eq!(e.has_started(Time(1)), r.has_started(Time(1)));
        }
    }

    #[test]
    fn a_hint_longer_than_tokend_makes_is_cut_at_a_character_boundary() {
        let mut r = record();
        r.hint = "é".repeat(200).into(); // 400 bytes, two per character
        let e = Entry::for_test(r.clone());
        assert_eq!(e.hint(), "é".repeat(127), "254 bytes: the longest whole-character cut under 256");
        assert_eq!(e.name(), &*r.name, "the name is whole");
    }

    #[test]
    fn the_earliest_time_stays_a_time() {
        let mut r = record();
        r.revoke_time = Some(Time(i64::MIN));
        r.expire_time = Some(Time(i64::MIN));
        let e = Entry::for_test(r);
        assert_eq!(e.status_at(Time(0)), Status::Revoked, "never un-revoked by packing");
        assert_eq!(e.expire_time(), Some(Time(i64::MIN + 1)));
    }

    #[test]
    fn an_entry_stays_small() {
        // What the 10M-token figure in the README rests on: keep it from
        // growing unnoticed (the record it replaced took 288 bytes).
        assert!(std::mem::size_of::<Entry>() <= 208, "{} bytes", std::mem::size_of::<Entry>());
        let e = Entry::for_test(record());
        assert!(e.rare.is_none(), "an active token has nothing out of line");
    }
}
