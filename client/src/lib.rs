//! tokend's client for sibling services: verify API tokens in memory, in
//! about a microsecond, and still reject a revoked token within
//! milliseconds.
//!
//! * [`CachedVerifier`] answers like `VerifyService.Verify` (its `verify`
//!   is a drop-in for the generated stub's) but caches valid answers, keyed
//!   by the token's blake3 hash. tokend pushes every change that could make
//!   a cached answer wrong through `VerifyService.Watch`; when the stream
//!   has been silent for longer than [`CacheOptions::max_staleness`], every
//!   call goes to the RPC instead. Cached uses are reported back with
//!   `RecordUse`, so tokens' `last_used_time` stays true.
//! * [`RequireToken`] is a tower layer that protects a tonic or hyper/axum
//!   service with it.
//! * [`pb`] holds the generated types and stubs (re-exported at the root).
//!
//! Layout: [`format`] (the token format, hashing and scope rules, shared
//! with tokend itself), `cache`
//! (the bounded cache and the race rule), `watch` (following the stream),
//! `usage` (RecordUse batches), `verifier` (the public API), `layer`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The types and client stubs generated from tokend's `proto/`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("tokend.v1");
}

mod cache;
mod error;
pub mod format;
mod layer;
mod usage;
mod verifier;
mod watch;

pub use error::Error;
pub use layer::{RequireToken, RequireTokenService};
pub use pb::*;
pub use verifier::{CacheOptions, CacheStats, CachedVerifier};
