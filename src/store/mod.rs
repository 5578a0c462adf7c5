//! Durable storage of tokens: the [`Store`] trait, and one backend per file.
//!
//! [`Store`] is deliberately small and synchronous: apply a batch of changes
//! atomically, make everything applied so far durable, load everything back.
//! Group commit (many writers sharing one flush) lives above it in
//! `commit`, and the registry calls it from the blocking pool, never from an
//! async worker. The registry and the index do not know which backend they
//! run on; they speak [`Change`], the domain's vocabulary.
//!
//! Backends: `sled.rs` (embedded, the default) and `postgres/` (shared by
//! several replicas).

mod codec;
mod fsync;
pub mod postgres;
mod sled;

use std::path::PathBuf;

pub use self::{
    codec::Decoder,
    postgres::{PostgresOptions, PostgresStore},
    sled::{SledOptions, SledStore},
};
use crate::{audit, change::Change, clock::Time, id::TokenId, record::TokenRecord};

/// Why the store failed. Messages name paths and keys, never secrets (the
/// store holds none).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be opened (missing permissions, locked by
    /// another process, corrupt).
    #[error("cannot open the token store at {path}: {message}")]
    Open { path: PathBuf, message: String },
    /// A read, write or flush failed.
    #[error("token store I/O failed: {0}")]
    Io(String),
    /// A stored record could not be decoded.
    #[error("corrupt token record under key {key}: {message}")]
    Corrupt { key: String, message: String },
    /// The store was closed (shutdown).
    #[error("the token store is closed")]
    Closed,
    /// A database store could not be used at start-up. `target` names it
    /// without its password.
    #[error("cannot use the PostgreSQL store {target}: {message}")]
    Connect { target: String, message: String },
    /// The database could not be reached, or did not answer in time.
    #[error("the token store is unavailable: {0}")]
    Unavailable(String),
    /// Another writer changed the token since the version a change was
    /// derived from (a shared store only): the caller's view was stale.
    #[error("token {id} was changed by another replica")]
    Conflict { id: TokenId },
    /// The owner's quota, decided by the store (see [`OwnerQuota`]).
    #[error("owner already has {limit} active tokens")]
    QuotaExceeded { limit: u32 },
    /// Another writer created the first admin token first.
    #[error("the first admin token was already created")]
    AlreadyBootstrapped,
}

/// "At most `limit` active tokens for `owner`", checked by [`Store::apply`]
/// against the store itself when several replicas write.
#[derive(Debug, Clone, Copy)]
pub struct OwnerQuota<'a> {
    /// The owner of the token being issued.
    pub owner: &'a str,
    /// Most active tokens the owner may hold, the new one included.
    pub limit: u32,
    /// When "active" is judged.
    pub now: Time,
}

/// Most events one [`Store::seal_pending`] seals.
pub const SEAL_BATCH: usize = 1000;

/// A durable home for the token set.
pub trait Store: Send + Sync + 'static {
    /// Reads everything (start-up; blocking): calls `each` with every record,
    /// in id order, decoded by `decoder` (which shares what records repeat),
    /// and its persisted last-used time, streaming rather than collecting a
    /// million records first. Returns whether the first admin token was ever
    /// created.
    fn load(&self, decoder: &mut Decoder, each: &mut dyn FnMut(TokenRecord, Option<Time>)) -> Result<bool, StoreError>;
    /// About how many records [`Store::load`] will read, if the store can
    /// tell cheaply (for start-up progress; may be off, or stale).
    fn size_hint(&self) -> Option<u64> {
        None
    }
    /// Notes how many records a load read, for the next start's
    /// [`Store::size_hint`] where the store cannot count cheaply. Not
    /// durable by itself.
    fn note_size(&self, _records: u64) -> Result<(), StoreError> {
        Ok(())
    }
    /// Applies `changes` and appends `audit` atomically: after a crash, all
    /// or none are present. Not yet durable; see [`Store::flush`]. The event
    /// is sealed — numbered and chained after the store's last one, one
    /// chain per store whichever writer appends — and returned, or, where
    /// [`Store::seals_audit_later`], kept unsealed for
    /// [`Store::seal_pending`].
    ///
    /// A store shared by several writers also checks, in the same
    /// transaction, what one writer's registry decides from its index: each
    /// `Put` is written only over the version it was derived from
    /// ([`StoreError::Conflict`] otherwise), `Bootstrapped` only once
    /// ([`StoreError::AlreadyBootstrapped`]), and `quota` if given
    /// ([`StoreError::QuotaExceeded`]). A store with one writer may rely on
    /// the registry's lock and ignore them.
    fn apply(
        &self,
        changes: &[Change],
        audit: Option<&audit::Draft>,
        quota: Option<OwnerQuota<'_>>,
    ) -> Result<Option<audit::Event>, StoreError>;
    /// Whether [`Store::apply`] keeps audit events unsealed, for
    /// [`Store::seal_pending`] to chain afterwards (and returns none).
    fn seals_audit_later(&self) -> bool {
        false
    }
    /// Seals (numbers and chains) up to [`SEAL_BATCH`] unsealed audit
    /// events, oldest first, and returns them. Blocking.
    fn seal_pending(&self) -> Result<Vec<audit::Event>, StoreError> {
        Ok(Vec::new())
    }
    /// Audit events after sequence number `after` that pass `filter`, at
    /// most `limit` of them, in sequence order. A page may stop short of
    /// `limit` after looking at many events that did not pass (then
    /// `next_after` says where to go on).
    fn audit_page(&self, filter: &audit::Filter, after: u64, limit: usize) -> Result<audit::Page, StoreError>;
    /// Stored audit events after `after`, at most `limit`, as their stored
    /// bytes keyed by the position they are stored at — undecoded, for
    /// `tokend audit verify` to judge.
    fn audit_raw(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// The stored record of `id` (to refresh a stale index after a conflict).
    fn fetch(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError>;
    /// Whether [`Store::apply`] decides versions, quota and bootstrap itself
    /// (a store shared by several writers). If not, the registry serialises
    /// its writers and decides them from the index.
    fn decides_rules(&self) -> bool {
        false
    }
    /// Whether [`Store::apply`] and [`Store::record_last_used`] are durable
    /// when they return (they commit), so writers need not wait for a
    /// [`Store::flush`].
    fn writes_are_durable(&self) -> bool {
        false
    }
    /// Stores last-used times (not yet durable).
    fn record_last_used(&self, times: &[(TokenId, Time)]) -> Result<(), StoreError>;
    /// Makes everything applied so far durable. Blocking.
    fn flush(&self) -> Result<(), StoreError>;
}
