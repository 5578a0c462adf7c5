//! Admission to the admin plane: at most `--max-admin-inflight` TokenService
//! calls run at once, and each runs under a deadline.
//!
//! Past the bound a call is answered RESOURCE_EXHAUSTED at once rather than
//! queued: a queue only turns overload into ever longer waits, while a
//! refusal lets the operator's tooling back off, and the cores stay with
//! Verify, which is never shed. The deadline is `--admin-timeout`, or the
//! client's `grpc-timeout` when that is sooner; past it the call is answered
//! DEADLINE_EXCEEDED. As with any gRPC deadline, that answer means "not
//! known": a write already handed to the store may still commit.
//!
//! tonic itself also honours `grpc-timeout`, on every RPC, but answers
//! CANCELLED; here the client's deadline and ours are one timer, polled
//! after the call, so an admin call gets the code the gRPC spec names.
//! tonic's timer starts a moment before ours and tokio rounds both up to a
//! millisecond tick, so with equal durations tonic's could fire first: ours
//! takes the client's deadline less [`CLIENT_DEADLINE_MARGIN`].

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;
use tonic::{Status, body::Body, server::NamedService};

use crate::metrics::{Metrics, Rpc};

/// A TokenService wrapped in the admin plane's admission rules.
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    inflight: Arc<Semaphore>,
    max_inflight: usize,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl<S> Admission<S> {
    /// `inner` with at most `max_inflight` calls at once, each with
    /// `timeout` at most.
    pub fn new(inner: S, max_inflight: usize, timeout: Duration, metrics: Arc<Metrics>) -> Admission<S> {
        Admission { inner, inflight: Arc::new(Semaphore::new(max_inflight)), max_inflight, timeout, metrics }
    }
}

impl<S: NamedService> NamedService for Admission<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Admission<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> BoxFuture {
        let started = Instant::now();
        let rpc = Rpc::of_admin_path(request.uri().path());
        let metrics = self.metrics.clone();
        let refuse = move |status: Status| {
            if let Some(rpc) = rpc {
                metrics.admin(rpc, status.code(), started.elapsed());
            }
            Ok(status.into_http())
        };
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            let status = Status::resource_exhausted(format!(
                "tokend is serving {} admin calls already (--max-admin-inflight); retry with backoff",
                self.max_inflight
            ));
            return Box::pin(std::future::ready(refuse(status)));
        };
        let timeout = match grpc_timeout(request.headers()) {
            Some(client) if client < self.timeout => client.saturating_sub(CLIENT_DEADLINE_MARGIN),
            _ => self.timeout,
        };
        // The service was made ready for this call; keep the clone for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let answered = tokio::time::timeout(timeout, inner.call(request)).await;
            drop(permit);
            match answered {
                Ok(response) => response,
                Err(_) => refuse(Status::deadline_exceeded(format!(
                    "the admin call did not finish within its deadline ({timeout:?}; --admin-timeout or the \
                     client's grpc-timeout); a write may still have been applied"
                ))),
            }
        })
    }
}

/// How much sooner than the client's `grpc-timeout` an admin call is cut
/// off, so that this layer's DEADLINE_EXCEEDED, not tonic's CANCELLED,
/// answers it: several of tokio's millisecond ticks, for the time between
/// tonic's timer starting and this one on a busy machine.
pub const CLIENT_DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// The client's deadline from its `grpc-timeout` header: at most 8 digits
/// and a unit (H, M, S, m, u, n), per the gRPC HTTP/2 protocol. A malformed
/// header is ignored, as tonic does.
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(value: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeout_reads_every_unit_and_refuses_malformed_values() {
        assert_eq!(timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "123456789S", "10s", "1.5S", "-1S", "10"] {
            assert_eq!(timeout(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
