//! `tokend-client` against a real server: cached hits that answer what the
//! RPC would; revocations and a rotation's grace expiry pushed into the
//! cache; a restart's reset; resuming after a dropped connection without
//! losing a change; the bypass once the stream is silent past
//! max_staleness; the race between a miss and a change, forced; last-used
//! reports; and the tower layer over gRPC and plain HTTP.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{proxy::Proxy, *};
use tokend::pb::{self, verify_service_client::VerifyServiceClient, verify_service_server::VerifyServiceServer};
use tokend_client::{self as client, CacheOptions, CachedVerifier, RequireToken};
use tonic::{Code, Request, Response, Status, transport::Channel};

fn endpoint(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}")
}

async fn cached(addr: std::net::SocketAddr, options: CacheOptions) -> CachedVerifier {
    CachedVerifier::connect_with(&endpoint(addr), options).await.expect("connects")
}

/// Options with a short staleness bound and no use reports unless asked.
fn options() -> CacheOptions {
    CacheOptions { max_staleness: Duration::from_secs(2), record_use_interval: Duration::ZERO, ..Default::default() }
}

async fn heartbeat_server(adjust: impl FnOnce(&mut tokend::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.watch_heartbeat = Duration::from_millis(100);
        // The cache judges expiry by this machine's clock, so tokend uses it too.
        c.clock = tokend::clock::Clock::System;
        adjust(c);
    })
    .await
}

/// Waits until `done` holds, polling every millisecond, for at most `limit`;
/// returns how long it took.
async fn within(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    started.elapsed()
}

fn result(r: &client::VerifyResponse) -> client::VerifyResult {
    r.result()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_answer_what_the_rpc_answers() {
    let server = heartbeat_server(|_| {}).await;
    let mut admin = server.admin().await;
    let mut request = issue_request("svc", "team-a", &["read", "write"]);
    request.labels.insert("env".into(), "prod".into());
    request.ttl = Some(secs(3600));
    let issued = admin.issue(request).await.unwrap().into_inner();
    let secret = issued.secret.clone();
    let verifier = cached(server.addr, options()).await;
    let mut stub = server.verifier().await;

    let first = verifier.check(&secret, &["read"]).await.unwrap();
    let stats = verifier.stats();
    assert_eq!((stats.hits, stats.misses), (0, 1), "the first call asks tokend");
    let again = verifier.check(&format!("Bearer {secret}"), &["read", "write"]).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again), "a hit shares the cached answer");
    assert_eq!(verifier.stats().hits, 1);

    // Every kind of request, from the cache and from the RPC: the same answer.
    let never_issued = tokend::token::Secret::generate("tk");
    let unknown = never_issued.expose();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (secret.clone(), vec![]),
        (secret.clone(), vec!["read"]),
        (format!("access_token {secret}"), vec!["write", "read"]),
        (secret.clone(), vec!["admin"]),
        (secret[..secret.len() - 1].to_owned(), vec![]),
        ("Basic abc".into(), vec![]),
        (unknown.into(), vec![]),
    ];
    for (token, scopes) in cases {
        let local = verifier
            .verify(client::VerifyRequest {
                token: token.clone(),
                required_scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .await
            .unwrap();
        let remote = verify(&mut stub, &token, &scopes).await;
        assert_eq!(local.valid, remote.valid, "{scopes:?}");
        assert_eq!(local.result, remote.result, "{scopes:?}");
        assert_eq!(local.token_id, remote.token_id);
        assert_eq!(local.owner, remote.owner);
        assert_eq!(local.scopes, remote.scopes);
        assert_eq!(local.labels, remote.labels);
        assert_eq!(local.expire_time.map(|t| t.seconds), remote.expire_time.map(|t| t.seconds));
    }
    assert_eq!(result(&verifier.check(&secret, &["admin"]).await.unwrap()), client::VerifyResult::InsufficientScope);

    // A bad required scope is refused as the RPC refuses it.
    let bad = verifier.check(&secret, &["no spaces"]).await.unwrap_err();
    let rpc = stub
        .verify(pb::VerifyRequest {
            token: secret.clone(),
            required_scopes: vec!["no spaces".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!((bad.code(), bad.message()), (rpc.code(), rpc.message()));
    assert_eq!(bad.code(), Code::InvalidArgument);

    // Unknown tokens are never cached: every call asks. Malformed ones
    // never need to.
    let before = verifier.stats().misses;
    for _ in 0..3 {
        assert_eq!(result(&verifier.check(unknown, &[]).await.unwrap()), client::VerifyResult::Unknown);
        assert_eq!(result(&verifier.check("tk_typo", &[]).await.unwrap()), client::VerifyResult::Malformed);
    }
    assert_eq!(verifier.stats().misses, before + 3);
}

/// A server with one token issued, and a cached verifier on it.
async fn one_token() -> (TestServer, AdminClient, pb::IssueResponse, CachedVerifier) {
    let server = heartbeat_server(|_| {}).await;
    let mut admin = server.admin().await;
    let issued = issue(&mut admin, "svc", "team", &[]).await;
    let verifier = cached(server.addr, options()).await;
    (server, admin, issued, verifier)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_rejected_by_the_cache_within_100_ms() {
    let (_server, mut admin, issued, verifier) = one_token().await;
    for _ in 0..3 {
        assert!(verifier.check(&issued.secret, &[]).await.unwrap().valid);
    }
    assert_eq!(verifier.stats().hits, 2);

    admin.revoke(pb::RevokeRequest { id: issued.token.unwrap().id, reason: "leaked".into() }).await.unwrap();
    let took =
        within(Duration::from_millis(100), async || !verifier.check(&issued.secret, &[]).await.unwrap().valid).await;
    let answer = verifier.check(&issued.secret, &[]).await.unwrap();
    assert_eq!(result(&answer), client::VerifyResult::Revoked, "rejected after {took:?}");
    assert_eq!(verifier.stats().invalidations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotations_grace_expiry_is_pushed_and_kept() {
    let (_server, mut admin, issued, verifier) = one_token().await;
    let cached_answer = verifier.check(&issued.secret, &[]).await.unwrap();
    assert!(cached_answer.valid && cached_answer.expire_time.is_none());

    let grace = Duration::from_millis(1_500);
    let rotated = admin
        .rotate(pb::RotateRequest {
            id: issued.token.unwrap().id,
            grace_period: Some(prost_types::Duration { seconds: 1, nanos: 500_000_000 }),
        })
        .await
        .unwrap()
        .into_inner();
    let rotated_at = Instant::now();
    // Two changes: the new token, and the old one's new expiry.
    within(Duration::from_millis(100), async || verifier.stats().invalidations >= 2).await;
    // Still valid in the grace period, now with the expiry tokend gave it.
    let during = verifier.check(&issued.secret, &[]).await.unwrap();
    assert!(during.valid && during.expire_time.is_some(), "{during:?}");
    let hits = verifier.stats().hits;
    assert!(verifier.check(&issued.secret, &[]).await.unwrap().valid);
    assert_eq!(verifier.stats().hits, hits + 1, "cached again, with its new expiry");
    assert!(verifier.check(&rotated.secret, &[]).await.unwrap().valid);

    tokio::time::sleep(grace.saturating_sub(rotated_at.elapsed()) + Duration::from_millis(50)).await;
    let after = verifier.check(&issued.secret, &[]).await.unwrap();
    assert_eq!(result(&after), client::VerifyResult::Expired);
    assert!(verifier.check(&rotated.secret, &[]).await.unwrap().valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resets_the_cache_and_answers_stay_correct() {
    let server = heartbeat_server(|_| {}).await;
    let (addr, admin_token) = (server.addr, server.admin_token.clone());
    let mut admin = server.admin().await;
    let kept = issue(&mut admin, "kept", "team", &[]).await;
    let revoked = issue(&mut admin, "revoked", "team", &[]).await;
    let verifier = cached(addr, options()).await;
    assert!(verifier.check(&kept.secret, &[]).await.unwrap().valid);
    assert!(verifier.check(&revoked.secret, &[]).await.unwrap().valid);
    let resets = verifier.stats().resets;

    // While the cache's server is down, another process revokes a token it
    // holds: that change was never on the stream the cache followed.
    let dir = server.stop().await;
    let config = || {
        let mut config = tokend::Config::new(dir.path());
        config.clock = tokend::clock::Clock::manual(START);
        config.fsync = false;
        config.watch_heartbeat = Duration::from_millis(100);
        config
    };
    let other = TestServer::start_in(dir.clone(), config(), admin_token.clone()).await;
    let id = revoked.token.unwrap().id;
    other.admin().await.revoke(pb::RevokeRequest { id, reason: "x".into() }).await.unwrap();
    other.stop().await;

    let _restarted = TestServer::start_on(addr, dir.clone(), config(), admin_token).await;
    within(Duration::from_secs(5), async || verifier.stats().resets > resets).await;
    assert_eq!(result(&verifier.check(&revoked.secret, &[]).await.unwrap()), client::VerifyResult::Revoked);
    assert!(verifier.check(&kept.secret, &[]).await.unwrap().valid);
    let hits = verifier.stats().hits;
    assert!(verifier.check(&kept.secret, &[]).await.unwrap().valid);
    assert_eq!(verifier.stats().hits, hits + 1, "caching again after the reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_without_losing_a_change() {
    let server = heartbeat_server(|_| {}).await;
    let mut admin = server.admin().await;
    let a = issue(&mut admin, "a", "team", &[]).await;
    let b = issue(&mut admin, "b", "team", &[]).await;
    let proxy = Proxy::start(server.addr).await;
    let verifier = cached(proxy.addr, options()).await;
    assert!(verifier.check(&a.secret, &[]).await.unwrap().valid);
    assert!(verifier.check(&b.secret, &[]).await.unwrap().valid);
    let before = verifier.stats();

    // The change is made while the stream cannot carry it, then the
    // connection drops.
    proxy.forward(false);
    admin.revoke(pb::RevokeRequest { id: a.token.unwrap().id, reason: "x".into() }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.sever();
    proxy.forward(true);

    within(Duration::from_secs(5), async || verifier.stats().invalidations > before.invalidations).await;
    let after = verifier.stats();
    assert_eq!(after.resets, before.resets, "resumed, not reset");
    assert_eq!(result(&verifier.check(&a.secret, &[]).await.unwrap()), client::VerifyResult::Revoked);
    assert!(verifier.check(&b.secret, &[]).await.unwrap().valid);
    assert_eq!(verifier.stats().hits, after.hits + 1, "b stayed cached across the reconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokend_gone_the_cache_is_bypassed_after_max_staleness() {
    let server = heartbeat_server(|_| {}).await;
    let mut admin = server.admin().await;
    let issued = issue(&mut admin, "svc", "team", &[]).await;
    let max_staleness = Duration::from_millis(400);
    let verifier = cached(server.addr, CacheOptions { max_staleness, ..options() }).await;
    assert!(verifier.check(&issued.secret, &[]).await.unwrap().valid);
    assert!(verifier.stats().staleness.unwrap() < max_staleness);

    server.stop().await;
    let stopped = Instant::now();
    // Within the bound the cache may still answer; past it, never.
    within(Duration::from_secs(2), async || verifier.check(&issued.secret, &[]).await.is_err()).await;
    assert!(stopped.elapsed() >= max_staleness.saturating_sub(Duration::from_millis(150)));
    let err = verifier.check(&issued.secret, &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let err = verifier.verify(client::VerifyRequest { token: issued.secret.clone(), ..Default::default() }).await;
    assert_eq!(err.unwrap_err().code(), Code::Unavailable);
    // The layer fails closed too.
    let handler = tower::service_fn(async |_: http::Request<String>| {
        Ok::<_, std::convert::Infallible>(http::Response::new("served".to_owned()))
    });
    let guarded = tower::Layer::layer(&RequireToken::new(verifier.clone(), Vec::<String>::new()), handler);
    let request = http::Request::builder().header("authorization", format!("Bearer {}", issued.secret));
    let response = tower::ServiceExt::oneshot(guarded, request.body(String::new()).unwrap()).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(verifier.stats().staleness.unwrap() > max_staleness);
}

/// A VerifyService in front of the real one whose Verify, once armed, holds
/// its (real) answer until the test releases it.
struct Holding {
    upstream: VerifyServiceClient<Channel>,
    armed: tokio::sync::Mutex<Option<(tokio::sync::oneshot::Sender<()>, tokio::sync::oneshot::Receiver<()>)>>,
}

#[tonic::async_trait]
impl pb::verify_service_server::VerifyService for Holding {
    type WatchStream = tonic::Streaming<pb::WatchResponse>;

    async fn verify(&self, request: Request<pb::VerifyRequest>) -> Result<Response<pb::VerifyResponse>, Status> {
        let answer = self.upstream.clone().verify(request.into_inner()).await?;
        if let Some((answered, release)) = self.armed.lock().await.take() {
            answered.send(()).unwrap();
            release.await.unwrap();
        }
        Ok(answer)
    }

    async fn record_use(
        &self,
        request: Request<pb::RecordUseRequest>,
    ) -> Result<Response<pb::RecordUseResponse>, Status> {
        self.upstream.clone().record_use(request.into_inner()).await
    }

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        self.upstream.clone().watch(request.into_inner()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_during_a_miss_keeps_its_answer_out_of_the_cache() {
    let server = heartbeat_server(|_| {}).await;
    let mut admin = server.admin().await;
    let issued = issue(&mut admin, "svc", "team", &[]).await;
    let (answered_tx, answered) = tokio::sync::oneshot::channel();
    let (release, release_rx) = tokio::sync::oneshot::channel();
    let holding =
        Holding { upstream: server.verifier().await, armed: tokio::sync::Mutex::new(Some((answered_tx, release_rx))) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(VerifyServiceServer::new(holding))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let verifier = cached(front, options()).await;

    // The miss: tokend says valid, and the answer is held on its way back…
    let miss = tokio::spawn({
        let (verifier, secret) = (verifier.clone(), issued.secret.clone());
        async move { verifier.check(&secret, &[]).await }
    });
    answered.await.unwrap();
    // …while the token is revoked and the change reaches the cache.
    let invalidations = verifier.stats().invalidations;
    admin.revoke(pb::RevokeRequest { id: issued.token.unwrap().id, reason: "x".into() }).await.unwrap();
    within(Duration::from_secs(2), async || verifier.stats().invalidations > invalidations).await;
    release.send(()).unwrap();

    // The caller gets the answer it asked for (valid when tokend gave it)…
    assert!(miss.await.unwrap().unwrap().valid);
    // …but it was not cached: the next call asks again and hears "revoked".
    let misses = verifier.stats().misses;
    assert_eq!(result(&verifier.check(&issued.secret, &[]).await.unwrap()), client::VerifyResult::Revoked);
    assert_eq!(verifier.stats().misses, misses + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_uses_are_reported_as_last_used() {
    let server = heartbeat_server(|c| {
        c.last_used_flush_interval = Duration::from_millis(50);
        c.clock = tokend::clock::Clock::manual(START);
    })
    .await;
    let mut admin = server.admin().await;
    let issued = issue(&mut admin, "svc", "team", &[]).await;
    let id = issued.token.unwrap().id;
    let interval = Duration::from_millis(200);
    let verifier = cached(server.addr, CacheOptions { record_use_interval: interval, ..options() }).await;
    assert!(verifier.check(&issued.secret, &[]).await.unwrap().valid, "the miss: tokend records this use itself");

    let last_used = async |admin: &mut AdminClient| {
        let token = admin.get(pb::GetRequest { id: id.clone() }).await.unwrap().into_inner().token.unwrap();
        token.last_used_time.map(|t| t.seconds)
    };
    let first = last_used(&mut admin).await.expect("used once");
    server.clock.advance(Duration::from_secs(3600));
    tokio::time::sleep(interval + Duration::from_millis(20)).await;
    let hits = verifier.stats().hits;
    assert!(verifier.check(&issued.secret, &[]).await.unwrap().valid);
    assert_eq!(verifier.stats().hits, hits + 1, "answered from the cache");
    within(Duration::from_secs(3), async || last_used(&mut admin).await == Some(first + 3600)).await;
}

/// A token with `scopes`, its secret.
async fn token_with(admin: &mut AdminClient, scopes: &[&str]) -> String {
    issue(admin, "svc", "team-a", scopes).await.secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_guards_a_grpc_service() {
    let server = heartbeat_server(|_| {}).await;
    let mut admin = server.admin().await;
    let (good, unscoped) = (token_with(&mut admin, &["health:read"]).await, token_with(&mut admin, &[]).await);
    let verifier = cached(server.addr, options()).await;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(RequireToken::new(verifier.clone(), ["health:read"]))
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = Channel::from_shared(endpoint(addr)).unwrap().connect().await.unwrap();
    let check = async |authorization: Option<&str>| {
        let mut request = Request::new(tonic_health::pb::HealthCheckRequest { service: String::new() });
        if let Some(value) = authorization {
            request.metadata_mut().insert("authorization", value.parse().unwrap());
        }
        tonic_health::pb::health_client::HealthClient::new(channel.clone()).check(request).await
    };
    assert!(check(Some(&format!("Bearer {good}"))).await.is_ok());
    assert!(check(Some(&format!("access_token {good}"))).await.is_ok());
    assert_eq!(check(None).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(check(Some("Bearer nonsense")).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(check(Some(&format!("Bearer {unscoped}"))).await.unwrap_err().code(), Code::PermissionDenied);
    assert!(verifier.stats().hits >= 1, "the layer verified through the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_guards_a_plain_http_service() {
    use tower::{Layer, ServiceExt};

    let server = heartbeat_server(|_| {}).await;
    let mut admin = server.admin().await;
    let (good, unscoped) = (token_with(&mut admin, &["read"]).await, token_with(&mut admin, &[]).await);
    let revoked = issue(&mut admin, "gone", "team", &["read"]).await;
    admin.revoke(pb::RevokeRequest { id: revoked.token.unwrap().id, reason: "x".into() }).await.unwrap();
    let verifier = cached(server.addr, options()).await;
    // The handler answers with the owner the layer put into the extensions.
    let handler = tower::service_fn(async |request: http::Request<String>| {
        let token = request.extensions().get::<Arc<client::VerifyResponse>>().expect("the layer's answer");
        Ok::<_, std::convert::Infallible>(http::Response::new(token.owner.clone()))
    });
    let guarded = RequireToken::new(verifier, ["read"]).layer(handler);
    let call = async |authorization: Option<&str>| {
        let mut request = http::Request::builder().uri("/things");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        guarded.clone().oneshot(request.body(String::new()).unwrap()).await.unwrap()
    };
    let ok = call(Some(&format!("Bearer {good}"))).await;
    assert_eq!((ok.status(), ok.body().as_str()), (http::StatusCode::OK, "team-a"));
    for refused in [None, Some("Bearer nonsense".to_owned()), Some(format!("Bearer {}", revoked.secret))] {
        let response = call(refused.as_deref()).await;
        assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED, "{refused:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    let forbidden = call(Some(&format!("Bearer {unscoped}"))).await;
    assert_eq!(forbidden.status(), http::StatusCode::FORBIDDEN);
    assert!(forbidden.headers()["www-authenticate"].to_str().unwrap().contains("insufficient_scope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_fails_clearly_and_the_verifier_is_shareable() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<CachedVerifier>();
    shareable::<RequireToken>();

    let err = CachedVerifier::connect("not a uri at all").await.err().expect("refused");
    assert!(matches!(err, client::Error::Endpoint { .. }), "{err}");
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let options = CacheOptions { connect_timeout: Duration::from_secs(2), ..options() };
    let err = CachedVerifier::connect_with(&endpoint(closed), options).await.err().expect("unreachable");
    let text = err.to_string();
    assert!(matches!(err, client::Error::Connect { .. }) && text.contains(&closed.to_string()), "{text}");
    let _: &dyn std::error::Error = &err;
}

/// Answers given for a client address are not cached: a token with an
/// allowlist is asked about on every call and answered for that address,
/// and a token cached from a call without one answers any address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_for_a_client_address_are_not_cached() {
    let server = heartbeat_server(|_| {}).await;
    let mut admin = server.admin().await;
    let listed = pb::IssueRequest { allowed_cidrs: vec!["10.0.0.0/8".into()], ..issue_request("net", "o", &[]) };
    let listed = admin.issue(listed).await.unwrap().into_inner().secret;
    let open = issue(&mut admin, "open", "o", &[]).await.secret;
    let verifier = cached(server.addr, options()).await;
    let from = |token: &str, ip: &str| client::VerifyRequest {
        token: token.into(),
        client_ip: ip.into(),
        ..Default::default()
    };

    for _ in 0..2 {
        assert!(verifier.verify(from(&listed, "10.1.2.3")).await.unwrap().valid);
    }
    assert_eq!(verifier.stats().hits, 0, "an answer for one address is never reused");
    let elsewhere = verifier.verify(from(&listed, "11.1.2.3")).await.unwrap();
    assert_eq!(result(&elsewhere), client::VerifyResult::IpNotAllowed);
    assert_eq!(result(&verifier.check(&listed, &[]).await.unwrap()), client::VerifyResult::IpNotAllowed);

    assert!(verifier.check(&open, &[]).await.unwrap().valid);
    let misses = verifier.stats().misses;
    assert!(verifier.verify(from(&open, "203.0.113.9")).await.unwrap().valid);
    assert_eq!((verifier.stats().hits, verifier.stats().misses), (1, misses), "valid from anywhere: a hit");
}
