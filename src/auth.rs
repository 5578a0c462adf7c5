//! Admin authentication for TokenService, and the client-side bearer header.
//!
//! The caller presents `authorization: Bearer <token>`; the token must verify
//! (through the same hot path sibling services use) and carry a reserved
//! scope allowing the call (see `access`). The caller's identity and access
//! are returned for the access checks and the audit trail. Refusals are
//! logged with the reason and, when the token is known, its id — never the
//! presented value.
//!
//! It runs at the start of each admin handler rather than as an interceptor,
//! so a refusal is counted in the metrics under the RPC it refused (an
//! interceptor does not see the method).

use std::{net::IpAddr, sync::Arc};

use tonic::{Code, Request, Status, metadata::MetadataMap, service::Interceptor};

use crate::{
    access::{Access, Actor},
    cidr::Client,
    id::TokenId,
    verify::{Outcome, Verifier},
};

/// What a call needs of the caller's access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Get, List, ListAuditEvents.
    Read,
    /// Issue, Revoke, Rotate, Update.
    Write,
}

/// A refused call.
#[derive(Debug)]
pub struct Refused {
    /// The answer.
    pub status: Status,
    /// The presented token, when it verified but may not make the call (or
    /// not from this address): its holder is accountable, so the refusal is
    /// audited. `None` for an unauthenticated caller.
    pub actor: Option<TokenId>,
}

/// Authenticates admin calls.
#[derive(Clone)]
pub struct AdminAuth {
    verifier: Arc<Verifier>,
}

impl AdminAuth {
    /// Authenticates admins with `verifier`.
    pub fn new(verifier: Arc<Verifier>) -> AdminAuth {
        AdminAuth { verifier }
    }
}

impl AdminAuth {
    /// The caller presenting `metadata`'s authorization header, if its
    /// token allows a call that `needs` this, or the UNAUTHENTICATED /
    /// PERMISSION_DENIED refusal to answer with. `peer` is the caller's
    /// address: an admin token with an IP allowlist works only from inside
    /// it.
    pub fn authenticate(&self, metadata: &MetadataMap, peer: Option<IpAddr>, needs: Need) -> Result<Actor, Refused> {
        let anonymous = |status| Refused { status, actor: None };
        let Some(value) = metadata.get("authorization") else {
            tracing::warn!(reason = "missing", "admin call refused");
            return Err(anonymous(Status::unauthenticated(
                "missing authorization metadata (expected \"Bearer <admin token>\")",
            )));
        };
        let Ok(value) = value.to_str() else {
            tracing::warn!(reason = "not_ascii", "admin call refused");
            return Err(anonymous(Status::unauthenticated("authorization metadata is not valid ASCII")));
        };
        let verdict = self.verifier.verify_from::<&str>(value, &[], peer.map_or(Client::Unknown, Client::Peer));
        let token_id = verdict.entry.as_ref().map(|e| e.id());
        let access = match (&verdict.outcome, &verdict.entry) {
            (Outcome::Ok, Some(entry)) => Access::of_scopes(entry.scopes().iter()),
            _ => Access::default(),
        };
        let (code, reason, message) = match (verdict.outcome, token_id) {
            // No scope is required of the verifier, so InsufficientScope does
            // not come; were it to, it would mean the same as no access.
            (Outcome::Ok | Outcome::InsufficientScope, Some(token_id)) => match access {
                access if access.is_none() => (
                    Code::PermissionDenied,
                    "insufficient_scope",
                    "admin calls need a token with a tokend.admin or tokend.read scope",
                ),
                access if needs == Need::Write && access.write.is_nothing() => (
                    Code::PermissionDenied,
                    "read_only",
                    "this call needs a token with a tokend.admin scope (tokend.read only reads)",
                ),
                access => return Ok(Actor { token_id, access, peer }),
            },
            (Outcome::Expired, _) => (Code::Unauthenticated, "expired", "admin token has expired"),
            (Outcome::Stale, _) => {
                (Code::Unavailable, "stale", "this replica is not current with the token store; try another")
            }
            (Outcome::Revoked, _) => (Code::Unauthenticated, "revoked", "admin token was revoked"),
            (Outcome::NotYetValid, _) => (Code::Unauthenticated, "not_yet_valid", "admin token is not valid yet"),
            (Outcome::IpNotAllowed, _) => {
                (Code::PermissionDenied, "ip_not_allowed", "admin token may not be used from this address")
            }
            (Outcome::Unknown, _) => (Code::Unauthenticated, "unknown", "admin token is unknown"),
            // (Ok and InsufficientScope always come with their entry.)
            (Outcome::Malformed | Outcome::Ok | Outcome::InsufficientScope, _) => {
                (Code::Unauthenticated, "malformed", "admin token is malformed")
            }
        };
        match token_id {
            Some(id) => tracing::warn!(reason, token_id = %id, "admin call refused"),
            None => tracing::warn!(reason, "admin call refused"),
        }
        // Accountable: the token verified, from here or elsewhere.
        let actor = token_id.filter(|_| code == Code::PermissionDenied);
        Err(Refused { status: Status::new(code, message), actor })
    }
}

/// Client side: adds `authorization: Bearer <token>` to every call (the
/// load generator and the admin CLI). The header is marked sensitive so
/// HTTP/2 never puts it in a compression table, and `Debug` redacts it.
#[derive(Clone)]
pub struct BearerToken(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl BearerToken {
    /// An interceptor presenting `token`. Fails if the token is not a valid
    /// header value (it cannot be a token then either).
    pub fn new(token: &str) -> Result<BearerToken, tonic::metadata::errors::InvalidMetadataValue> {
        let mut value: tonic::metadata::MetadataValue<_> = format!("Bearer {}", token.trim()).parse()?;
        value.set_sensitive(true);
        Ok(BearerToken(value))
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}
