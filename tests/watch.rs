//! `VerifyService.Watch` against a real server: the first message at once
//! with a reset, heartbeats, revocations and rotations pushed within 100 ms,
//! resuming after a dropped stream without losing a change, resets for
//! unknown positions and after a restart, and streams ended at shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokend::pb::{self, TokenStatus, WatchResponse};
use tonic::Streaming;

async fn watch(server: &TestServer, resume_token: &str) -> Streaming<WatchResponse> {
    let mut client = server.verifier().await;
    client.watch(pb::WatchRequest { resume_token: resume_token.into() }).await.expect("Watch starts").into_inner()
}

/// The next message, within `limit`.
async fn next(stream: &mut Streaming<WatchResponse>, limit: Duration) -> WatchResponse {
    tokio::time::timeout(limit, stream.message())
        .await
        .expect("a message in time")
        .expect("the stream is healthy")
        .expect("the stream is open")
}

/// Messages until one carries changes (heartbeats skipped), within `limit`.
async fn next_changes(stream: &mut Streaming<WatchResponse>, limit: Duration) -> WatchResponse {
    let deadline = Instant::now() + limit;
    loop {
        let m = next(stream, deadline.saturating_duration_since(Instant::now())).await;
        if !m.changes.is_empty() {
            return m;
        }
    }
}

async fn heartbeat_server() -> TestServer {
    TestServer::start_with(|c| c.watch_heartbeat = Duration::from_millis(200)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_message_comes_at_once_with_a_reset_then_heartbeats_hold_the_position() {
    let server = heartbeat_server().await;
    let mut stream = watch(&server, "").await;
    let first = next(&mut stream, Duration::from_millis(100)).await;
    assert!(first.reset && first.changes.is_empty() && !first.resume_token.is_empty(), "{first:?}");
    for _ in 0..3 {
        let started = Instant::now();
        let beat = next(&mut stream, Duration::from_secs(1)).await;
        assert!(started.elapsed() < Duration::from_millis(400), "heartbeat after {:?}", started.elapsed());
        assert!(!beat.reset && beat.changes.is_empty());
        assert_eq!(beat.resume_token, first.resume_token, "no change, same position");
    }
    // A position this server never gave out is a reset too.
    let long = "z".repeat(10_000);
    for unknown in ["nonsense", "00000000000000000000000000000000", long.as_str()] {
        let m = next(&mut watch(&server, unknown).await, Duration::from_millis(100)).await;
        assert!(m.reset, "{unknown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_and_rotations_reach_every_watcher_within_100_ms() {
    let server = heartbeat_server().await;
    let mut admin = server.admin().await;
    let revoked = issue(&mut admin, "r", "team", &[]).await;
    let rotated = issue(&mut admin, "o", "team", &[]).await;
    let mut watchers = [watch(&server, "").await, watch(&server, "").await];
    for w in &mut watchers {
        next(w, Duration::from_millis(100)).await;
    }

    let id = revoked.token.unwrap().id;
    let started = Instant::now();
    admin.revoke(pb::RevokeRequest { id: id.clone(), reason: "leaked".into() }).await.unwrap();
    let acknowledged = started.elapsed();
    for w in &mut watchers {
        let m = next_changes(w, Duration::from_millis(100)).await;
        assert!(started.elapsed() - acknowledged < Duration::from_millis(100));
        assert_eq!(m.changes.len(), 1);
        assert_eq!((m.changes[0].token_id.as_str(), m.changes[0].status()), (id.as_str(), TokenStatus::Revoked));
    }

    // A rotation with grace: the old token stays ACTIVE with a new expiry.
    let old = rotated.token.unwrap().id;
    let rotation =
        admin.rotate(pb::RotateRequest { id: old.clone(), grace_period: Some(secs(300)) }).await.unwrap().into_inner();
    for w in &mut watchers {
        let m = next_changes(w, Duration::from_millis(100)).await;
        let change = m.changes.iter().find(|c| c.token_id == old).expect("the old token is sent");
        assert_eq!(change.status(), TokenStatus::Active);
        let expire = change.expire_time.as_ref().expect("the grace gives it an expiry");
        assert_eq!(expire.seconds, START.0 / 1_000_000_000 + 300);
        let new_id = &rotation.token.as_ref().unwrap().id;
        assert!(m.changes.iter().all(|c| c.token_id == old || &c.token_id == new_id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_resumes_without_losing_a_change_and_a_restart_resets() {
    let server = heartbeat_server().await;
    let mut admin = server.admin().await;
    let mut stream = watch(&server, "").await;
    let position = next(&mut stream, Duration::from_millis(100)).await.resume_token;
    drop(stream);
    let mut ids = Vec::new();
    for i in 0..5 {
        let t = issue(&mut admin, &format!("t{i}"), "team", &[]).await;
        ids.push(t.token.unwrap().id);
    }
    admin.revoke(pb::RevokeRequest { id: ids[2].clone(), reason: "x".into() }).await.unwrap();

    let mut resumed = watch(&server, &position).await;
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let m = next(&mut resumed, Duration::from_millis(500)).await;
        assert!(!m.reset, "a position from this process resumes");
        seen.extend(m.changes.into_iter().map(|c| (c.token_id.clone(), c.status())));
    }
    let mut want: Vec<_> = ids.iter().map(|id| (id.clone(), TokenStatus::Active)).collect();
    want.push((ids[2].clone(), TokenStatus::Revoked));
    assert_eq!(seen, want, "every change, in order");
    let latest = next(&mut resumed, Duration::from_secs(1)).await.resume_token;

    // Another process: the position means nothing there.
    let (dir, token) = (server.stop().await, latest);
    let mut config = tokend::Config::new(dir.path());
    config.clock = tokend::clock::Clock::manual(START);
    config.fsync = false;
    let restarted = TestServer::start_in(dir, config, String::new()).await;
    let m = next(&mut watch(&restarted, &token).await, Duration::from_millis(100)).await;
    assert!(m.reset, "after a restart the server answers reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_watch_streams_at_once() {
    let server = heartbeat_server().await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = watch(&server, "").await;
        next(&mut s, Duration::from_millis(100)).await;
        streams.push(s);
    }
    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "open Watch streams held up the drain: {:?}",
        started.elapsed()
    );
    for mut s in streams {
        let end = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match s.message().await {
                    Ok(Some(_)) => continue,
                    other => return other.map(|_| ()),
                }
            }
        })
        .await;
        assert!(end.is_ok(), "the stream did not end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_dropped_not_buffered_for() {
    let heartbeat = Duration::from_millis(50);
    let server = TestServer::start_with(|c| c.watch_heartbeat = heartbeat).await;
    // A 1 KiB stream window: some 20 heartbeats fill it, then the server's
    // queue fills, then the watcher counts as not reading.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let mut client = pb::verify_service_client::VerifyServiceClient::new(channel);
    let mut stream = client.watch(pb::WatchRequest::default()).await.unwrap().into_inner();
    next(&mut stream, Duration::from_millis(100)).await;
    // Not reading: window (~1 s of heartbeats) + queue + 10 intervals.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // What was sent before the drop is still delivered, then the stream
    // ends; a watcher kept alive would get heartbeats for ever.
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        let mut delivered = 0;
        while let Ok(Some(_)) = stream.message().await {
            delivered += 1;
        }
        delivered
    })
    .await
    .expect("the stream of a watcher that stopped reading was not ended");
    assert!(ended < 60, "{ended} messages were buffered for a watcher that did not read");
}
