//! `GET /metrics` after real traffic: every counter moves by exactly what
//! was done.

mod common;

use common::*;
use tokend::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(server: &TestServer, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(server.metrics_addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// The value of the series whose line starts with `series` (name and labels).
fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_the_traffic() {
    let server = TestServer::start().await;
    let (head, before) = scrape(&server, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("content-type: text/plain"), "{head}");
    assert!(before.contains("tokend_build_info{version=\""), "{before}");

    let mut admin = server.admin().await;
    let mut v = server.verifier().await;
    let issued = issue(&mut admin, "m", "o", &["a"]).await;
    admin.issue(issue_request("", "o", &[])).await.unwrap_err();
    let mut anonymous = pb::token_service_client::TokenServiceClient::new(server.channel().await);
    anonymous.list(pb::ListRequest::default()).await.unwrap_err();
    for _ in 0..3 {
        assert!(verify(&mut v, &issued.secret, &["a"]).await.valid);
    }
    verify(&mut v, "garbage", &[]).await;
    verify(&mut v, "garbage", &[]).await;
    verify(&mut v, &issued.secret, &["b"]).await;
    let id = issued.token.unwrap().id;
    admin.revoke(pb::RevokeRequest { id, reason: String::new() }).await.unwrap();

    let (_, after) = scrape(&server, "/metrics").await;
    let delta = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(delta(r#"tokend_verify_total{result="ok"}"#), 3.0, "{after}");
    assert_eq!(delta(r#"tokend_verify_total{result="malformed"}"#), 2.0);
    assert_eq!(delta(r#"tokend_verify_total{result="insufficient_scope"}"#), 1.0);
    assert_eq!(delta(r#"tokend_verify_total{result="revoked"}"#), 0.0);
    assert_eq!(delta(r#"tokend_admin_requests_total{rpc="Issue",code="OK"}"#), 1.0);
    assert_eq!(delta(r#"tokend_admin_requests_total{rpc="Issue",code="INVALID_ARGUMENT"}"#), 1.0);
    assert_eq!(delta(r#"tokend_admin_requests_total{rpc="List",code="UNAUTHENTICATED"}"#), 1.0);
    assert_eq!(delta(r#"tokend_admin_requests_total{rpc="Revoke",code="OK"}"#), 1.0);
    assert_eq!(delta(r#"tokend_request_duration_seconds_count{rpc="Verify"}"#), 6.0);
    assert_eq!(delta(r#"tokend_request_duration_seconds_count{rpc="Issue"}"#), 2.0);
    // The bootstrap admin token is active; ours was revoked.
    assert_eq!(value(&after, r#"tokend_tokens{status="active"}"#), 1.0);
    assert_eq!(value(&after, r#"tokend_tokens{status="revoked"}"#), 1.0);
    assert!(delta("tokend_store_flush_duration_seconds_count") >= 1.0, "durable writes flushed");

    let (head, _) = scrape(&server, "/other").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}
