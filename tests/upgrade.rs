//! Upgrades: a data dir written by an earlier tokend loads and keeps
//! working. `tests/fixtures/datadir-2026-11-24/` was made by the tokend of
//! that date (`tests/fixtures/make-datadir.sh`; its tokens exist nowhere
//! else): tokens in every state, an owner-scoped admin, an update, and the
//! audit events of all of it.

mod common;

use std::{path::Path, sync::Arc};

use common::*;
use serde_json::Value;
use tokend::{
    Config,
    clock::{Clock, Time},
    pb::{self, VerifyResult},
};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/datadir-2026-11-24");

/// 2026-12-01T00:00:00Z: after the fixture was made, before anything in it
/// expires.
const NOW: Time = Time(1_796_083_200_000_000_000);

async fn verify_from(server: &TestServer, secret: &str, ip: &str) -> pb::VerifyResponse {
    let req = pb::VerifyRequest { token: secret.into(), client_ip: ip.into(), ..Default::default() };
    server.verifier().await.verify(req).await.unwrap().into_inner()
}

#[tokio::test]
async fn a_data_dir_written_by_the_2026_11_24_tokend_loads_and_keeps_working() {
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(FIXTURE).join("fixture.json")).unwrap()).unwrap();
    let text = |path: &str| fixture.pointer(path).and_then(Value::as_str).unwrap().to_owned();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    copy_dir(&Path::new(FIXTURE).join("data"), dir.path());
    let start = |dir: Arc<tempfile::TempDir>| {
        let mut config = Config::new(dir.path());
        config.clock = Clock::manual(NOW);
        config.fsync = false;
        TestServer::start_in(dir, config, text("/admin"))
    };
    let server = start(dir.clone()).await;

    // Every token answers as it did.
    let full = verify_from(&server, &text("/full/secret"), "10.1.2.3").await;
    assert_eq!(result(&full), VerifyResult::Ok);
    assert_eq!((full.owner.as_str(), full.scopes.len()), ("team-a", 2));
    assert_eq!(full.labels["env"], "prod");
    let outside = verify_from(&server, &text("/full/secret"), "192.0.2.1").await;
    assert_eq!(result(&outside), VerifyResult::IpNotAllowed);
    assert_eq!(result(&verify_from(&server, &text("/revoked/secret"), "").await), VerifyResult::Revoked);
    assert_eq!(result(&verify_from(&server, &text("/rotated_old/secret"), "").await), VerifyResult::Ok);
    assert_eq!(result(&verify_from(&server, &text("/rotated_new/secret"), "").await), VerifyResult::Ok);

    // The admin plane reads it all back, the update included.
    let mut root = server.admin().await;
    let got = root.get(pb::GetRequest { id: text("/full/token/id") }).await.unwrap().into_inner().token.unwrap();
    assert_eq!((got.name.as_str(), got.allowed_cidrs.len()), ("full-renamed", 2));
    assert!(got.update_time.unwrap().seconds >= got.create_time.unwrap().seconds && got.update_time != got.create_time);
    let old = root.get(pb::GetRequest { id: text("/rotated_old/token/id") }).await.unwrap().into_inner().token.unwrap();
    assert_eq!(old.rotated_to, text("/rotated_new/token/id"));
    let mut team = server.admin_as(&text("/team_admin/secret")).await;
    let theirs = list_all(&mut team, pb::ListRequest::default()).await;
    assert!(theirs.len() == 3 && theirs.iter().all(|t| t.owner == "team-b"), "{theirs:?}");

    // The audit chain is whole, and goes on.
    let events = audit_events(&mut root, Default::default()).await;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["bootstrap", "issue", "issue", "revoke", "issue", "rotate", "issue", "update"]);
    check_chain(&events).expect("the old chain verifies");
    issue(&mut root, "after-upgrade", "team-c", &[]).await;
    root.revoke(pb::RevokeRequest { id: text("/full/token/id"), reason: "upgraded".into() }).await.unwrap();
    let dir = server.stop().await;
    let server = start(dir).await;
    let events = audit_events(&mut server.admin().await, Default::default()).await;
    assert_eq!(events.len(), 10);
    check_chain(&events).expect("the chain verifies across the upgrade");
    assert_eq!(result(&verify_from(&server, &text("/full/secret"), "10.1.2.3").await), VerifyResult::Revoked);
}
