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
    let err = v
        .verify(pb::VerifyRequest { token: "x".into(), required_scopes: too_many, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("required_scopes"), "{}", err.message());
    let err = v
        .verify(pb::VerifyRequest {
            token: "x".into(),
            required_scopes: vec!["ok".into(), "not ok".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("required_scopes[1]"), "{}", err.message());
}

/// The documented hash a sibling computes for RecordUse: blake3 derive_key
/// with tokend's context, over the token's text.
fn use_hash(secret: &str) -> Vec<u8> {
    blake3::derive_key("tokend 2026-11-22 api token hash v1", secret.as_bytes()).to_vec()
}

#[tokio::test]
async fn record_use_sets_last_used_for_active_tokens_named_by_hash() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let used = issue(&mut admin, "used", "team", &[]).await;
    let idle = issue(&mut admin, "idle", "team", &[]).await;
    let revoked = issue(&mut admin, "revoked", "team", &[]).await;
    let revoked_id = revoked.token.as_ref().unwrap().id.clone();
    admin.revoke(pb::RevokeRequest { id: revoked_id.clone(), reason: "gone".into() }).await.unwrap();
    server.clock.advance(Duration::from_secs(60));

    let mut v = server.verifier().await;
    let request =
        pb::RecordUseRequest { token_hashes: vec![use_hash(&used.secret), use_hash(&revoked.secret), vec![7; 32]] };
    let answer = v.record_use(request).await.expect("RecordUse succeeds").into_inner();
    assert_eq!(answer.recorded, 1, "only the known, active token is recorded");
    let get = |id: &str| {
        let mut admin = admin.clone();
        let id = id.to_owned();
        async move { admin.get(pb::GetRequest { id }).await.unwrap().into_inner().token.unwrap() }
    };
    let expected = prost_types::Timestamp { seconds: START.0 / 1_000_000_000 + 60, nanos: 0 };
    assert_eq!(get(&used.token.as_ref().unwrap().id).await.last_used_time, Some(expected));
    assert_eq!(get(&idle.token.as_ref().unwrap().id).await.last_used_time, None);
    assert_eq!(get(&revoked_id).await.last_used_time, None);
}

#[tokio::test]
async fn record_use_refuses_malformed_hashes_and_oversize_batches_naming_the_field() {
    let server = TestServer::start().await;
    let mut v = server.verifier().await;
    let bad = v.record_use(pb::RecordUseRequest { token_hashes: vec![vec![0; 32], vec![0; 31]] }).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("token_hashes[1]"), "{bad:?}");
    let many = v.record_use(pb::RecordUseRequest { token_hashes: vec![vec![0; 32]; 1_001] }).await.unwrap_err();
    assert_eq!(many.code(), tonic::Code::InvalidArgument);
    assert!(many.message().contains("token_hashes"), "{many:?}");
    let fine = v.record_use(pb::RecordUseRequest { token_hashes: vec![vec![0; 32]; 1_000] }).await.unwrap();
    assert_eq!(fine.into_inner().recorded, 0);
}
