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
pub mod postgres;
mod sled;

use std::path::PathBuf;

pub use self::{
    postgres::{PostgresOptions, PostgresStore},
    sled::{SledOptions, SledStore},
};
use crate::{change::Change, clock::Time, id::TokenId, record::TokenRecord};

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
}

/// A durable home for the token set.
pub trait Store: Send + Sync + 'static {
    /// Reads everything (start-up; blocking): calls `each` with every record,
    /// in id order, and its persisted last-used time, streaming rather than
    /// collecting a million records first. Returns whether the first admin
    /// token was ever created.
    fn load(&self, each: &mut dyn FnMut(TokenRecord, Option<Time>)) -> Result<bool, StoreError>;
    /// Applies `changes` atomically: after a crash, all or none are present.
    /// Not yet durable; see [`Store::flush`].
    fn apply(&self, changes: &[Change]) -> Result<(), StoreError>;
    /// Stores last-used times (not yet durable).
    fn record_last_used(&self, times: &[(TokenId, Time)]) -> Result<(), StoreError>;
    /// Makes everything applied so far durable. Blocking.
    fn flush(&self) -> Result<(), StoreError>;
}
