//! Token policy (issue #12): not-before, IP allowlists, the expiry policy,
//! Update and the finer List filters, through the generated clients.

mod common;

use std::time::Duration;

use common::*;
use prost_types::{FieldMask, Timestamp};
use tokend::{
    pb::{self, TokenStatus, VerifyResult},
    spec::TtlPolicy,
};
use tonic::Code;

const DAY: i64 = 86_400;

fn at(seconds_after_start: i64) -> Timestamp {
    Timestamp { seconds: START.0 / 1_000_000_000 + seconds_after_start, nanos: 0 }
}

fn id(r: &pb::IssueResponse) -> String {
    r.token.as_ref().unwrap().id.clone()
}

async fn verify_from(
    v: &mut pb::verify_service_client::VerifyServiceClient<tonic::transport::Channel>,
    token: &str,
    ip: &str,
) -> pb::VerifyResponse {
    v.verify(pb::VerifyRequest { token: token.into(), client_ip: ip.into(), ..Default::default() })
        .await
        .expect("Verify answers")
        .into_inner()
}

fn field_error(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains(field), "{field:?} named in {:?}", status.message());
}

#[tokio::test]
async fn not_before_holds_a_token_back_until_its_time() {
    let server = TestServer::start().await;
    let (mut admin, mut v) = (server.admin().await, server.verifier().await);
    let issued = admin
        .issue(pb::IssueRequest { not_before: Some(at(60)), ..issue_request("later", "o", &["a"]) })
        .await
        .unwrap()
        .into_inner();
    let token = issued.token.as_ref().unwrap();
    assert_eq!(token.not_before, Some(at(60)));
    assert_eq!(status(token), TokenStatus::Active, "status stays ACTIVE before not_before");

    server.clock.advance(Duration::from_secs(59));
    let early = verify(&mut v, &issued.secret, &["a"]).await;
    assert_eq!(result(&early), VerifyResult::NotYetValid);
    assert!(!early.valid);
    assert_eq!(early.token_id, token.id, "the id is told, as for EXPIRED");
    assert!(early.owner.is_empty() && early.scopes.is_empty() && early.expire_time.is_none());
    server.clock.advance(Duration::from_millis(999));
    assert_eq!(result(&verify(&mut v, &issued.secret, &["a"]).await), VerifyResult::NotYetValid, "just before");
    server.clock.advance(Duration::from_millis(1));
    assert!(verify(&mut v, &issued.secret, &["a"]).await.valid, "at not_before");
    server.clock.advance(Duration::from_secs(1));
    assert!(verify(&mut v, &issued.secret, &["a"]).await.valid, "just after");
}

#[tokio::test]
async fn not_before_after_the_expiry_is_refused_and_rotation_copies_it_only_while_ahead() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let err = admin
        .issue(pb::IssueRequest { not_before: Some(at(3_601)), ttl: Some(secs(3_600)), ..issue_request("x", "o", &[]) })
        .await
        .unwrap_err();
    field_error(&err, "not_before");
    let bad_nanos = Timestamp { nanos: -1, ..at(10) };
    field_error(
        &admin
            .issue(pb::IssueRequest { not_before: Some(bad_nanos), ..issue_request("x", "o", &[]) })
            .await
            .unwrap_err(),
        "not_before",
    );

    let ahead = admin
        .issue(pb::IssueRequest { not_before: Some(at(600)), ..issue_request("ahead", "o", &[]) })
        .await
        .unwrap()
        .into_inner();
    let passed = admin
        .issue(pb::IssueRequest { not_before: Some(at(60)), ..issue_request("passed", "o", &[]) })
        .await
        .unwrap()
        .into_inner();
    server.clock.advance(Duration::from_secs(120));
    let rotate = |id: String| pb::RotateRequest { id, grace_period: Some(secs(30)) };
    let a = admin.rotate(rotate(id(&ahead))).await.unwrap().into_inner().token.unwrap();
    assert_eq!(a.not_before, Some(at(600)), "still in the future: copied");
    let p = admin.rotate(rotate(id(&passed))).await.unwrap().into_inner().token.unwrap();
    assert_eq!(p.not_before, None, "already past: not copied");
}

#[tokio::test]
async fn ip_allowlists_match_ipv4_ipv6_and_mapped_addresses() {
    let server = TestServer::start().await;
    let (mut admin, mut v) = (server.admin().await, server.verifier().await);
    let cidrs = ["10.0.0.0/8", "2001:DB8::/32", "192.0.2.7"].map(String::from).to_vec();
    let issued = admin
        .issue(pb::IssueRequest { allowed_cidrs: cidrs, ..issue_request("net", "o", &["a"]) })
        .await
        .unwrap()
        .into_inner();
    let token = issued.token.as_ref().unwrap();
    assert_eq!(token.allowed_cidrs, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"], "canonical form");

    for inside in [
        "10.1.2.3",
        "10.255.255.255",
        "2001:db8::1",
        "192.0.2.7",
        "::ffff:10.9.9.9",
        "10.1.2.3:443",
        "[2001:db8::5]:8443",
    ] {
        let r = verify_from(&mut v, &issued.secret, inside).await;
        assert!(r.valid, "{inside}: {:?}", r.result());
        assert_eq!(r.owner, "o");
    }
    for outside in ["11.0.0.1", "192.0.2.8", "2001:db9::1", "::ffff:11.0.0.1", "::1", "", "somewhere"] {
        let r = verify_from(&mut v, &issued.secret, outside).await;
        assert_eq!(r.result(), VerifyResult::IpNotAllowed, "{outside:?}");
        assert_eq!(r.token_id, token.id);
        assert!(r.owner.is_empty() && r.scopes.is_empty() && r.labels.is_empty());
    }
    // Without a list, any address (or none) is fine.
    let open = issue(&mut admin, "open", "o", &[]).await;
    assert!(verify_from(&mut v, &open.secret, "").await.valid);
    assert!(verify_from(&mut v, &open.secret, "203.0.113.9").await.valid);
}

#[tokio::test]
async fn bad_allowlists_name_the_entry() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let issue_with = |cidrs: Vec<String>| pb::IssueRequest { allowed_cidrs: cidrs, ..issue_request("x", "o", &[]) };
    let err = admin.issue(issue_with(vec!["10.0.0.0/8".into(), "10.1.2.3/8".into()])).await.unwrap_err();
    field_error(&err, "allowed_cidrs[1]");
    assert!(err.message().contains("10.0.0.0/8"), "the network meant is suggested: {}", err.message());
    field_error(&admin.issue(issue_with(vec!["10.0.0.0/33".into()])).await.unwrap_err(), "allowed_cidrs[0]");
    field_error(&admin.issue(issue_with(vec!["example.com".into()])).await.unwrap_err(), "allowed_cidrs[0]");
    let many = (0..65).map(|i| format!("10.0.0.{i}")).collect();
    field_error(&admin.issue(issue_with(many)).await.unwrap_err(), "allowed_cidrs");
    assert!(
        list_all(&mut admin, pb::ListRequest { owner: "o".into(), ..Default::default() }).await.is_empty(),
        "nothing written"
    );
}

#[tokio::test]
async fn an_admin_token_with_an_allowlist_works_only_from_inside_it() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let issue_admin = |cidrs: &[&str]| pb::IssueRequest {
        allowed_cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
        ..issue_request("ops", "ops", &["tokend.admin"])
    };
    let local = admin.issue(issue_admin(&["127.0.0.0/8", "::1"])).await.unwrap().into_inner();
    let remote = admin.issue(issue_admin(&["10.0.0.0/8"])).await.unwrap().into_inner();
    let mut ok = server.admin_as(&local.secret).await;
    ok.get(pb::GetRequest { id: id(&local) }).await.expect("the test connects from 127.0.0.1");
    let mut refused = server.admin_as(&remote.secret).await;
    let err = refused.get(pb::GetRequest { id: id(&remote) }).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
}

#[tokio::test]
async fn the_expiry_policy_applies_its_default_and_caps_issue_and_rotate() {
    let server = TestServer::start_with(|c| {
        c.ttl_policy =
            TtlPolicy::new(Duration::from_secs(30 * DAY as u64), Duration::from_secs(7 * DAY as u64)).unwrap();
    })
    .await;
    let mut admin = server.admin().await;
    let defaulted = issue(&mut admin, "d", "o", &[]).await;
    assert_eq!(defaulted.token.unwrap().expire_time, Some(at(7 * DAY)), "no ttl: --default-ttl");
    let zero = admin.issue(pb::IssueRequest { ttl: Some(secs(0)), ..issue_request("z", "o", &[]) }).await.unwrap();
    assert_eq!(zero.into_inner().token.unwrap().expire_time, Some(at(7 * DAY)), "zero ttl: --default-ttl");
    let long = admin.issue(pb::IssueRequest { ttl: Some(secs(30 * DAY + 1)), ..issue_request("l", "o", &[]) }).await;
    let err = long.unwrap_err();
    field_error(&err, "ttl");
    assert!(err.message().contains("--max-ttl"), "{}", err.message());
    let max =
        admin.issue(pb::IssueRequest { ttl: Some(secs(30 * DAY)), ..issue_request("m", "o", &[]) }).await.unwrap();
    assert_eq!(max.into_inner().token.unwrap().expire_time, Some(at(30 * DAY)));
}

#[tokio::test]
async fn with_a_max_and_no_default_a_token_must_ask_for_an_expiry() {
    let server = TestServer::start_with(|c| {
        c.ttl_policy = TtlPolicy::new(Duration::from_secs(DAY as u64), Duration::ZERO).unwrap();
    })
    .await;
    let mut admin = server.admin().await;
    field_error(&admin.issue(issue_request("n", "o", &[])).await.unwrap_err(), "ttl");
    field_error(
        &admin.issue(pb::IssueRequest { ttl: Some(secs(0)), ..issue_request("n", "o", &[]) }).await.unwrap_err(),
        "ttl",
    );
    assert!(admin.issue(pb::IssueRequest { ttl: Some(secs(60)), ..issue_request("n", "o", &[]) }).await.is_ok());
}

#[tokio::test]
async fn rotate_caps_the_successor_at_the_max_ttl() {
    let server = TestServer::start().await;
    let forever = issue(&mut server.admin().await, "forever", "o", &[]).await;
    server.clock.advance(Duration::from_secs(5));
    // The same token set, now under a policy: rotating the never-expiring
    // token gives a successor that expires within --max-ttl.
    let server = server
        .restart_with(|c| c.ttl_policy = TtlPolicy::new(Duration::from_secs(DAY as u64), Duration::ZERO).unwrap())
        .await;
    let mut admin = server.admin().await;
    let successor = admin
        .rotate(pb::RotateRequest { id: id(&forever), grace_period: None })
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();
    assert_eq!(successor.expire_time, Some(at(5 + DAY)));
}

#[tokio::test]
async fn a_default_above_the_max_is_refused_naming_both_flags() {
    let err = TtlPolicy::new(Duration::from_secs(60), Duration::from_secs(61)).unwrap_err();
    assert!(err.contains("--default-ttl") && err.contains("--max-ttl"), "{err}");
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() })
}

fn update(token: pb::Token, paths: &[&str]) -> pb::UpdateRequest {
    pb::UpdateRequest { token: Some(token), update_mask: mask(paths) }
}

#[tokio::test]
async fn update_changes_what_the_mask_names_and_verify_sees_it_at_once() {
    let server = TestServer::start().await;
    let (mut admin, mut v) = (server.admin().await, server.verifier().await);
    let issued = admin
        .issue(pb::IssueRequest {
            ttl: Some(secs(3_600)),
            labels: [("env".to_string(), "dev".to_string())].into(),
            ..issue_request("old", "o", &["a", "b"])
        })
        .await
        .unwrap()
        .into_inner();
    let before = issued.token.clone().unwrap();
    assert_eq!(before.update_time, before.create_time, "update_time starts at create_time");
    server.clock.advance(Duration::from_secs(10));

    let change = pb::Token {
        id: before.id.clone(),
        name: "new".into(),
        labels: [("team".to_string(), "x".to_string())].into(),
        scopes: vec!["a".into()],
        expire_time: Some(at(1_800)),
        allowed_cidrs: vec!["10.0.0.0/8".into()],
        // Not in the mask: ignored.
        owner: "someone-else".into(),
        ..Default::default()
    };
    let after = admin
        .update(update(change, &["name", "labels", "scopes", "expire_time", "allowed_cidrs"]))
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();
    assert_eq!(after.name, "new");
    assert_eq!(after.owner, "o");
    assert_eq!(after.labels, [("team".to_string(), "x".to_string())].into(), "labels replaced as a whole");
    assert_eq!(after.scopes, ["a"]);
    assert_eq!(after.expire_time, Some(at(1_800)));
    assert_eq!(after.allowed_cidrs, ["10.0.0.0/8"]);
    assert_eq!(after.update_time, Some(at(10)));
    assert_eq!(after.create_time, before.create_time);

    // Verify sees every change as soon as Update has answered.
    let r = verify_from(&mut v, &issued.secret, "10.0.0.1").await;
    assert!(r.valid);
    assert_eq!(r.scopes, ["a"]);
    assert_eq!(r.labels.get("team").map(String::as_str), Some("x"));
    assert_eq!(r.expire_time, Some(at(1_800)));
    let r = verify_from(&mut v, &issued.secret, "10.0.0.1").await;
    assert_eq!(r.result(), VerifyResult::Ok);
    assert_eq!(result(&verify(&mut v, &issued.secret, &["b"]).await), VerifyResult::IpNotAllowed);
    let scoped = v
        .verify(pb::VerifyRequest {
            token: issued.secret.clone(),
            required_scopes: vec!["b".into()],
            client_ip: "10.0.0.1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scoped.result(), VerifyResult::InsufficientScope, "the removed scope is gone");
    assert_eq!(verify_from(&mut v, &issued.secret, "11.0.0.1").await.result(), VerifyResult::IpNotAllowed);
    // And the new state is what Get and List show, and what survives.
    let got = admin.get(pb::GetRequest { id: before.id.clone() }).await.unwrap().into_inner().token.unwrap();
    assert_eq!(got.allowed_cidrs, after.allowed_cidrs);
    let server = server.restart_with(|_| {}).await;
    let got =
        server.admin().await.get(pb::GetRequest { id: before.id.clone() }).await.unwrap().into_inner().token.unwrap();
    assert_eq!(
        (got.name.as_str(), got.scopes.as_slice(), got.update_time),
        ("new", ["a".to_string()].as_slice(), Some(at(10)))
    );
    assert_eq!(got.allowed_cidrs, ["10.0.0.0/8"]);

    // Clearing the allowlist opens the token to any address again.
    let mut server_admin = server.admin().await;
    let open = pb::Token { id: before.id.clone(), ..Default::default() };
    server_admin.update(update(open, &["allowed_cidrs"])).await.unwrap();
    assert!(verify(&mut server.verifier().await, &issued.secret, &[]).await.valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_is_pushed_to_watch_streams() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let issued = issue(&mut admin, "t", "o", &["a", "b"]).await;
    let mut stream = server.verifier().await.watch(pb::WatchRequest::default()).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.reset);
    let change = pb::Token { id: id(&issued), scopes: vec!["a".into()], ..Default::default() };
    admin.update(update(change, &["scopes"])).await.unwrap();
    let pushed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = stream.message().await.unwrap().unwrap();
            if !m.changes.is_empty() {
                return m;
            }
        }
    })
    .await
    .expect("the update is pushed");
    assert_eq!(pushed.changes.iter().map(|c| c.token_id.as_str()).collect::<Vec<_>>(), [id(&issued)]);
}

#[tokio::test]
async fn update_refuses_each_broken_rule_naming_the_path() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let issued = admin
        .issue(pb::IssueRequest { ttl: Some(secs(3_600)), ..issue_request("t", "o", &["a"]) })
        .await
        .unwrap()
        .into_inner();
    let token = |f: fn(&mut pb::Token)| {
        let mut t = pb::Token { id: id(&issued), ..Default::default() };
        f(&mut t);
        t
    };
    let cases: Vec<(pb::UpdateRequest, &str)> = vec![
        (pb::UpdateRequest { token: Some(token(|_| {})), update_mask: None }, "update_mask"),
        (update(token(|_| {}), &[]), "update_mask"),
        (update(token(|_| {}), &["owner"]), "owner"),
        (update(token(|_| {}), &["labels.env"]), "labels.env"),
        (update(token(|_| {}), &["*"]), "*"),
        (update(token(|t| t.scopes = vec!["a".into(), "b".into()]), &["scopes"]), "scopes"),
        (update(token(|t| t.scopes = vec!["bad scope".into()]), &["scopes"]), "scopes[0]"),
        (update(token(|t| t.expire_time = Some(at(3_601))), &["expire_time"]), "expire_time"),
        (update(token(|_| {}), &["expire_time"]), "expire_time"),
        (update(token(|t| t.allowed_cidrs = vec!["10.1.0.0/8".into()]), &["allowed_cidrs"]), "allowed_cidrs[0]"),
        (update(token(|_| {}), &["name"]), "name"),
        (update(token(|t| t.labels = [("".to_string(), "v".to_string())].into()), &["labels"]), "labels[]"),
        (pb::UpdateRequest { token: Some(pb::Token::default()), update_mask: mask(&["name"]) }, "token.id"),
    ];
    for (request, path) in cases {
        let err = admin.update(request.clone()).await.unwrap_err();
        field_error(&err, path);
    }
    // Nothing was changed by any of them.
    let got = admin.get(pb::GetRequest { id: id(&issued) }).await.unwrap().into_inner().token.unwrap();
    assert_eq!(got, issued.token.clone().unwrap());

    // Unknown: NOT_FOUND. Revoked: FAILED_PRECONDITION.
    let unknown =
        pb::Token { id: "0190b2c4-6a1f-7c3e-9d2b-1a2b3c4d5e6f".into(), name: "n".into(), ..Default::default() };
    assert_eq!(admin.update(update(unknown, &["name"])).await.unwrap_err().code(), Code::NotFound);
    admin.revoke(pb::RevokeRequest { id: id(&issued), reason: String::new() }).await.unwrap();
    let err = admin.update(update(token(|t| t.name = "n".into()), &["name"])).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

#[tokio::test]
async fn update_may_set_an_expiry_where_there_was_none_within_the_max() {
    let server = TestServer::start_with(|c| {
        c.ttl_policy = TtlPolicy::new(Duration::from_secs(DAY as u64), Duration::from_secs(3_600)).unwrap();
    })
    .await;
    let mut admin = server.admin().await;
    // The bootstrap admin token never expires (the policy exempts it).
    let forever = list_all(&mut admin, pb::ListRequest::default()).await.remove(0);
    assert_eq!(forever.expire_time, None);
    let set = |t: Timestamp| {
        update(pb::Token { id: forever.id.clone(), expire_time: Some(t), ..Default::default() }, &["expire_time"])
    };
    field_error(&admin.update(set(at(DAY + 1))).await.unwrap_err(), "expire_time");
    let updated = admin.update(set(at(DAY))).await.unwrap().into_inner().token.unwrap();
    assert_eq!(updated.expire_time, Some(at(DAY)));
    // Later is refused, earlier is fine.
    field_error(&admin.update(set(at(DAY - 1 + 2))).await.unwrap_err(), "expire_time");
    assert!(admin.update(set(at(60))).await.is_ok());
}

#[tokio::test]
async fn list_filters_by_name_prefix_last_use_and_expiry_with_paging() {
    let server = TestServer::start().await;
    let (mut admin, mut v) = (server.admin().await, server.verifier().await);
    let mut issued = Vec::new();
    for i in 0..6 {
        let name = if i < 4 { format!("ci-{i}") } else { format!("deploy-{i}") };
        let ttl = (i % 2 == 0).then(|| secs(1_000 + i));
        let r = admin.issue(pb::IssueRequest { ttl, ..issue_request(&name, "team", &[]) }).await.unwrap().into_inner();
        issued.push(r);
    }
    // Tokens 0 and 1 used at +10 s, token 2 at +100 s; the rest never.
    server.clock.advance(Duration::from_secs(10));
    for r in &issued[..2] {
        assert!(verify(&mut v, &r.secret, &[]).await.valid);
    }
    server.clock.advance(Duration::from_secs(90));
    assert!(verify(&mut v, &issued[2].secret, &[]).await.valid);

    let names = |tokens: Vec<pb::Token>| tokens.into_iter().map(|t| t.name).collect::<Vec<_>>();
    let page = |f: pb::ListRequest| pb::ListRequest { page_size: 1, owner: "team".into(), ..f };
    let by_prefix =
        list_all(&mut admin, page(pb::ListRequest { name_prefix: "ci-".into(), ..Default::default() })).await;
    assert_eq!(names(by_prefix), ["ci-0", "ci-1", "ci-2", "ci-3"]);
    let unused =
        list_all(&mut admin, page(pb::ListRequest { last_used_before: Some(at(50)), ..Default::default() })).await;
    assert_eq!(names(unused), ["ci-0", "ci-1", "ci-3", "deploy-4", "deploy-5"], "used before 50 s, or never");
    let expiring =
        list_all(&mut admin, page(pb::ListRequest { expire_before: Some(at(1_003)), ..Default::default() })).await;
    assert_eq!(names(expiring), ["ci-0", "ci-2"], "never-expiring tokens excluded");
    let combined = pb::ListRequest {
        name_prefix: "ci-".into(),
        last_used_before: Some(at(50)),
        expire_before: Some(at(5_000)),
        status: TokenStatus::Active.into(),
        ..Default::default()
    };
    assert_eq!(names(list_all(&mut admin, page(combined)).await), ["ci-0"]);
    let bad =
        pb::ListRequest { expire_before: Some(Timestamp { seconds: 0, nanos: 1_000_000_000 }), ..Default::default() };
    field_error(&admin.list(bad).await.unwrap_err(), "expire_before");
}
