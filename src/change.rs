//! [`Change`]: what happens to the token set, in the domain's words.
//!
//! The registry produces changes, a store makes them durable, and the index
//! applies them, whether they were made by this process or, with a shared
//! store, arrive from another replica through its change feed.

use crate::record::TokenRecord;

/// A change to the token set, as stored and as applied to the index.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(clippy::large_enum_variant, reason = "nearly every change is a Put; boxing it would only add an allocation")]
pub enum Change {
    /// Create or replace a token's record.
    Put(TokenRecord),
    /// Record that the first admin token was created, so a restart never
    /// creates another (the operator may have revoked it on purpose).
    Bootstrapped,
}
