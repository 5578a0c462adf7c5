//! The hot path: is this presented token valid, and for which scopes?
//!
//! parse → checksum → blake3 → one in-memory lookup → revocation, expiry
//! and scope checks → an O(1) last-used note. No I/O, no await, no lock
//! held beyond one shard's read lock for the lookup, and no allocation.

use std::sync::Arc;

use crate::{
    cidr::Client,
    clock::Clock,
    feed::Freshness,
    index::{Entry, Index},
    record::Status,
    token,
};

/// Why a token is or is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Valid, with every required scope.
    Ok,
    /// Not a well-formed token.
    Malformed,
    /// Well-formed, but unknown.
    Unknown,
    /// Past its expiry time.
    Expired,
    /// Revoked.
    Revoked,
    /// Valid but without a required scope.
    InsufficientScope,
    /// This replica cannot vouch for any answer: it has not confirmed it is
    /// current with a shared store for longer than `--max-staleness`, so a
    /// token revoked through another replica might still look valid here.
    Stale,
    /// Active, but its not-before has not come.
    NotYetValid,
    /// Active, but the client's address is outside its allowlist.
    IpNotAllowed,
}

/// The result of a verification: the outcome and, when the token is known,
/// its entry.
#[derive(Debug)]
pub struct Verdict {
    /// Why the token is or is not valid.
    pub outcome: Outcome,
    /// The matched token, if it is known.
    pub entry: Option<Arc<Entry>>,
}

impl Verdict {
    fn without_entry(outcome: Outcome) -> Verdict {
        Verdict { outcome, entry: None }
    }
}

/// Verifies tokens against the index.
pub struct Verifier {
    index: Arc<Index>,
    clock: Clock,
    /// With a shared store: how current the index is.
    freshness: Option<Arc<Freshness>>,
}

impl Verifier {
    /// A verifier over `index`, judging expiry by `clock`.
    pub fn new(index: Arc<Index>, clock: Clock) -> Verifier {
        Verifier { index, clock, freshness: None }
    }

    /// A verifier that answers [`Outcome::Stale`] while `freshness` says
    /// the index may be behind the shared store.
    pub fn with_freshness(index: Arc<Index>, clock: Clock, freshness: Arc<Freshness>) -> Verifier {
        Verifier { index, clock, freshness: Some(freshness) }
    }

    /// The index verified against.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Whether this replica cannot vouch for being current (see
    /// [`Outcome::Stale`]).
    #[inline]
    pub fn is_stale(&self) -> bool {
        self.freshness.as_ref().is_some_and(|f| f.is_stale())
    }

    /// Verifies `presented` (a bare token or a `Bearer …` header value)
    /// from an unknown address: a token with an IP allowlist is refused.
    #[inline]
    pub fn verify<S: AsRef<str>>(&self, presented: &str, required: &[S]) -> Verdict {
        self.verify_from(presented, required, Client::Unknown)
    }

    /// Verifies `presented` (a bare token or a `Bearer …` header value),
    /// presented by `client`, and checks that it grants every scope in
    /// `required`. A valid token's last-used time is updated.
    #[inline]
    pub fn verify_from<S: AsRef<str>>(&self, presented: &str, required: &[S], client: Client<'_>) -> Verdict {
        if self.is_stale() {
            return Verdict::without_entry(Outcome::Stale);
        }
        let Ok(text) = token::parse(presented) else {
            return Verdict::without_entry(Outcome::Malformed);
        };
        let Some(entry) = self.index.lookup(&token::hash_token(text)) else {
            return Verdict::without_entry(Outcome::Unknown);
        };
        let now = self.clock.now();
        let outcome = match entry.status_at(now) {
            Status::Revoked => Outcome::Revoked,
            Status::Expired => Outcome::Expired,
            Status::Active if !entry.has_started(now) => Outcome::NotYetValid,
            Status::Active if !entry.allowed_cidrs().allows(client) => Outcome::IpNotAllowed,
            Status::Active if !entry.has_scopes(required) => Outcome::InsufficientScope,
            Status::Active => {
                self.index.touch(&entry, now);
                Outcome::Ok
            }
        };
        Verdict { outcome, entry: Some(entry) }
    }

    /// Notes a use of each token in `hashes` that is known and active now,
    /// as a valid Verify would (a sibling verified it from its cache);
    /// returns how many were noted.
    pub fn record_use(&self, hashes: impl IntoIterator<Item = token::TokenHash>) -> usize {
        let now = self.clock.now();
        let mut recorded = 0;
        for hash in hashes {
            // A sibling checks neither not-before nor addresses locally (its
            // cache holds only tokens that verified from anywhere), so an
            // active token is all this needs.
            if let Some(entry) = self.index.lookup(&hash)
                && entry.status_at(now) == Status::Active
            {
                self.index.touch(&entry, now);
                recorded += 1;
            }
        }
        recorded
    }
}
