//! Owner-scoped and read-only admins (issue #12, item 6): what
//! `tokend.admin:<owner>`, `tokend.read` and `tokend.read:<owner>` may and
//! may not do, each forbidden move with its code, through the generated
//! client.

mod common;

use common::*;
use prost_types::FieldMask;
use tokend::pb;
use tonic::Code;

fn id(r: &pb::IssueResponse) -> String {
    r.token.as_ref().unwrap().id.clone()
}

fn code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(r) => panic!("expected a refusal, got {r:?}"),
        Err(status) => status.code(),
    }
}

fn rename(id: &str, name: &str) -> pb::UpdateRequest {
    pb::UpdateRequest {
        token: Some(pb::Token { id: id.into(), name: name.into(), ..Default::default() }),
        update_mask: Some(FieldMask { paths: vec!["name".into()] }),
    }
}

struct World {
    server: TestServer,
    /// A token of team-a and one of team-b.
    a: pb::IssueResponse,
    b: pb::IssueResponse,
}

async fn world() -> World {
    let server = TestServer::start().await;
    let mut root = server.admin().await;
    let a = issue(&mut root, "ci", "team-a", &["deploy"]).await;
    let b = issue(&mut root, "ci", "team-b", &["deploy"]).await;
    World { server, a, b }
}

impl World {
    /// An admin client holding a new token of `owner` with `scopes`.
    async fn admin_with(&self, owner: &str, scopes: &[&str]) -> (AdminClient, String) {
        let issued = issue(&mut self.server.admin().await, "admin", owner, scopes).await;
        (self.server.admin_as(&issued.secret).await, id(&issued))
    }
}

#[tokio::test]
async fn an_owner_scoped_admin_manages_its_owners_tokens_only() {
    let w = world().await;
    let (mut team, _) = w.admin_with("team-a", &["tokend.admin:team-a"]).await;

    // Its own owner: every call works.
    let mine = team.issue(issue_request("svc", "team-a", &["deploy", "read"])).await.unwrap().into_inner();
    assert_eq!(mine.token.as_ref().unwrap().owner, "team-a");
    team.get(pb::GetRequest { id: id(&w.a) }).await.unwrap();
    team.update(rename(&id(&mine), "svc-2")).await.unwrap();
    let rotated = team.rotate(pb::RotateRequest { id: id(&mine), grace_period: Some(secs(60)) }).await.unwrap();
    let new_id = rotated.into_inner().token.unwrap().id;
    team.revoke(pb::RevokeRequest { id: new_id, reason: "done".into() }).await.unwrap();

    // Another owner: Issue is refused, the other owner's token is not there.
    assert_eq!(code(team.issue(issue_request("svc", "team-b", &["deploy"])).await), Code::PermissionDenied);
    let other = id(&w.b);
    let unknown = "0190aaaa-0000-7000-8000-000000000000".to_owned();
    for target in [&other, &unknown] {
        let get = team.get(pb::GetRequest { id: target.clone() }).await.unwrap_err();
        assert_eq!(get.code(), Code::NotFound);
        // Nothing tells a hidden token from a missing one but its id.
        assert_eq!(get.message().replace(target, "ID"), "token ID not found");
        let revoke = team.revoke(pb::RevokeRequest { id: target.clone(), reason: String::new() }).await;
        assert_eq!(code(revoke), Code::NotFound);
        let rotate = team.rotate(pb::RotateRequest { id: target.clone(), grace_period: None }).await;
        assert_eq!(code(rotate), Code::NotFound);
        assert_eq!(code(team.update(rename(target, "x")).await), Code::NotFound);
    }
    // ...and it still works for its owner.
    let mut root = w.server.admin().await;
    let b = root.get(pb::GetRequest { id: other.clone() }).await.unwrap().into_inner().token.unwrap();
    assert_eq!((b.name.as_str(), b.revoke_time), ("ci", None));

    // List: its owner's tokens, whether or not the filter names it.
    let listed = list_all(&mut team, pb::ListRequest::default()).await;
    assert!(!listed.is_empty() && listed.iter().all(|t| t.owner == "team-a"), "{listed:?}");
    let named = list_all(&mut team, pb::ListRequest { owner: "team-a".into(), ..Default::default() }).await;
    assert_eq!(named.len(), listed.len());
    let refused = team.list(pb::ListRequest { owner: "team-b".into(), ..Default::default() }).await;
    assert_eq!(code(refused), Code::PermissionDenied);
}

#[tokio::test]
async fn an_owner_scoped_admin_cannot_hand_out_admin_power() {
    let w = world().await;
    let (mut team, team_id) = w.admin_with("team-a", &["tokend.admin:team-a"]).await;
    for scopes in [&["tokend.admin"][..], &["tokend.admin:team-a"], &["deploy", "tokend.read"], &["tokend.x"]] {
        let refused = team.issue(issue_request("escalate", "team-a", scopes)).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{scopes:?}");
        assert!(refused.message().contains("reserved scope"), "{}", refused.message());
    }
    // Its own kind of token (team-a's, carrying a reserved scope): rotating
    // would mint a new admin token, updating could widen its allowlist.
    let rotate = team.rotate(pb::RotateRequest { id: team_id.clone(), grace_period: Some(secs(60)) }).await;
    assert_eq!(code(rotate), Code::PermissionDenied);
    assert_eq!(code(team.update(rename(&team_id, "renamed")).await), Code::PermissionDenied);
    let narrow = pb::UpdateRequest {
        token: Some(pb::Token { id: team_id.clone(), ..Default::default() }),
        update_mask: Some(FieldMask { paths: vec!["allowed_cidrs".into()] }),
    };
    assert_eq!(code(team.update(narrow).await), Code::PermissionDenied);
    // The full admin may do all of it.
    let mut root = w.server.admin().await;
    root.issue(issue_request("team-b-admin", "team-b", &["tokend.admin:team-b"])).await.unwrap();
    root.update(rename(&team_id, "renamed")).await.unwrap();
    // Revoking is giving up power, and allowed (its own token included).
    team.revoke(pb::RevokeRequest { id: team_id, reason: "leaked".into() }).await.unwrap();
    let after = team.get(pb::GetRequest { id: id(&w.a) }).await.unwrap_err();
    assert_eq!(after.code(), Code::Unauthenticated, "the revoked admin token stops at once");
}

#[tokio::test]
async fn a_reader_reads_everything_and_changes_nothing() {
    let w = world().await;
    let (mut reader, _) = w.admin_with("ops", &["tokend.read"]).await;
    reader.get(pb::GetRequest { id: id(&w.b) }).await.unwrap();
    let all = list_all(&mut reader, pb::ListRequest::default()).await;
    assert!(all.iter().any(|t| t.owner == "team-a") && all.iter().any(|t| t.owner == "team-b"));
    reader.list_audit_events(pb::ListAuditEventsRequest::default()).await.unwrap();

    let refused = reader.issue(issue_request("x", "team-a", &[])).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("tokend.admin"), "{}", refused.message());
    let revoke = reader.revoke(pb::RevokeRequest { id: id(&w.a), reason: String::new() }).await;
    assert_eq!(code(revoke), Code::PermissionDenied);
    let rotate = reader.rotate(pb::RotateRequest { id: id(&w.a), grace_period: None }).await;
    assert_eq!(code(rotate), Code::PermissionDenied);
    assert_eq!(code(reader.update(rename(&id(&w.a), "x")).await), Code::PermissionDenied);
    let a = reader.get(pb::GetRequest { id: id(&w.a) }).await.unwrap().into_inner().token.unwrap();
    assert_eq!((a.name.as_str(), a.revoke_time), ("ci", None), "nothing changed");
}

#[tokio::test]
async fn an_owner_scoped_reader_sees_its_owner_only() {
    let w = world().await;
    let (mut reader, _) = w.admin_with("team-a", &["tokend.read:team-a"]).await;
    reader.get(pb::GetRequest { id: id(&w.a) }).await.unwrap();
    assert_eq!(code(reader.get(pb::GetRequest { id: id(&w.b) }).await), Code::NotFound);
    let listed = list_all(&mut reader, pb::ListRequest::default()).await;
    assert!(!listed.is_empty() && listed.iter().all(|t| t.owner == "team-a"));
    let other = reader.list(pb::ListRequest { owner: "team-b".into(), ..Default::default() }).await;
    assert_eq!(code(other), Code::PermissionDenied);
    assert_eq!(code(reader.issue(issue_request("x", "team-a", &[])).await), Code::PermissionDenied);
    let revoke = reader.revoke(pb::RevokeRequest { id: id(&w.a), reason: String::new() }).await;
    assert_eq!(code(revoke), Code::PermissionDenied);

    // Two owner-scoped grants: both owners, and nobody else.
    let mut root = w.server.admin().await;
    issue(&mut root, "ci", "team-c", &[]).await;
    let (mut both, _) = w.admin_with("ops", &["tokend.read:team-a", "tokend.read:team-b"]).await;
    let owners: std::collections::BTreeSet<String> =
        list_all(&mut both, pb::ListRequest::default()).await.into_iter().map(|t| t.owner).collect();
    assert_eq!(owners.into_iter().collect::<Vec<_>>(), ["team-a", "team-b"]);
}

#[tokio::test]
async fn a_token_without_a_reserved_scope_is_refused_and_the_root_admin_is_unchanged() {
    let w = world().await;
    let mut plain = w.server.admin_as(&w.a.secret).await;
    let refused = plain.get(pb::GetRequest { id: id(&w.a) }).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("tokend.admin or tokend.read"), "{}", refused.message());
    let (mut malformed, _) = w.admin_with("ops", &["tokend.admin:", "tokend.readers"]).await;
    assert_eq!(code(malformed.get(pb::GetRequest { id: id(&w.a) }).await), Code::PermissionDenied);

    let mut root = w.server.admin().await;
    root.issue(issue_request("any", "team-z", &["tokend.read"])).await.unwrap();
    root.revoke(pb::RevokeRequest { id: id(&w.b), reason: String::new() }).await.unwrap();
}
