//! The domain's error type. The gRPC layer maps it to `tonic::Status` in one
//! place (`service::status`); messages never carry secrets or storage
//! internals.

use crate::{id::TokenId, store::StoreError};

/// Why an operation on tokens failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is out of bounds; `field` names it as the caller wrote
    /// it (`name`, `scopes[3]`, `labels["team"]`, `ttl`).
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// No token has this id.
    #[error("token {0} not found")]
    NotFound(TokenId),
    /// The token is not in a state that allows the operation.
    #[error("token {id} {why}")]
    FailedPrecondition { id: TokenId, why: &'static str },
    /// The caller's admin token does not allow this (see `access`).
    #[error("{0}")]
    PermissionDenied(String),
    /// The owner already holds the maximum number of active tokens.
    #[error("owner already has {limit} active tokens (--max-tokens-per-owner)")]
    QuotaExceeded { limit: u32 },
    /// The store failed; the detail is logged, not returned.
    #[error("storage error")]
    Store(#[from] StoreError),
    /// The server is shutting down and accepts no more writes.
    #[error("tokend is shutting down")]
    ShuttingDown,
}

impl Error {
    /// An [`Error::InvalidArgument`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidArgument { field: field.into(), reason: reason.into() }
    }
}
