//! Issue → Verify over gRPC: every VerifyResult, header forms, scopes,
//! expiry with a manual clock, and last-used times.

mod common;

use std::time::Duration;

use common::*;
use tokend::pb::{self, VerifyResult};

#[tokio::test]
async fn a_valid_token_verifies_with_its_owner_scopes_and_labels() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut request = issue_request("billing-ci", "team-billing", &["invoices:read", "invoices:write"]);
    request.labels.insert("env".into(), "prod".into());
    request.ttl = Some(secs(3600));
    let issued = admin.issue(request).await.unwrap().into_inner();
    let token = issued.token.unwrap();
    assert!(issued.secret.starts_with("tk_"));
    assert_eq!(issued.secret.len(), 3 + 43 + 6);

    let mut v = server.verifier().await;
    for presented in [
        issued.secret.clone(),
        format!("Bearer {}", issued.secret),
        format!("bearer   {}  ", issued.secret),
        format!("ACCESS_TOKEN {}", issued.secret),
        format!("\t{}\n", issued.secret),
    ] {
        let r = verify(&mut v, &presented, &["invoices:read"]).await;
        assert!(r.valid, "{presented:?}");
        assert_eq!(result(&r), VerifyResult::Ok);
        assert_eq!(r.token_id, token.id);
        assert_eq!(r.owner, "team-billing");
        assert_eq!(r.scopes, vec!["invoices:read", "invoices:write"]);
        assert_eq!(r.labels.get("env").map(String::as_str), Some("prod"));
        assert_eq!(r.expire_time, token.expire_time);
    }
    let r = verify(&mut v, &issued.secret, &[]).await;
    assert!(r.valid);
}

#[tokio::test]
async fn invalid_tokens_are_ok_rpcs_with_a_reason_and_no_details() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let issued = issue(&mut admin, "n", "o", &["a"]).await;
    let id = issued.token.unwrap().id;
    let mut v = server.verifier().await;

    let r = verify(&mut v, &issued.secret, &["a", "b"]).await;
    assert!(!r.valid);
    assert_eq!(result(&r), VerifyResult::InsufficientScope);
    assert_eq!(r.token_id, id);
    assert!(r.owner.is_empty() && r.scopes.is_empty() && r.labels.is_empty() && r.expire_time.is_none());

    for malformed in ["", "garbage", &issued.secret[..issued.secret.len() - 1], &format!("Basic {}", issued.secret)] {
        let r = verify(&mut v, malformed, &[]).await;
        assert_eq!(result(&r), VerifyResult::Malformed, "{malformed:?}");
        assert!(!r.valid && r.token_id.is_empty() && r.owner.is_empty());
    }
    // Well-formed (right checksum) but never issued.
    let unknown = tokend::token::Secret::generate("tk");
    let r = verify(&mut v, unknown.expose(), &[]).await;
    assert_eq!(result(&r), VerifyResult::Unknown);
    assert!(!r.valid && r.token_id.is_empty());
    // Tokens with another prefix verify by their hash like any other.
    let other = tokend::token::Secret::generate("acme");
    assert_eq!(result(&verify(&mut v, other.expose(), &[]).await), VerifyResult::Unknown);
}

#[tokio::test]
async fn a_token_expires_at_its_ttl() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut request = issue_request("n", "o", &[]);
    request.ttl = Some(secs(60));
    let issued = admin.issue(request).await.unwrap().into_inner();
    let token = issued.token.unwrap();
    let create = token.create_time.unwrap();
    assert_eq!(token.expire_time.unwrap().seconds, create.seconds + 60);
    let mut v = server.verifier().await;

    server.clock.advance(Duration::from_secs(59));
    assert_eq!(result(&verify(&mut v, &issued.secret, &[]).await), VerifyResult::Ok);
    server.clock.advance(Duration::from_secs(1));
    let r = verify(&mut v, &issued.secret, &[]).await;
    assert_eq!(result(&r), VerifyResult::Expired);
    assert!(!r.valid);
    assert_eq!(r.token_id, token.id);
    let got = admin.get(pb::GetRequest { id: token.id }).await.unwrap().into_inner().token.unwrap();
    assert_eq!(status(&got), pb::TokenStatus::Expired);
}

#[tokio::test]
async fn a_token_without_ttl_never_expires() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut request = issue_request("n", "o", &[]);
    request.ttl = Some(secs(0));
    let issued = admin.issue(request).await.unwrap().into_inner();
    assert!(issued.token.as_ref().unwrap().expire_time.is_none());
    server.clock.advance(Duration::from_secs(200 * 365 * 86_400));
    let mut v = server.verifier().await;
    assert_eq!(result(&verify(&mut v, &issued.secret, &[]).await), VerifyResult::Ok);
}

#[tokio::test]
async fn last_used_time_is_recorded_by_valid_verifications_only() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let issued = issue(&mut admin, "n", "o", &["a"]).await;
    let id = issued.token.as_ref().unwrap().id.clone();
    assert!(issued.token.unwrap().last_used_time.is_none());
    let mut v = server.verifier().await;

    // A failed verification is not a use.
    verify(&mut v, &issued.secret, &["missing"]).await;
    let got = admin.get(pb::GetRequest { id: id.clone() }).await.unwrap().into_inner().token.unwrap();
    assert!(got.last_used_time.is_none());

    server.clock.advance(Duration::from_secs(10));
    verify(&mut v, &issued.secret, &["a"]).await;
    let got = admin.get(pb::GetRequest { id: id.clone() }).await.unwrap().into_inner().token.unwrap();
    let first = got.last_used_time.unwrap();
    assert_eq!(first.seconds, got.create_time.unwrap().seconds + 10);

    server.clock.advance(Duration::from_secs(30));
    verify(&mut v, &issued.secret, &[]).await;
    let got = admin.get(pb::GetRequest { id }).await.unwrap().into_inner().token.unwrap();
    assert_eq!(got.last_used_time.unwrap().seconds, first.seconds + 30);
}

#[tokio::test]
async fn verify_rejects_unreasonable_required_scopes() {
    let server = TestServer::start().await;
    let mut v = server.verifier().await;
    let too_many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
    let err = v.verify(pb::VerifyRequest { token: "x".into(), required_scopes: too_many }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("required_scopes"), "{}", err.message());
    let err = v
        .verify(pb::VerifyRequest { token: "x".into(), required_scopes: vec!["ok".into(), "not ok".into()] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("required_scopes[1]"), "{}", err.message());
}
