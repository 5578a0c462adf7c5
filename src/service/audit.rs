//! The admin plane's side of the audit trail: what a refused call was
//! about (so its event names the token and owner), and ListAuditEvents.

use std::net::IpAddr;

use tonic::{Code, Status};

use crate::{
    access::Actor,
    audit::{self, Draft},
    error::Error,
    id::TokenId,
    pb,
    registry::Registry,
    service::{
        admin::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE},
        convert,
    },
};

/// Longest refusal message kept in an event's details.
const MAX_MESSAGE_BYTES: usize = 512;

/// Whether a refusal with `code` is audited: the caller asked for what it
/// may not have or what does not fit. The server's own trouble
/// (UNAVAILABLE, INTERNAL, a deadline) is not the caller's act.
pub fn is_audited(code: Code) -> bool {
    matches!(
        code,
        Code::PermissionDenied
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::InvalidArgument
    )
}

/// What a call names: a token id (if well-formed) and an owner.
#[derive(Debug, Clone, Default)]
pub struct Target {
    id: Option<TokenId>,
    owner: String,
}

impl Target {
    /// The event of a refused call about this target. A token that exists
    /// is recorded with its own owner (so that owner's auditors see who
    /// tried to reach it), whatever the caller was allowed to learn.
    pub fn draft(
        self,
        registry: &Registry,
        action: &'static str,
        actor: TokenId,
        peer: Option<IpAddr>,
        code: &'static str,
        message: &str,
    ) -> Draft {
        let owner =
            self.id.and_then(|id| registry.index().get(id)).map_or(self.owner, |entry| entry.owner().to_string());
        let mut end = message.len().min(MAX_MESSAGE_BYTES);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        Draft { target_id: self.id, code, ..Draft::ok(registry.now(), action, Some((actor, peer)), &owner) }
            .with("message", &message[..end])
    }
}

/// A request that names what it acts on.
pub trait Subject {
    /// The token and owner this request names.
    fn subject(&self) -> Target;
}

fn id(text: &str) -> Option<TokenId> {
    text.parse().ok()
}

impl Subject for pb::IssueRequest {
    fn subject(&self) -> Target {
        Target { id: None, owner: self.owner.clone() }
    }
}

impl Subject for pb::GetRequest {
    fn subject(&self) -> Target {
        Target { id: id(&self.id), owner: String::new() }
    }
}

impl Subject for pb::ListRequest {
    fn subject(&self) -> Target {
        Target { id: None, owner: self.owner.clone() }
    }
}

impl Subject for pb::RevokeRequest {
    fn subject(&self) -> Target {
        Target { id: id(&self.id), owner: String::new() }
    }
}

impl Subject for pb::RotateRequest {
    fn subject(&self) -> Target {
        Target { id: id(&self.id), owner: String::new() }
    }
}

impl Subject for pb::UpdateRequest {
    fn subject(&self) -> Target {
        Target { id: self.token.as_ref().and_then(|t| id(&t.id)), owner: String::new() }
    }
}

impl Subject for pb::ListAuditEventsRequest {
    fn subject(&self) -> Target {
        Target { id: id(&self.target_id), owner: String::new() }
    }
}

/// ListAuditEvents: a page of events the caller may see, in sequence order.
pub async fn list_events(
    registry: &std::sync::Arc<Registry>,
    actor: Actor,
    req: pb::ListAuditEventsRequest,
) -> Result<pb::ListAuditEventsResponse, Status> {
    let optional_id = |field: &str, text: &str| (!text.is_empty()).then(|| convert::token_id(field, text)).transpose();
    let filter = audit::Filter {
        target_id: optional_id("target_id", &req.target_id)?,
        actor_id: optional_id("actor_id", &req.actor_id)?,
        since: req.since.map(|t| convert::time("since", &t)).transpose()?,
        owners: actor.access.read.owners().map(|owners| owners.iter().map(|o| o.to_string()).collect()),
    };
    let limit = match usize::try_from(req.page_size) {
        Ok(0) => DEFAULT_PAGE_SIZE,
        Ok(n) if n <= MAX_PAGE_SIZE => n,
        _ => return Err(Error::invalid("page_size", format!("must be 0-{MAX_PAGE_SIZE}")).into()),
    };
    let after = decode_page_token(&req.page_token)?;
    let page = registry.audit_page(filter, after, limit).await?;
    Ok(pb::ListAuditEventsResponse {
        events: page.events,
        next_page_token: page.next_after.map(encode_page_token).unwrap_or_default(),
    })
}

/// An audit page token: `a` and the last sequence number looked at.
fn encode_page_token(after: u64) -> String {
    format!("a{after}")
}

fn decode_page_token(s: &str) -> Result<u64, Error> {
    if s.is_empty() {
        return Ok(0);
    }
    s.strip_prefix('a')
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::invalid("page_token", "not a page token returned by ListAuditEvents"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        for after in [1, 42, u64::MAX] {
            assert_eq!(decode_page_token(&encode_page_token(after)).unwrap(), after);
        }
        assert_eq!(decode_page_token("").unwrap(), 0);
        for bad in ["1", "a", "a-1", "a+1", "ax", "a99999999999999999999999", "b1"] {
            assert!(matches!(decode_page_token(bad), Err(Error::InvalidArgument { .. })), "{bad}");
        }
    }

    #[test]
    fn only_the_callers_doing_is_audited() {
        for code in [Code::PermissionDenied, Code::NotFound, Code::FailedPrecondition, Code::ResourceExhausted] {
            assert!(is_audited(code));
        }
        for code in [Code::Ok, Code::Unauthenticated, Code::Unavailable, Code::Internal, Code::DeadlineExceeded] {
            assert!(!is_audited(code));
        }
    }

    #[test]
    fn an_event_read_back_encodes_as_it_was_hashed() {
        let draft = Draft::ok(crate::clock::Time(1_000_000_123), "update", None, "team-a")
            .with("name", "x")
            .with("labels.z", "1")
            .with("expire_time", "2026-11-22T00:00:00Z");
        let sealed = audit::Head::EMPTY.seal(&draft);
        // What a client decodes and re-encodes (details in key order, from
        // any map order) is what was hashed: the chain checks out.
        let stored = prost::Message::encode_to_vec(&sealed);
        let shown = <pb::AuditEvent as prost::Message>::decode(&stored[..]).unwrap();
        assert_eq!(prost::Message::encode_to_vec(&shown), stored);
        assert_eq!(shown.expected_hash(&[0; 32]).to_vec(), shown.hash);
    }
}
