//! `tokend.v1.VerifyService`: the hot path's gRPC adapter.
//!
//! Kept apart from the admin plane: no authentication, no logging per call,
//! and the response carries owner, scopes and labels only for a valid token.

use std::{sync::Arc, time::Instant};

use tonic::{Request, Response, Status};

use crate::{
    error::Error,
    metrics::Metrics,
    pb::{self, verify_service_server::VerifyService},
    service::{
        convert,
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
        let started = Instant::now();
        let req = request.get_ref();
        check_required_scopes(&req.required_scopes)?;
        let verdict = self.verifier.verify(&req.token, &req.required_scopes);
        self.metrics.verify(verdict.outcome, started.elapsed());
        if verdict.outcome == Outcome::Stale {
            // Fail closed: no answer is better than a revoked token accepted.
            return Err(Status::unavailable(
                "this tokend replica is stale: it has not confirmed it is current with the token store \
                 within --max-staleness; try another replica",
            ));
        }
        let mut response = pb::VerifyResponse {
            valid: verdict.outcome == Outcome::Ok,
            result: result(verdict.outcome).into(),
            ..Default::default()
        };
        if let Some(entry) = verdict.entry {
            let r = &entry.record;
            response.token_id = r.id.to_string();
            if response.valid {
                response.owner = r.owner.to_string();
                response.scopes = r.scopes.to_vec();
                response.labels = r.labels.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
                response.expire_time = r.expire_time.map(convert::timestamp);
            }
        }
        Ok(Response::new(response))
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

fn result(o: Outcome) -> pb::VerifyResult {
    match o {
        Outcome::Ok => pb::VerifyResult::Ok,
        Outcome::Malformed => pb::VerifyResult::Malformed,
        Outcome::Unknown => pb::VerifyResult::Unknown,
        Outcome::Expired => pb::VerifyResult::Expired,
        Outcome::Revoked => pb::VerifyResult::Revoked,
        Outcome::InsufficientScope => pb::VerifyResult::InsufficientScope,
        // Answered as UNAVAILABLE before a result is built.
        Outcome::Stale => pb::VerifyResult::Unspecified,
    }
}
