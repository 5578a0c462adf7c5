//! `tokend.v1.TokenService`: the admin plane's gRPC adapter.
//!
//! Each RPC validates and converts its request, calls the [`Registry`]
//! (which decides what the caller's access allows and appends the audit
//! event of a change), and logs one line naming the token, its owner and
//! the acting admin token. Each call is authenticated first
//! (`auth::AdminAuth`), counted in the metrics, refusals included, and,
//! when an authenticated caller is refused, audited (`service::audit`).

use std::{net::IpAddr, sync::Arc, time::Instant};

use tonic::{Code, Request, Response, Status};
use tracing::info;

use crate::{
    access::{Actor, Reach},
    auth::{AdminAuth, Need, Refused},
    conn::Peer,
    error::Error,
    id::TokenId,
    index::{Arrivals, ListFilter},
    metrics::{Metrics, Rpc},
    pb::{self, token_service_server::TokenService},
    registry::{Registry, TokenUpdate},
    service::{
        audit::{self, Subject},
        code_name, convert,
    },
    spec::{self, TokenSpec},
};

/// Default List page size.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest List page size.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The TokenService implementation.
pub struct AdminService {
    registry: Arc<Registry>,
    auth: AdminAuth,
    metrics: Arc<Metrics>,
}

impl AdminService {
    /// A TokenService over `registry`, authenticating with `auth`.
    pub fn new(registry: Arc<Registry>, auth: AdminAuth, metrics: Arc<Metrics>) -> AdminService {
        AdminService { registry, auth, metrics }
    }

    fn token(&self, entry: &crate::index::Entry) -> pb::Token {
        convert::token(entry, self.registry.now())
    }
}

#[tonic::async_trait]
impl TokenService for AdminService {
    async fn issue(&self, request: Request<pb::IssueRequest>) -> Result<Response<pb::IssueResponse>, Status> {
        self.call(Rpc::Issue, Need::Write, request, |actor, req| self.issue(actor, req)).await
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        self.call(Rpc::Get, Need::Read, request, |actor, req| async move { self.get(&actor, req) }).await
    }

    async fn list(&self, request: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        self.call(Rpc::List, Need::Read, request, |actor, req| self.list(actor, req)).await
    }

    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Result<Response<pb::RevokeResponse>, Status> {
        self.call(Rpc::Revoke, Need::Write, request, |actor, req| self.revoke(actor, req)).await
    }

    async fn rotate(&self, request: Request<pb::RotateRequest>) -> Result<Response<pb::RotateResponse>, Status> {
        self.call(Rpc::Rotate, Need::Write, request, |actor, req| self.rotate(actor, req)).await
    }

    async fn update(&self, request: Request<pb::UpdateRequest>) -> Result<Response<pb::UpdateResponse>, Status> {
        self.call(Rpc::Update, Need::Write, request, |actor, req| self.update(actor, req)).await
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        self.call(Rpc::ListAuditEvents, Need::Read, request, |actor, req| {
            audit::list_events(&self.registry, actor, req)
        })
        .await
    }
}

impl AdminService {
    /// Authenticates, runs `handler`, audits a refusal of an authenticated
    /// caller, and records the call's status code and latency — refusals
    /// included — under `rpc`.
    async fn call<Req: Subject, Resp, Fut>(
        &self,
        rpc: Rpc,
        needs: Need,
        request: Request<Req>,
        handler: impl FnOnce(Actor, Req) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: Future<Output = Result<Resp, Status>>,
    {
        let started = Instant::now();
        let peer = request.extensions().get::<Peer>().map(|p| p.remote_addr.ip());
        let result = match self.auth.authenticate(request.metadata(), peer, needs) {
            Ok(actor) => {
                let req = request.into_inner();
                let subject = req.subject();
                let actor_id = actor.token_id;
                let result = handler(actor, req).await;
                if let Err(status) = &result {
                    self.audit_refusal(rpc, actor_id, peer, subject, status).await;
                }
                result
            }
            Err(Refused { status, actor }) => {
                if let Some(actor_id) = actor {
                    self.audit_refusal(rpc, actor_id, peer, request.get_ref().subject(), &status).await;
                }
                Err(status)
            }
        };
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.metrics.admin(rpc, code, started.elapsed());
        result.map(Response::new)
    }

    /// Appends the audit event of a refused call, for the codes that say
    /// "not you" or "not this" (PERMISSION_DENIED, NOT_FOUND,
    /// FAILED_PRECONDITION, RESOURCE_EXHAUSTED, INVALID_ARGUMENT) — not for
    /// the server's own trouble (UNAVAILABLE, INTERNAL), which the caller
    /// did not cause. The call is answered after the event is durable; if it
    /// cannot be written, the refusal stands and the failure is logged.
    async fn audit_refusal(
        &self,
        rpc: Rpc,
        actor_id: TokenId,
        peer: Option<IpAddr>,
        subject: audit::Target,
        status: &Status,
    ) {
        if !audit::is_audited(status.code()) {
            return;
        }
        let draft =
            subject.draft(&self.registry, rpc.action(), actor_id, peer, code_name(status.code()), status.message());
        if let Err(e) = self.registry.audit_refusal(draft).await {
            tracing::error!(error = %e, rpc = rpc.action(), "cannot append the audit event of a refused call");
        }
    }

    async fn issue(&self, admin: Actor, req: pb::IssueRequest) -> Result<pb::IssueResponse, Status> {
        let ttl = convert::duration("ttl", req.ttl.as_ref())?;
        let mut spec = TokenSpec::new(req.name, req.owner, req.scopes, req.labels.into_iter().collect(), ttl)?;
        spec.not_before = req.not_before.as_ref().map(|t| convert::time("not_before", t)).transpose()?;
        spec.allowed_cidrs = spec::check_cidrs("allowed_cidrs", &req.allowed_cidrs)?;
        let created = self.registry.issue(spec, &admin).await?;
        let r = &created.token;
        info!(action = "issue", token_id = %r.id(), owner = %r.owner(), actor = %admin.token_id, "token issued");
        Ok(pb::IssueResponse { secret: created.secret.expose().to_owned(), token: Some(self.token(&created.token)) })
    }

    fn get(&self, actor: &Actor, req: pb::GetRequest) -> Result<pb::GetResponse, Status> {
        let id = convert::token_id("id", &req.id)?;
        let entry = self.registry.get(id, &actor.access.read)?;
        Ok(pb::GetResponse { token: Some(self.token(&entry)) })
    }

    async fn list(&self, actor: Actor, mut req: pb::ListRequest) -> Result<pb::ListResponse, Status> {
        if req.owner.len() > spec::MAX_NAME_BYTES {
            return Err(Error::invalid("owner", format!("must be at most {} bytes", spec::MAX_NAME_BYTES)).into());
        }
        // A caller limited to some owners lists theirs: another owner named
        // is refused, none named means theirs.
        let mut within = None;
        match &actor.access.read {
            Reach::All => {}
            _ if !req.owner.is_empty() && !actor.access.read.covers(&req.owner) => {
                return Err(Error::PermissionDenied(format!(
                    "this admin token may not list tokens of owner {:?}",
                    req.owner
                ))
                .into());
            }
            Reach::Owners(owners) if req.owner.is_empty() && owners.len() == 1 => req.owner = owners[0].to_string(),
            reach => within = reach.owners().map(<[_]>::to_vec),
        }
        let status = convert::status_filter("status", req.status)?;
        let limit = match usize::try_from(req.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) if n <= MAX_PAGE_SIZE => n,
            _ => return Err(Error::invalid("page_size", format!("must be 0-{MAX_PAGE_SIZE}")).into()),
        };
        if req.name_prefix.len() > spec::MAX_NAME_BYTES {
            return Err(Error::invalid("name_prefix", format!("must be at most {} bytes", spec::MAX_NAME_BYTES)).into());
        }
        let (after, late_since) = decode_page_token(&req.page_token)?;
        let filter = ListFilter {
            owner: (!req.owner.is_empty()).then_some(req.owner),
            status,
            name_prefix: (!req.name_prefix.is_empty()).then_some(req.name_prefix),
            last_used_before: req.last_used_before.map(|t| convert::time("last_used_before", &t)).transpose()?,
            expire_before: req.expire_before.map(|t| convert::time("expire_before", &t)).transpose()?,
            within,
        };
        let page = self.registry.list(filter, after, late_since, limit).await?;
        Ok(pb::ListResponse {
            tokens: page.entries.iter().map(|e| self.token(e)).collect(),
            next_page_token: page.next_after.map(|after| encode_page_token(after, page.arrivals)).unwrap_or_default(),
        })
    }

    async fn revoke(&self, admin: Actor, req: pb::RevokeRequest) -> Result<pb::RevokeResponse, Status> {
        let id = convert::token_id("id", &req.id)?;
        spec::check_reason(&req.reason)?;
        let entry = self.registry.revoke(id, req.reason, &admin).await?;
        info!(action = "revoke", token_id = %entry.id(), owner = %entry.owner(), actor = %admin.token_id, "token revoked");
        Ok(pb::RevokeResponse { token: Some(self.token(&entry)) })
    }

    async fn rotate(&self, admin: Actor, req: pb::RotateRequest) -> Result<pb::RotateResponse, Status> {
        let id = convert::token_id("id", &req.id)?;
        let grace =
            spec::check_duration("grace_period", convert::duration("grace_period", req.grace_period.as_ref())?)?;
        let (created, previous) = self.registry.rotate(id, grace, &admin).await?;
        let r = &created.token;
        info!(
            action = "rotate", token_id = %r.id(), previous_id = %id, owner = %r.owner(), actor = %admin.token_id,
            "token rotated"
        );
        Ok(pb::RotateResponse {
            secret: created.secret.expose().to_owned(),
            token: Some(self.token(&created.token)),
            previous: Some(self.token(&previous)),
        })
    }
}

impl AdminService {
    async fn update(&self, admin: Actor, req: pb::UpdateRequest) -> Result<pb::UpdateResponse, Status> {
        let token = req.token.unwrap_or_default();
        let id = convert::token_id("token.id", &token.id)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(Error::invalid("update_mask", format!("must name at least one of {UPDATABLE}")).into());
        }
        let mut update = TokenUpdate::default();
        for path in &paths {
            match path.as_str() {
                "name" => update.name = Some(spec::check_name("name", &token.name)?.to_owned()),
                "labels" => update.labels = Some(spec::check_labels(token.labels.clone().into_iter().collect())?),
                "scopes" => update.scopes = Some(spec::check_scopes(token.scopes.clone())?),
                // The JSON mapping's lowerCamelCase, for clients that send
                // a mask as written in JSON.
                "expire_time" | "expireTime" => {
                    update.expire_time =
                        Some(token.expire_time.as_ref().map(|t| convert::time("expire_time", t)).transpose()?);
                }
                "allowed_cidrs" | "allowedCidrs" => {
                    update.allowed_cidrs = Some(spec::check_cidrs("allowed_cidrs", &token.allowed_cidrs)?)
                }
                other => {
                    return Err(Error::invalid(
                        "update_mask",
                        format!("path {other:?} cannot be updated (updatable: {UPDATABLE})"),
                    )
                    .into());
                }
            }
        }
        let entry = self.registry.update(id, update, &admin).await?;
        info!(action = "update", token_id = %entry.id(), owner = %entry.owner(), actor = %admin.token_id, paths = ?paths, "token updated");
        Ok(pb::UpdateResponse { token: Some(self.token(&entry)) })
    }
}

/// The paths Update accepts.
const UPDATABLE: &str = "name, labels, scopes, expire_time, allowed_cidrs";

/// A page token is the id of the last token returned and the index's
/// arrival position when the page was taken, in hex (64 characters): the
/// next page is everything after that id, plus tokens that arrived behind
/// it since (see `index::Arrivals`). A 32-character token from an earlier
/// version (the id alone) is still accepted.
fn encode_page_token(after: TokenId, arrivals: Arrivals) -> String {
    let mut bytes = after.to_bytes().to_vec();
    bytes.extend(arrivals.instance.to_be_bytes());
    bytes.extend(arrivals.seen.to_be_bytes());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_page_token(s: &str) -> Result<(Option<TokenId>, Option<Arrivals>), Error> {
    if s.is_empty() {
        return Ok((None, None));
    }
    let invalid = || Error::invalid("page_token", "not a page token returned by List");
    if !(s.len() == 32 || s.len() == 64) || !s.is_ascii() {
        return Err(invalid());
    }
    let bytes: Vec<u8> = (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| invalid())?;
    let after = TokenId::from_bytes(bytes[..16].try_into().map_err(|_| invalid())?).map_err(|_| invalid())?;
    let arrivals = (bytes.len() == 32).then(|| {
        let word = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Arrivals { instance: word(16), seen: word(24) }
    });
    Ok((Some(after), arrivals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{clock::Time, id::IdGenerator};

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let id = IdGenerator::default().next(Time(1_700_000_000_000_000_000));
        let at = Arrivals { instance: 0xfeed_beef, seen: 42 };
        assert_eq!(decode_page_token(&encode_page_token(id, at)).unwrap(), (Some(id), Some(at)));
        let earlier_version: String = encode_page_token(id, at).chars().take(32).collect();
        assert_eq!(decode_page_token(&earlier_version).unwrap(), (Some(id), None));
        assert_eq!(decode_page_token("").unwrap(), (None, None));
        for bad in ["x", "zz", &"0".repeat(32), &"g".repeat(32), "ééééééééééééééééé", &"0".repeat(33)]
        {
            assert!(matches!(decode_page_token(bad), Err(Error::InvalidArgument { .. })), "{bad}");
        }
    }
}
