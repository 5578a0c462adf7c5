//! TokenService over gRPC: every RPC, every error code, pagination, quotas
//! and input validation.

mod common;

use std::{collections::HashSet, time::Duration};

use common::*;
use tokend::pb::{self, TokenStatus, VerifyResult};
use tonic::Code;

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let s = r.expect_err("call must fail");
    (s.code(), s.message().to_owned())
}

async fn count_tokens(admin: &mut AdminClient) -> usize {
    list_all(admin, pb::ListRequest::default()).await.len()
}

#[tokio::test]
async fn issue_returns_the_secret_once_and_metadata_without_it() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut req = issue_request("deploy-bot", "team-a", &["deploy", "deploy", "read"]);
    req.labels.insert("env".into(), "staging".into());
    req.ttl = Some(secs(86_400));
    let issued = admin.issue(req).await.unwrap().into_inner();
    let t = issued.token.unwrap();
    assert_eq!(t.name, "deploy-bot");
    assert_eq!(t.owner, "team-a");
    assert_eq!(t.scopes, vec!["deploy", "read"], "duplicates removed, order kept");
    assert_eq!(t.labels.get("env").map(String::as_str), Some("staging"));
    assert_eq!(status(&t), TokenStatus::Active);
    assert!(t.id.parse::<tokend::id::TokenId>().is_ok());
    assert!(t.create_time.is_some() && t.expire_time.is_some());
    assert!(t.last_used_time.is_none() && t.revoke_time.is_none());
    assert!(t.rotated_from.is_empty() && t.rotated_to.is_empty());
    // The hint identifies the token without revealing it.
    assert!(issued.secret.starts_with(t.hint.split('…').next().unwrap()));
    assert!(issued.secret.ends_with(t.hint.split('…').nth(1).unwrap()));
    assert!(t.hint.len() < 20);

    let got = admin.get(pb::GetRequest { id: t.id.clone() }).await.unwrap().into_inner().token.unwrap();
    assert_eq!(got, t);
    let listed = format!("{:?}", admin.list(pb::ListRequest::default()).await.unwrap().into_inner());
    assert!(!listed.contains(&issued.secret[3..]), "List never shows a secret");
}

#[tokio::test]
async fn get_errors() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let missing = tokend::id::IdGenerator::default().next(common::START).to_string();
    assert_eq!(code(admin.get(pb::GetRequest { id: missing }).await).0, Code::NotFound);
    for bad in ["", "42", "not-an-id", "0190b2c4-6a1f-4c3e-9d2b-1a2b3c4d5e6f"] {
        let (c, m) = code(admin.get(pb::GetRequest { id: bad.into() }).await);
        assert_eq!(c, Code::InvalidArgument, "{bad:?}");
        assert!(m.contains("id"), "{m}");
    }
}

#[tokio::test]
async fn revoke_is_immediate_and_idempotent() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut v = server.verifier().await;
    let issued = issue(&mut admin, "n", "o", &[]).await;
    let id = issued.token.unwrap().id;
    assert_eq!(result(&verify(&mut v, &issued.secret, &[]).await), VerifyResult::Ok);

    let revoked = admin
        .revoke(pb::RevokeRequest { id: id.clone(), reason: "leaked in CI log".into() })
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();
    assert_eq!(status(&revoked), TokenStatus::Revoked);
    assert_eq!(revoked.revoke_reason, "leaked in CI log");
    let first_time = revoked.revoke_time.unwrap();
    // Visible to Verify as soon as Revoke has answered.
    let r = verify(&mut v, &issued.secret, &[]).await;
    assert_eq!(result(&r), VerifyResult::Revoked);
    assert!(!r.valid);

    server.clock.advance(Duration::from_secs(5));
    let again = admin
        .revoke(pb::RevokeRequest { id: id.clone(), reason: "other".into() })
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();
    assert_eq!(again.revoke_time.unwrap(), first_time, "the first revoke time stands");
    assert_eq!(again.revoke_reason, "leaked in CI log");

    let missing = tokend::id::IdGenerator::default().next(common::START).to_string();
    assert_eq!(code(admin.revoke(pb::RevokeRequest { id: missing, reason: String::new() }).await).0, Code::NotFound);
    assert_eq!(
        code(admin.revoke(pb::RevokeRequest { id: "nope".into(), reason: String::new() }).await).0,
        Code::InvalidArgument
    );
    let other = issue(&mut admin, "n2", "o", &[]).await.token.unwrap().id;
    let (c, m) = code(admin.revoke(pb::RevokeRequest { id: other, reason: "r".repeat(513) }).await);
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("reason"), "{m}");
    assert_eq!(result(&verify(&mut v, &issued.secret, &[]).await), VerifyResult::Revoked);
}

#[tokio::test]
async fn rotate_with_grace_keeps_both_tokens_working_until_the_grace_ends() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut v = server.verifier().await;
    let mut req = issue_request("svc", "team", &["a", "b"]);
    req.ttl = Some(secs(7 * 86_400));
    req.labels.insert("k".into(), "v".into());
    let old = admin.issue(req).await.unwrap().into_inner();
    let old_token = old.token.unwrap();

    server.clock.advance(Duration::from_secs(3600));
    let rotated = admin
        .rotate(pb::RotateRequest { id: old_token.id.clone(), grace_period: Some(secs(600)) })
        .await
        .unwrap()
        .into_inner();
    let new = rotated.token.unwrap();
    let prev = rotated.previous.unwrap();
    assert_ne!(rotated.secret, old.secret);
    assert_ne!(new.id, old_token.id);
    assert!(new.id > old_token.id, "ids follow creation order");
    assert_eq!((new.name.as_str(), new.owner.as_str()), ("svc", "team"));
    assert_eq!(new.scopes, old_token.scopes);
    assert_eq!(new.labels, old_token.labels);
    assert_eq!(new.rotated_from, old_token.id);
    assert_eq!(prev.rotated_to, new.id);
    // Same TTL length, counted from the rotation.
    let new_ttl = new.expire_time.unwrap().seconds - new.create_time.unwrap().seconds;
    assert_eq!(new_ttl, 7 * 86_400);
    // The old token now ends with the grace period.
    assert_eq!(prev.expire_time.unwrap().seconds, new.create_time.unwrap().seconds + 600);
    assert_eq!(status(&prev), TokenStatus::Active);

    assert_eq!(result(&verify(&mut v, &old.secret, &[]).await), VerifyResult::Ok);
    assert_eq!(result(&verify(&mut v, &rotated.secret, &["a"]).await), VerifyResult::Ok);
    server.clock.advance(Duration::from_secs(600));
    assert_eq!(result(&verify(&mut v, &old.secret, &[]).await), VerifyResult::Expired);
    assert_eq!(result(&verify(&mut v, &rotated.secret, &[]).await), VerifyResult::Ok);
}

#[tokio::test]
async fn rotate_without_grace_revokes_the_old_token_at_once() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut v = server.verifier().await;
    let old = issue(&mut admin, "svc", "team", &[]).await;
    let id = old.token.unwrap().id;
    let rotated = admin.rotate(pb::RotateRequest { id: id.clone(), grace_period: None }).await.unwrap().into_inner();
    let prev = rotated.previous.unwrap();
    assert_eq!(status(&prev), TokenStatus::Revoked);
    assert_eq!(prev.revoke_reason, "rotated");
    assert!(rotated.token.unwrap().expire_time.is_none(), "no TTL stays no TTL");
    assert_eq!(result(&verify(&mut v, &old.secret, &[]).await), VerifyResult::Revoked);
    assert_eq!(result(&verify(&mut v, &rotated.secret, &[]).await), VerifyResult::Ok);

    // A zero duration is the same as none.
    let other = issue(&mut admin, "svc2", "team", &[]).await.token.unwrap().id;
    let r = admin.rotate(pb::RotateRequest { id: other, grace_period: Some(secs(0)) }).await.unwrap().into_inner();
    assert_eq!(status(&r.previous.unwrap()), TokenStatus::Revoked);
}

#[tokio::test]
async fn rotate_refuses_tokens_that_cannot_be_rotated() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    // Revoked.
    let revoked = issue(&mut admin, "a", "o", &[]).await.token.unwrap().id;
    admin.revoke(pb::RevokeRequest { id: revoked.clone(), reason: String::new() }).await.unwrap();
    let (c, m) = code(admin.rotate(pb::RotateRequest { id: revoked.clone(), grace_period: None }).await);
    assert_eq!(c, Code::FailedPrecondition);
    assert!(m.contains("revoked"), "{m}");
    // Already rotated (still in its grace period): rotate the newest instead.
    let first = issue(&mut admin, "b", "o", &[]).await.token.unwrap().id;
    let second = admin
        .rotate(pb::RotateRequest { id: first.clone(), grace_period: Some(secs(3600)) })
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap()
        .id;
    let (c, m) = code(admin.rotate(pb::RotateRequest { id: first.clone(), grace_period: None }).await);
    assert_eq!(c, Code::FailedPrecondition);
    assert!(m.contains("rotated"), "{m}");
    admin.rotate(pb::RotateRequest { id: second, grace_period: None }).await.unwrap();
    // Expired.
    let mut req = issue_request("c", "o", &[]);
    req.ttl = Some(secs(10));
    let expired = admin.issue(req).await.unwrap().into_inner().token.unwrap().id;
    server.clock.advance(Duration::from_secs(10));
    let (c, m) = code(admin.rotate(pb::RotateRequest { id: expired, grace_period: None }).await);
    assert_eq!(c, Code::FailedPrecondition);
    assert!(m.contains("expired"), "{m}");
    // Unknown, bad id, bad grace.
    let missing = tokend::id::IdGenerator::default().next(common::START).to_string();
    assert_eq!(code(admin.rotate(pb::RotateRequest { id: missing, grace_period: None }).await).0, Code::NotFound);
    assert_eq!(
        code(admin.rotate(pb::RotateRequest { id: "x".into(), grace_period: None }).await).0,
        Code::InvalidArgument
    );
    let live = issue(&mut admin, "d", "o", &[]).await.token.unwrap().id;
    for bad in [secs(-1), prost_types::Duration { seconds: 0, nanos: -5 }, secs(101 * 366 * 86_400)] {
        let (c, m) = code(admin.rotate(pb::RotateRequest { id: live.clone(), grace_period: Some(bad) }).await);
        assert_eq!(c, Code::InvalidArgument);
        assert!(m.contains("grace_period"), "{m}");
    }
    // The refused rotations changed nothing.
    let got = admin.get(pb::GetRequest { id: live }).await.unwrap().into_inner().token.unwrap();
    assert!(got.rotated_to.is_empty());
    assert_eq!(status(&got), TokenStatus::Active);
}

#[tokio::test]
async fn list_pages_in_creation_order_with_filters() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let owner = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(issue(&mut admin, &format!("t{i}"), owner, &[]).await.token.unwrap().id);
    }
    for id in ids.iter().step_by(5) {
        admin.revoke(pb::RevokeRequest { id: id.clone(), reason: String::new() }).await.unwrap();
    }
    // All owners, pages of 10: 26 tokens with the bootstrap admin token.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list(pb::ListRequest { page_size: 10, page_token: page_token.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.tokens.len() <= 10);
        // Tokens issued while paging appear on later pages, never twice.
        if pages == 1 {
            issue(&mut admin, "late", "late-owner", &[]).await;
        }
        seen.extend(page.tokens.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 27);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 27);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "creation order");
    assert_eq!(&seen[1..26], &ids[..]);

    let even = admin.list(pb::ListRequest { owner: "even".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(even.tokens.len(), 13);
    assert!(even.tokens.iter().all(|t| t.owner == "even"));
    let even_revoked = admin
        .list(pb::ListRequest { owner: "even".into(), status: TokenStatus::Revoked.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    // Revoked: t0, t5, t10, t15, t20 — of those, t0, t10, t20 are even.
    assert_eq!(even_revoked.tokens.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["t0", "t10", "t20"]);
    let active = admin
        .list(pb::ListRequest { status: TokenStatus::Active.into(), page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(active.tokens.len(), 27 - 5);
    assert!(active.tokens.iter().all(|t| status(t) == TokenStatus::Active));
    let nobody = admin.list(pb::ListRequest { owner: "nobody".into(), ..Default::default() }).await.unwrap();
    assert!(nobody.into_inner().tokens.is_empty());
}

#[tokio::test]
async fn list_default_and_maximum_page_sizes() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    for i in 0..120 {
        issue(&mut admin, &format!("t{i}"), "o", &[]).await;
    }
    let page = admin.list(pb::ListRequest::default()).await.unwrap().into_inner();
    assert_eq!(page.tokens.len(), 100, "default page size");
    assert!(!page.next_page_token.is_empty());
    let page = admin.list(pb::ListRequest { page_size: 1000, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(page.tokens.len(), 121);
    assert!(page.next_page_token.is_empty());
}

#[tokio::test]
async fn list_rejects_bad_arguments() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let cases = [
        (pb::ListRequest { page_size: -1, ..Default::default() }, "page_size"),
        (pb::ListRequest { page_size: 1001, ..Default::default() }, "page_size"),
        (pb::ListRequest { page_token: "garbage".into(), ..Default::default() }, "page_token"),
        (pb::ListRequest { page_token: "0".repeat(32), ..Default::default() }, "page_token"),
        (pb::ListRequest { status: 42, ..Default::default() }, "status"),
        (pb::ListRequest { owner: "o".repeat(129), ..Default::default() }, "owner"),
    ];
    for (req, field) in cases {
        let (c, m) = code(admin.list(req).await);
        assert_eq!(c, Code::InvalidArgument);
        assert!(m.contains(field), "{m} should name {field}");
    }
}

#[tokio::test]
async fn issue_rejects_bad_input_naming_the_field_and_writes_nothing() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let before = count_tokens(&mut admin).await;
    let base = || issue_request("name", "owner", &["scope"]);
    let many_scopes: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
    let mut cases: Vec<(pb::IssueRequest, &str)> = vec![
        (pb::IssueRequest { name: String::new(), ..base() }, "name"),
        (pb::IssueRequest { name: "n".repeat(129), ..base() }, "name"),
        (pb::IssueRequest { name: "a\u{1b}[31m".into(), ..base() }, "name"),
        (pb::IssueRequest { owner: String::new(), ..base() }, "owner"),
        (pb::IssueRequest { owner: "o\r\n".into(), ..base() }, "owner"),
        (pb::IssueRequest { scopes: many_scopes, ..base() }, "scopes"),
        (pb::IssueRequest { scopes: vec!["ok".into(), "white space".into()], ..base() }, "scopes[1]"),
        (pb::IssueRequest { scopes: vec!["s".repeat(129)], ..base() }, "scopes[0]"),
        (pb::IssueRequest { scopes: vec!["é".into()], ..base() }, "scopes[0]"),
        (pb::IssueRequest { ttl: Some(secs(-1)), ..base() }, "ttl"),
        (pb::IssueRequest { ttl: Some(prost_types::Duration { seconds: 1, nanos: 2_000_000_000 }), ..base() }, "ttl"),
        (pb::IssueRequest { ttl: Some(secs(101 * 366 * 86_400)), ..base() }, "ttl"),
    ];
    let mut labels = base();
    labels.labels.insert("k".repeat(64), "v".into());
    cases.push((labels, "labels["));
    let mut labels = base();
    labels.labels.insert("k".into(), "v".repeat(257));
    cases.push((labels, "labels[k]"));
    let mut labels = base();
    labels.labels = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
    cases.push((labels, "labels"));
    for (req, field) in cases {
        let (c, m) = code(admin.issue(req).await);
        assert_eq!(c, Code::InvalidArgument, "{m}");
        assert!(m.contains(field), "{m:?} should name {field}");
    }
    assert_eq!(count_tokens(&mut admin).await, before);
    // The limits themselves are accepted.
    let mut ok = issue_request(&"n".repeat(128), &"o".repeat(128), &[]);
    ok.scopes = (0..64).map(|i| format!("s.{i}:x/y-z")).collect();
    ok.ttl = Some(secs(100 * 365 * 86_400));
    ok.labels = (0..64).map(|i| (format!("{i:0>63}"), "v".repeat(256))).collect();
    admin.issue(ok).await.expect("the limits are accepted");
}

#[tokio::test]
async fn admin_calls_need_a_valid_admin_token() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let plain = issue(&mut admin, "n", "o", &["read"]).await.secret;
    let mut second_admin_req = issue_request("ops", "ops-team", &["tokend.admin"]);
    second_admin_req.ttl = Some(secs(60));
    let second_admin = admin.issue(second_admin_req).await.unwrap().into_inner();
    let revoked_admin = issue(&mut admin, "old-ops", "ops-team", &["tokend.admin"]).await;
    admin.revoke(pb::RevokeRequest { id: revoked_admin.token.unwrap().id, reason: String::new() }).await.unwrap();

    // A second admin can act, including issuing further admin tokens.
    let mut ops = server.admin_as(&second_admin.secret).await;
    ops.issue(issue_request("ops2", "ops-team", &["tokend.admin"])).await.unwrap();

    // No metadata at all.
    let mut anonymous = tokend::pb::token_service_client::TokenServiceClient::new(server.channel().await);
    let err = anonymous.list(pb::ListRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let unknown = tokend::token::Secret::generate("tk");
    for (token, expected) in [
        ("not-a-token".to_string(), Code::Unauthenticated),
        (unknown.expose().to_string(), Code::Unauthenticated),
        (revoked_admin.secret.clone(), Code::Unauthenticated),
        (plain.clone(), Code::PermissionDenied),
    ] {
        let mut client = server.admin_as(&token).await;
        let err = client.list(pb::ListRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), expected, "{}", err.message());
        assert!(!err.message().contains(&token), "the presented token is never echoed");
        let err = client.issue(issue_request("x", "y", &[])).await.unwrap_err();
        assert_eq!(err.code(), expected);
    }
    // Expired admin token.
    server.clock.advance(Duration::from_secs(61));
    let err = ops.list(pb::ListRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"));

    // Invalid UTF-8 / non-ASCII in the header value.
    let mut raw = tokend::pb::token_service_client::TokenServiceClient::new(server.channel().await);
    let mut req = tonic::Request::new(pb::ListRequest::default());
    req.metadata_mut()
        .insert("authorization", tonic::metadata::MetadataValue::try_from(&b"Bearer \xff\xfe"[..]).unwrap());
    assert_eq!(raw.list(req).await.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_owner_quota_is_exact_under_concurrency() {
    let server = TestServer::start_with(|c| c.max_tokens_per_owner = 5).await;
    let admin = server.admin().await;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let mut admin = admin.clone();
            tokio::spawn(async move { admin.issue(issue_request(&format!("t{i}"), "busy-owner", &[])).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) => assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message()),
        }
    }
    assert_eq!(ok, 5);
    let mut admin = admin;
    let listed =
        admin.list(pb::ListRequest { owner: "busy-owner".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(listed.tokens.len(), 5);
    // Other owners are unaffected; revoking one frees a slot.
    issue(&mut admin, "x", "other-owner", &[]).await;
    let err = admin.issue(issue_request("t", "busy-owner", &[])).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let victim = listed.tokens[0].id.clone();
    admin.revoke(pb::RevokeRequest { id: victim, reason: String::new() }).await.unwrap();
    issue(&mut admin, "t-again", "busy-owner", &[]).await;
}
