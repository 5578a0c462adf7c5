//! Prometheus metrics, and the HTTP listener that serves them
//! (`--metrics-listen`, `GET /metrics`).
//!
//! Metrics (text exposition format, via `prometheus-client`):
//!
//! * `tokend_verify_total{result}` — Verify calls by result;
//! * `tokend_admin_requests_total{rpc,code}` — admin calls by RPC and gRPC
//!   status code, refusals by the authentication layer included;
//! * `tokend_request_duration_seconds{rpc}` — handler latency per RPC;
//! * `tokend_tokens{status}` — tokens by status, counted at scrape time;
//! * `tokend_store_flush_duration_seconds` — latency of each shared flush;
//! * with a shared store, `tokend_feed_staleness_seconds` — time since the
//!   change feed last confirmed this replica is current — and
//!   `tokend_feed_changes_applied_total` — records the feed applied;
//! * `tokend_connections` — connections open on the gRPC ports, and
//!   `tokend_connections_refused_total` — connections closed at once
//!   because `--max-connections` were open; `tokend_connections_abusive_total`
//!   — connections closed with GOAWAY ENHANCE_YOUR_CALM — and
//!   `tokend_connections_cooled_down_total` — new connections closed at once
//!   while their peer cools down (`--abuse-cooldown`);
//! * `tokend_build_info{version}`.
//!
//! On the Verify path recording is O(1) and lock-free: handles to the
//! labelled series are resolved once at start-up, and the latency histogram
//! is our own `AtomicHistogram` (in `histogram`), so a call costs three atomic
//! adds, never a label lookup or a mutex. A scrape counts tokens by status
//! by walking the index, so it runs on the blocking pool.

mod histogram;

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use self::histogram::AtomicHistogram;

use crate::{clock::Time, conn::Incoming, feed::Freshness, index::Index, verify::Outcome};

type Labels = Vec<(&'static str, &'static str)>;

/// The RPCs with a latency series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// TokenService/Issue.
    Issue,
    /// TokenService/Get.
    Get,
    /// TokenService/List.
    List,
    /// TokenService/Revoke.
    Revoke,
    /// TokenService/Rotate.
    Rotate,
    /// VerifyService/Verify.
    Verify,
    /// TokenService/Update.
    Update,
    /// TokenService/ListAuditEvents.
    ListAuditEvents,
}

impl Rpc {
    const ALL: [Rpc; 8] =
        [Rpc::Issue, Rpc::Get, Rpc::List, Rpc::Revoke, Rpc::Rotate, Rpc::Verify, Rpc::Update, Rpc::ListAuditEvents];

    /// The admin RPC a request path names (`/tokend.v1.TokenService/Issue`).
    pub fn of_admin_path(path: &str) -> Option<Rpc> {
        let method = path.strip_prefix("/tokend.v1.TokenService/")?;
        Rpc::ALL.into_iter().find(|rpc| *rpc != Rpc::Verify && rpc.name() == method)
    }

    fn name(self) -> &'static str {
        match self {
            Rpc::Issue => "Issue",
            Rpc::Get => "Get",
            Rpc::List => "List",
            Rpc::Revoke => "Revoke",
            Rpc::Rotate => "Rotate",
            Rpc::Verify => "Verify",
            Rpc::Update => "Update",
            Rpc::ListAuditEvents => "ListAuditEvents",
        }
    }

    /// The audit trail's name for the call: the RPC's name in lower case.
    pub fn action(self) -> &'static str {
        match self {
            Rpc::Issue => "issue",
            Rpc::Get => "get",
            Rpc::List => "list",
            Rpc::Revoke => "revoke",
            Rpc::Rotate => "rotate",
            Rpc::Verify => "verify",
            Rpc::Update => "update",
            Rpc::ListAuditEvents => "listauditevents",
        }
    }
}

const OUTCOMES: [Outcome; 9] = [
    Outcome::Ok,
    Outcome::Malformed,
    Outcome::Unknown,
    Outcome::Expired,
    Outcome::Revoked,
    Outcome::InsufficientScope,
    Outcome::Stale,
    Outcome::NotYetValid,
    Outcome::IpNotAllowed,
];

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Malformed => "malformed",
        Outcome::Unknown => "unknown",
        Outcome::Expired => "expired",
        Outcome::Revoked => "revoked",
        Outcome::InsufficientScope => "insufficient_scope",
        Outcome::Stale => "stale",
        Outcome::NotYetValid => "not_yet_valid",
        Outcome::IpNotAllowed => "ip_not_allowed",
    }
}

/// Every metric tokend exports.
pub struct Metrics {
    registry: Registry,
    verify: [Counter; OUTCOMES.len()],
    admin: Family<Labels, Counter>,
    latency: [AtomicHistogram; Rpc::ALL.len()],
    tokens: Family<Labels, Gauge>,
    flush: AtomicHistogram,
    staleness: Gauge<f64, std::sync::atomic::AtomicU64>,
    feed_applied: Counter,
    connections: Gauge,
    connections_refused: Counter,
    abusive: Counter,
    cooled: Counter,
    /// Set once at start-up with a shared store; read at scrape time.
    feed: std::sync::OnceLock<Arc<Freshness>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let verify_family = Family::<Labels, Counter>::default();
        let verify = OUTCOMES.map(|o| verify_family.get_or_create(&vec![("result", outcome_name(o))]).clone());
        registry.register("tokend_verify", "Verify calls by result", verify_family);
        let admin = registered(&mut registry, "tokend_admin_requests", "Admin calls by RPC and gRPC status code");
        let latency_family = Family::<Labels, AtomicHistogram>::default();
        let latency = Rpc::ALL.map(|r| latency_family.get_or_create(&vec![("rpc", r.name())]).clone());
        registry.register("tokend_request_duration_seconds", "Handler latency per RPC", latency_family);
        let tokens = registered(&mut registry, "tokend_tokens", "Tokens by status, at scrape time");
        let flush =
            registered(&mut registry, "tokend_store_flush_duration_seconds", "Latency of each shared store flush");
        registry.register("tokend_build", "Build information", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));
        let staleness = registered(
            &mut registry,
            "tokend_feed_staleness_seconds",
            "Time since the change feed last confirmed this replica is current (shared store only)",
        );
        let feed_applied = registered(
            &mut registry,
            "tokend_feed_changes_applied",
            "Records applied from the change feed (shared store only)",
        );
        let connections = registered(&mut registry, "tokend_connections", "Connections open on the gRPC ports");
        let connections_refused = registered(
            &mut registry,
            "tokend_connections_refused",
            "Connections closed at once because --max-connections were open",
        );
        let abusive = registered(
            &mut registry,
            "tokend_connections_abusive",
            "Connections the HTTP/2 layer closed with GOAWAY ENHANCE_YOUR_CALM (floods)",
        );
        let cooled = registered(
            &mut registry,
            "tokend_connections_cooled_down",
            "New connections closed at accept because their peer was cooling down (--abuse-cooldown; SYNs the socket filter dropped are not counted)",
        );
        Metrics {
            registry,
            verify,
            admin,
            latency,
            tokens,
            flush,
            staleness,
            feed_applied,
            connections,
            connections_refused,
            abusive,
            cooled,
            feed: Default::default(),
        }
    }

    /// Records a Verify call.
    #[inline]
    pub fn verify(&self, outcome: Outcome, elapsed: Duration) {
        // OUTCOMES and Rpc::ALL list the variants in declaration order.
        self.verify[outcome as usize].inc();
        self.latency[Rpc::Verify as usize].observe(elapsed);
    }

    /// Records an admin call, refused or answered.
    pub fn admin(&self, rpc: Rpc, code: tonic::Code, elapsed: Duration) {
        self.admin.get_or_create(&vec![("rpc", rpc.name()), ("code", crate::service::code_name(code))]).inc();
        self.latency[rpc as usize].observe(elapsed);
    }

    /// The gauge of open connections and the counter of refused ones, for
    /// the gRPC ports' `conn::Gate`.
    pub fn connections(&self) -> (Gauge, Counter) {
        (self.connections.clone(), self.connections_refused.clone())
    }

    /// The counters of abusive connections and of connections refused
    /// during a cooldown, for `conn::abuse::Cooldown`.
    pub fn abuse(&self) -> (Counter, Counter) {
        (self.abusive.clone(), self.cooled.clone())
    }

    /// Records one store flush.
    pub fn flush(&self, elapsed: Duration) {
        self.flush.observe(elapsed);
    }

    /// Exports `freshness` as the feed's metrics.
    pub fn watch_feed(&self, freshness: Arc<Freshness>) {
        let _ = self.feed.set(freshness);
    }

    /// The text exposition of every metric, with token counts taken now.
    pub fn render(&self, index: &Index, now: Time) -> String {
        if let Some(feed) = self.feed.get() {
            self.staleness.set(feed.staleness().as_secs_f64());
            // The feed counts in its own atomic; bring the counter up to it.
            self.feed_applied.inc_by(feed.applied().saturating_sub(self.feed_applied.get()));
        }
        let (active, expired, revoked) = index.count_by_status(now);
        for (status, n) in [("active", active), ("expired", expired), ("revoked", revoked)] {
            self.tokens.get_or_create(&vec![("status", status)]).set(n as i64);
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// A new metric of type `M`, registered under `name`; the handle kept.
fn registered<M: prometheus_client::registry::Metric + Clone + Default>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// Serves `GET /metrics` (HTTP/1.1) on the connections of `incoming` until
/// the task is dropped.
pub async fn serve(mut incoming: Incoming, metrics: Arc<Metrics>, index: Arc<Index>, clock: crate::clock::Clock) {
    use http_body_util::Full;
    use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
    use tokio_stream::StreamExt;

    while let Some(accepted) = incoming.next().await {
        let Ok(stream) = accepted else { continue };
        let (metrics, index, clock, spoke) = (metrics.clone(), index.clone(), clock.clone(), stream.spoke());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (metrics, index, clock) = (metrics.clone(), index.clone(), clock.clone());
                spoke.store(true, std::sync::atomic::Ordering::Relaxed);
                async move {
                    if req.uri().path() != "/metrics" {
                        return Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"not found\n")));
                    }
                    // Counting tokens by status walks the whole index.
                    let body = tokio::task::spawn_blocking(move || metrics.render(&index, clock.now()))
                        .await
                        .unwrap_or_else(|e| format!("# metrics rendering failed: {e}\n"));
                    Response::builder()
                        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                        .body(Full::new(Bytes::from(body)))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}
