//! Restarts, health and shutdown: state survives a restart, health follows
//! the server's life, and bootstrap happens exactly once.

mod common;

use std::time::Duration;

use common::*;
use tokend::{
    Config, Tokend,
    pb::{self, TokenStatus, VerifyResult},
    token::Secret,
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

#[tokio::test]
async fn tokens_revocations_and_last_used_times_survive_a_restart() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut v = server.verifier().await;
    let kept = issue(&mut admin, "kept", "o", &["a"]).await;
    let revoked = issue(&mut admin, "revoked", "o", &[]).await;
    let rotated = issue(&mut admin, "rotated", "o", &[]).await;
    admin
        .revoke(pb::RevokeRequest { id: revoked.token.as_ref().unwrap().id.clone(), reason: "gone".into() })
        .await
        .unwrap();
    let successor = admin
        .rotate(pb::RotateRequest { id: rotated.token.as_ref().unwrap().id.clone(), grace_period: Some(secs(300)) })
        .await
        .unwrap()
        .into_inner();
    server.clock.advance(Duration::from_secs(42));
    assert!(verify(&mut v, &kept.secret, &["a"]).await.valid);
    let before = admin.list(pb::ListRequest::default()).await.unwrap().into_inner().tokens;
    let kept_id = kept.token.as_ref().unwrap().id.clone();
    let used = before.iter().find(|t| t.id == kept_id).unwrap().last_used_time.unwrap();

    let clock = server.clock.clone();
    let admin_token = server.admin_token.clone();
    let dir = server.stop().await;
    let mut config = Config::new(dir.path());
    config.clock = clock;
    config.fsync = false;
    // A different bootstrap token must not be adopted: bootstrap happened.
    let intruder = Secret::generate("tk");
    config.bootstrap_token = Some(intruder.clone());
    let server = TestServer::start_in(dir, config, admin_token).await;
    let mut admin = server.admin().await;
    let mut v = server.verifier().await;

    let after = admin.list(pb::ListRequest::default()).await.unwrap().into_inner().tokens;
    assert_eq!(after, before, "every token, status and time survives");
    assert_eq!(after.iter().find(|t| t.id == kept_id).unwrap().last_used_time.unwrap(), used);
    assert_eq!(result(&verify(&mut v, &kept.secret, &["a"]).await), VerifyResult::Ok);
    assert_eq!(result(&verify(&mut v, &revoked.secret, &[]).await), VerifyResult::Revoked);
    assert_eq!(result(&verify(&mut v, &rotated.secret, &[]).await), VerifyResult::Ok, "still in its grace");
    assert_eq!(result(&verify(&mut v, &successor.secret, &[]).await), VerifyResult::Ok);
    server.clock.advance(Duration::from_secs(300));
    assert_eq!(result(&verify(&mut v, &rotated.secret, &[]).await), VerifyResult::Expired);
    assert_eq!(result(&verify(&mut v, intruder.expose(), &[]).await), VerifyResult::Unknown);
    // New ids keep creation order after the restart.
    let newer = issue(&mut admin, "newer", "o", &[]).await.token.unwrap();
    assert!(after.iter().all(|t| t.id < newer.id));
}

#[tokio::test]
async fn a_revoked_bootstrap_token_stays_revoked_across_restarts() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let own = issue(&mut admin, "mine", "ops", &["tokend.admin"]).await;
    let list = admin.list(pb::ListRequest { owner: "tokend".into(), ..Default::default() }).await.unwrap();
    let bootstrap = list.into_inner().tokens.remove(0);
    assert_eq!(bootstrap.name, "bootstrap-admin");
    assert_eq!(bootstrap.scopes, vec!["tokend.admin"]);
    let mut mine = server.admin_as(&own.secret).await;
    mine.revoke(pb::RevokeRequest { id: bootstrap.id.clone(), reason: "rotated out".into() }).await.unwrap();

    let (clock, old_admin) = (server.clock.clone(), server.admin_token.clone());
    let dir = server.stop().await;
    let mut config = Config::new(dir.path());
    config.clock = clock;
    config.fsync = false;
    config.bootstrap_token = Some(Secret::from_text(&old_admin).unwrap());
    let server = TestServer::start_in(dir, config, own.secret.clone()).await;
    let mut old = server.admin_as(&old_admin).await;
    let err = old.list(pb::ListRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut admin = server.admin().await;
    let again = admin.get(pb::GetRequest { id: bootstrap.id }).await.unwrap().into_inner().token.unwrap();
    assert_eq!(status(&again), TokenStatus::Revoked);
    let bootstraps = admin.list(pb::ListRequest { owner: "tokend".into(), ..Default::default() }).await.unwrap();
    assert_eq!(bootstraps.into_inner().tokens.len(), 1, "no second bootstrap token");
}

#[tokio::test]
async fn a_generated_bootstrap_token_is_returned_once_and_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.fsync = false;
    let mut tokend = Tokend::open(config).await.unwrap();
    let secret = tokend.take_bootstrap_secret().expect("generated on first start");
    assert!(tokend.take_bootstrap_secret().is_none());
    let verdict = tokend.verifier().verify(secret.expose(), &["tokend.admin"]);
    assert_eq!(verdict.outcome, tokend::verify::Outcome::Ok);
}

#[tokio::test]
async fn health_reports_every_service_and_goes_not_serving_on_shutdown() {
    // The open Watch stream keeps its connection busy until the grace ends.
    let server = TestServer::start_with(|c| c.shutdown_grace = Duration::from_millis(500)).await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "tokend.v1.TokenService", "tokend.v1.VerifyService"] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "nope".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut watch =
        health.watch(HealthCheckRequest { service: "tokend.v1.VerifyService".into() }).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);
    let stopping = tokio::spawn(server.stop());
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.expect("watch answers");
    assert_eq!(next.unwrap().unwrap().status(), ServingStatus::NotServing);
    stopping.await.unwrap();
}

#[tokio::test]
async fn an_in_flight_watch_does_not_hold_shutdown_past_the_grace() {
    let server = TestServer::start_with(|c| c.shutdown_grace = Duration::from_millis(300)).await;
    let mut health = HealthClient::new(server.channel().await);
    // A Watch stream never ends by itself: shutdown must still finish.
    let _watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    tokio::time::timeout(Duration::from_secs(10), server.stop()).await.expect("bounded shutdown");
}

#[tokio::test]
async fn a_corrupt_data_dir_is_a_clear_start_error() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be.
    let path = dir.path().join("store");
    std::fs::write(&path, b"not a directory").unwrap();
    let err = Tokend::open(Config::new(&path)).await.err().expect("must not start");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");

    // A data dir whose db file is garbage.
    let path = dir.path().join("garbage");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("conf"), b"\x00\x01garbage\xff").unwrap();
    std::fs::write(path.join("db"), vec![0xAB; 4096]).unwrap();
    let err = Tokend::open(Config::new(&path)).await.err().expect("must not start on garbage");
    eprintln!("{err}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[tokio::test]
async fn tokens_issued_under_an_earlier_prefix_keep_verifying() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let old = issue(&mut admin, "old", "o", &[]).await;
    assert!(old.secret.starts_with("tk_"));
    let (clock, admin_token) = (server.clock.clone(), server.admin_token.clone());
    let dir = server.stop().await;
    let mut config = Config::new(dir.path());
    config.clock = clock;
    config.fsync = false;
    config.token_prefix = "acme".into();
    let server = TestServer::start_in(dir, config, admin_token).await;
    let mut admin = server.admin().await;
    let new = issue(&mut admin, "new", "o", &[]).await;
    assert!(new.secret.starts_with("acme_"), "{}", &new.secret[..5]);
    let mut v = server.verifier().await;
    assert_eq!(result(&verify(&mut v, &old.secret, &[]).await), VerifyResult::Ok);
    assert_eq!(result(&verify(&mut v, &new.secret, &[]).await), VerifyResult::Ok);
    // Rotation issues the successor under the current prefix.
    let id = old.token.unwrap().id;
    let rotated = admin.rotate(pb::RotateRequest { id, grace_period: None }).await.unwrap().into_inner();
    assert!(rotated.secret.starts_with("acme_"));
}

#[tokio::test]
async fn an_admin_listener_takes_the_admin_plane_off_the_main_port() {
    let dir = tempfile::tempdir().unwrap();
    let admin_token = Secret::generate("tk");
    let mut config = Config::new(dir.path());
    config.fsync = false;
    config.bootstrap_token = Some(admin_token.clone());
    let tokend = Tokend::open(config).await.unwrap();
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (main_addr, admin_addr) = (main.local_addr().unwrap(), admin.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = tokend::server::Listeners { grpc: main, admin: Some(admin), metrics: None, health: None };
    let task = tokio::spawn(tokend.serve_on(listeners, async {
        let _ = stopped.await;
    }));
    let connect = |addr: std::net::SocketAddr| async move {
        tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
    };
    let bearer = Bearer(admin_token.expose().to_owned());
    let mut on_main =
        pb::token_service_client::TokenServiceClient::with_interceptor(connect(main_addr).await, bearer.clone());
    let err = on_main.list(pb::ListRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "no admin plane on the main port");
    let mut on_admin =
        pb::token_service_client::TokenServiceClient::with_interceptor(connect(admin_addr).await, bearer);
    let issued = on_admin.issue(issue_request("split", "o", &[])).await.unwrap().into_inner();
    let mut v = pb::verify_service_client::VerifyServiceClient::new(connect(main_addr).await);
    assert!(verify(&mut v, &issued.secret, &[]).await.valid);
    let mut v_admin = pb::verify_service_client::VerifyServiceClient::new(connect(admin_addr).await);
    let req = pb::VerifyRequest { token: issued.secret.clone(), required_scopes: vec![], ..Default::default() };
    assert_eq!(v_admin.verify(req).await.unwrap_err().code(), tonic::Code::Unimplemented);
    for addr in [main_addr, admin_addr] {
        let mut health = HealthClient::new(connect(addr).await);
        let r = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
        assert_eq!(r.status(), ServingStatus::Serving);
    }
    drop((on_main, on_admin, v, v_admin));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task).await.unwrap().unwrap().unwrap();
}
