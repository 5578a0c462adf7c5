//! `tokend.v1.VerifyService`: the hot path's gRPC adapter.
//!
//! Kept apart from the admin plane: no authentication, no logging per call,
//! and the response carries owner, scopes and labels only for a valid token.

use std::{
    convert::Infallible,
    future::Ready,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tonic::{
    Request, Response, Status,
    codegen::{Body, BoxFuture, StdError},
    server::{Grpc, NamedService, UnaryService},
};
use tonic_prost::ProstCodec;

use crate::{
    cidr::Client,
    error::Error,
    metrics::Metrics,
    pb::{
        self,
        verify_service_server::{VerifyService, VerifyServiceServer},
    },
    service::{
        reply::VerifyReply,
        watch::{WatchStream, Watchers},
    },
    spec,
    token::TokenHash,
    verify::{Outcome, Verifier},
};

/// The VerifyService implementation.
pub struct VerifyApi {
    verifier: Arc<Verifier>,
    metrics: Arc<Metrics>,
    watchers: Watchers,
}

impl VerifyApi {
    /// A VerifyService over `verifier`, its Watch streams started by
    /// `watchers`.
    pub fn new(verifier: Arc<Verifier>, metrics: Arc<Metrics>, watchers: Watchers) -> VerifyApi {
        VerifyApi { verifier, metrics, watchers }
    }

    /// Verify's answer to `req`.
    #[inline]
    fn answer(&self, req: &pb::VerifyRequest) -> Result<VerifyReply, Status> {
        let started = Instant::now();
        check_required_scopes(&req.required_scopes)?;
        let verdict = self.verifier.verify_from(&req.token, &req.required_scopes, Client::Reported(&req.client_ip));
        self.metrics.verify(verdict.outcome, started.elapsed());
        if verdict.outcome == Outcome::Stale {
            // Fail closed: no answer is better than a revoked token accepted.
            return Err(Status::unavailable(
                "this tokend replica is stale: it has not confirmed it is current with the token store \
                 within --max-staleness; try another replica",
            ));
        }
        Ok(VerifyReply::new(verdict))
    }
}

/// `tokend.v1.VerifyService` as served: Verify answered with a
/// [`VerifyReply`] encoded straight from the index entry, Watch and RecordUse
/// by the generated server.
#[derive(Clone)]
pub struct VerifyRoutes {
    api: Arc<VerifyApi>,
    generated: VerifyServiceServer<VerifyApi>,
    max_request_bytes: usize,
}

impl VerifyRoutes {
    /// The service over `api`, refusing requests over `max_request_bytes`.
    pub fn new(api: VerifyApi, max_request_bytes: usize) -> VerifyRoutes {
        let api = Arc::new(api);
        let generated = VerifyServiceServer::from_arc(api.clone()).max_decoding_message_size(max_request_bytes);
        VerifyRoutes { api, generated, max_request_bytes }
    }
}

impl NamedService for VerifyRoutes {
    const NAME: &'static str = <VerifyServiceServer<VerifyApi> as NamedService>::NAME;
}

/// The path of the Verify method.
const VERIFY_PATH: &str = "/tokend.v1.VerifyService/Verify";

impl<B> tower::Service<http::Request<B>> for VerifyRoutes
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != VERIFY_PATH {
            return self.generated.call(request);
        }
        // As the generated server does for every method, with the reply's codec.
        let mut grpc = Grpc::new(ProstCodec::<VerifyReply, pb::VerifyRequest>::default())
            .apply_max_message_size_config(Some(self.max_request_bytes), None);
        let method = VerifyMethod(self.api.clone());
        Box::pin(async move { Ok(grpc.unary(method, request).await) })
    }
}

/// The Verify method as tonic's unary handler; it never awaits, so its
/// future is a ready value rather than a boxed one.
struct VerifyMethod(Arc<VerifyApi>);

impl UnaryService<pb::VerifyRequest> for VerifyMethod {
    type Response = VerifyReply;
    type Future = Ready<Result<Response<VerifyReply>, Status>>;

    fn call(&mut self, request: Request<pb::VerifyRequest>) -> Self::Future {
        std::future::ready(self.0.answer(request.get_ref()).map(Response::new))
    }
}

#[tonic::async_trait]
impl VerifyService for VerifyApi {
    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        // Any token this process did not give out, however malformed, is
        // answered with a reset, as the contract says of unknown ones.
        Ok(Response::new(self.watchers.start(&request.get_ref().resume_token)))
    }

    async fn verify(&self, request: Request<pb::VerifyRequest>) -> Result<Response<pb::VerifyResponse>, Status> {
        // Served by `VerifyRoutes`, which encodes the reply without building
        // this message; kept whole for anyone serving the generated server.
        self.answer(request.get_ref()).map(|reply| Response::new(reply.to_message()))
    }

    async fn record_use(
        &self,
        request: Request<pb::RecordUseRequest>,
    ) -> Result<Response<pb::RecordUseResponse>, Status> {
        let hashes = &request.get_ref().token_hashes;
        if hashes.len() > MAX_RECORDED_USES {
            return Err(Error::invalid("token_hashes", format!("at most {MAX_RECORDED_USES} per call")).into());
        }
        let mut parsed = Vec::with_capacity(hashes.len());
        for (i, hash) in hashes.iter().enumerate() {
            let bytes: [u8; 32] = hash.as_slice().try_into().map_err(|_| {
                Error::invalid(format!("token_hashes[{i}]"), format!("must be 32 bytes, not {}", hash.len()))
            })?;
            parsed.push(TokenHash(bytes));
        }
        let recorded = self.verifier.record_use(parsed);
        Ok(Response::new(pb::RecordUseResponse { recorded: recorded as u32 }))
    }
}

/// Most token hashes one RecordUse call may carry.
pub const MAX_RECORDED_USES: usize = 1_000;

fn check_required_scopes(scopes: &[String]) -> Result<(), Error> {
    if scopes.len() > spec::MAX_SCOPES {
        return Err(Error::invalid("required_scopes", format!("at most {} scopes", spec::MAX_SCOPES)));
    }
    for (i, s) in scopes.iter().enumerate() {
        if spec::check_scope("required_scopes", s).is_err() {
            return Err(Error::invalid(format!("required_scopes[{i}]"), "must match [A-Za-z0-9._:/-]{1,128}"));
        }
    }
    Ok(())
}
