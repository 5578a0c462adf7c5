//! `tokend.v1.TokenService`: the admin plane's gRPC adapter.
//!
//! Each RPC validates and converts its request, calls the [`Registry`], and
//! writes one audit line naming the token, its owner and the acting admin
//! token. Authentication happened before this in `auth::AdminAuth`.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::info;

use crate::{
    auth::Admin,
    error::Error,
    id::TokenId,
    pb::{self, token_service_server::TokenService},
    registry::Registry,
    service::convert,
    spec::{self, TokenSpec},
};

/// Default List page size.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest List page size.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The TokenService implementation.
pub struct AdminService {
    registry: Arc<Registry>,
}

impl AdminService {
    /// A TokenService over `registry`.
    pub fn new(registry: Arc<Registry>) -> AdminService {
        AdminService { registry }
    }

    fn token(&self, entry: &crate::index::Entry) -> pb::Token {
        convert::token(entry, self.registry.now())
    }
}

/// The admin that `auth::AdminAuth` authenticated.
fn actor<T>(request: &Request<T>) -> Result<Admin, Status> {
    request
        .extensions()
        .get::<Admin>()
        .copied()
        .ok_or_else(|| Status::unauthenticated("admin authentication is required"))
}

#[tonic::async_trait]
impl TokenService for AdminService {
    async fn issue(&self, request: Request<pb::IssueRequest>) -> Result<Response<pb::IssueResponse>, Status> {
        let admin = actor(&request)?;
        let req = request.into_inner();
        let ttl = convert::duration("ttl", req.ttl.as_ref())?;
        let spec = TokenSpec::new(req.name, req.owner, req.scopes, req.labels.into_iter().collect(), ttl)?;
        let created = self.registry.issue(spec).await?;
        let r = &created.token.record;
        info!(action = "issue", token_id = %r.id, owner = %r.owner, actor = %admin.token_id, "token issued");
        Ok(Response::new(pb::IssueResponse {
            secret: created.secret.expose().to_owned(),
            token: Some(self.token(&created.token)),
        }))
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        actor(&request)?;
        let id = convert::token_id("id", &request.get_ref().id)?;
        let entry = self.registry.get(id)?;
        Ok(Response::new(pb::GetResponse { token: Some(self.token(&entry)) }))
    }

    async fn list(&self, request: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        actor(&request)?;
        let req = request.get_ref();
        if req.owner.len() > spec::MAX_NAME_BYTES {
            return Err(Error::invalid("owner", format!("must be at most {} bytes", spec::MAX_NAME_BYTES)).into());
        }
        let status = convert::status_filter("status", req.status)?;
        let limit = match usize::try_from(req.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) if n <= MAX_PAGE_SIZE => n,
            _ => return Err(Error::invalid("page_size", format!("must be 0-{MAX_PAGE_SIZE}")).into()),
        };
        let after = decode_page_token(&req.page_token)?;
        let owner = (!req.owner.is_empty()).then_some(req.owner.as_str());
        let page = self.registry.list(owner, status, after, limit);
        Ok(Response::new(pb::ListResponse {
            tokens: page.entries.iter().map(|e| self.token(e)).collect(),
            next_page_token: page.next_after.map(encode_page_token).unwrap_or_default(),
        }))
    }

    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Result<Response<pb::RevokeResponse>, Status> {
        let admin = actor(&request)?;
        let req = request.into_inner();
        let id = convert::token_id("id", &req.id)?;
        spec::check_reason(&req.reason)?;
        let entry = self.registry.revoke(id, req.reason).await?;
        let r = &entry.record;
        info!(action = "revoke", token_id = %r.id, owner = %r.owner, actor = %admin.token_id, "token revoked");
        Ok(Response::new(pb::RevokeResponse { token: Some(self.token(&entry)) }))
    }

    async fn rotate(&self, request: Request<pb::RotateRequest>) -> Result<Response<pb::RotateResponse>, Status> {
        let admin = actor(&request)?;
        let req = request.get_ref();
        let id = convert::token_id("id", &req.id)?;
        let grace =
            spec::check_duration("grace_period", convert::duration("grace_period", req.grace_period.as_ref())?)?;
        let (created, previous) = self.registry.rotate(id, grace).await?;
        let r = &created.token.record;
        info!(
            action = "rotate", token_id = %r.id, previous_id = %id, owner = %r.owner, actor = %admin.token_id,
            "token rotated"
        );
        Ok(Response::new(pb::RotateResponse {
            secret: created.secret.expose().to_owned(),
            token: Some(self.token(&created.token)),
            previous: Some(self.token(&previous)),
        }))
    }
}

/// Page tokens are the id of the last token returned, in hex: ids only grow,
/// so "everything after this id" stays correct while tokens are issued.
fn encode_page_token(after: TokenId) -> String {
    after.to_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_page_token(s: &str) -> Result<Option<TokenId>, Error> {
    if s.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::invalid("page_token", "not a page token returned by List");
    if s.len() != 32 || !s.is_ascii() {
        return Err(invalid());
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
    }
    TokenId::from_bytes(bytes).map(Some).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{clock::Time, id::IdGenerator};

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let id = IdGenerator::default().next(Time(1_700_000_000_000_000_000));
        assert_eq!(decode_page_token(&encode_page_token(id)).unwrap(), Some(id));
        assert_eq!(decode_page_token("").unwrap(), None);
        for bad in ["x", "zz", &"0".repeat(32), &"g".repeat(32), "ééééééééééééééééé", &"0".repeat(33)]
        {
            assert!(matches!(decode_page_token(bad), Err(Error::InvalidArgument { .. })), "{bad}");
        }
    }
}
