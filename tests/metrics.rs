//! `GET /metrics` after real traffic: every counter moves by exactly what
//! was done.

mod common;

use common::*;
use tokend::pb;

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
