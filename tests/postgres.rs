//! tokend on a real PostgreSQL (started by `common::postgres`): the whole
//! contract through one replica, restarts, database outages, and start-up
//! errors. Skips with a printed reason where no PostgreSQL server binaries
//! are installed, unless TOKEND_REQUIRE_POSTGRES=1.

mod common;

use std::time::Duration;

use common::{START, TestServer, issue, list_all, postgres::Postgres, process::BIN, result, status, verify};
use tokend::{
    Config,
    clock::Clock,
    pb::{self, TokenStatus, VerifyResult},
    store::PostgresOptions,
    token::Secret,
};

fn options(url: &str) -> PostgresOptions {
    PostgresOptions {
        connect_timeout: Duration::from_secs(10),
        timeout: Duration::from_secs(2),
        ..PostgresOptions::new(url)
    }
}

/// A config for a tokend on `url`, with the test clock and admin token.
fn config(url: &str, clock: &Clock, admin: &Secret) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("unused"));
    config.postgres = Some(options(url));
    config.clock = clock.clone();
    config.bootstrap_token = Some(admin.clone());
    config
}

async fn start(url: &str, clock: &Clock, admin: &Secret) -> TestServer {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    TestServer::start_in(dir, config(url, clock, admin), admin.expose().to_owned()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_holds_on_postgres_and_survives_a_restart() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database().await;
    let (clock, admin_secret) = (Clock::manual(START), Secret::generate("tk"));

    let server = start(&url, &clock, &admin_secret).await;
    let mut admin = server.admin().await;
    let mut v = server.verifier().await;
    let kept = issue(&mut admin, "kept", "team-a", &["orders:read"]).await;
    let revoked = issue(&mut admin, "revoked", "team-a", &[]).await;
    let rotated = issue(&mut admin, "rotated", "team-b", &[]).await;
    let revoked_id = revoked.token.as_ref().unwrap().id.clone();
    admin.revoke(pb::RevokeRequest { id: revoked_id.clone(), reason: "leaked".into() }).await.unwrap();
    let rotation = admin
        .rotate(pb::RotateRequest {
            id: rotated.token.as_ref().unwrap().id.clone(),
            grace_period: Some(common::secs(60)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(result(&verify(&mut v, &kept.secret, &["orders:read"]).await), VerifyResult::Ok);
    assert_eq!(result(&verify(&mut v, &revoked.secret, &[]).await), VerifyResult::Revoked);
    // A use, so a last-used time is persisted at shutdown.
    clock.advance(Duration::from_secs(5));
    assert_eq!(result(&verify(&mut v, &kept.secret, &[]).await), VerifyResult::Ok);
    let used_at = server.clock.now();
    server.stop().await;

    // Another process on the same database: everything is there, and the
    // bootstrap does not run again.
    let server = start(&url, &clock, &admin_secret).await;
    let mut admin = server.admin().await;
    let mut v = server.verifier().await;
    assert_eq!(result(&verify(&mut v, &kept.secret, &["orders:read"]).await), VerifyResult::Ok);
    assert_eq!(result(&verify(&mut v, &revoked.secret, &[]).await), VerifyResult::Revoked);
    assert_eq!(result(&verify(&mut v, &rotation.secret, &[]).await), VerifyResult::Ok);
    assert_eq!(result(&verify(&mut v, &rotated.secret, &[]).await), VerifyResult::Ok, "old half in its grace");
    let all = list_all(&mut admin, pb::ListRequest::default()).await;
    assert_eq!(all.len(), 5, "bootstrap admin + 3 issued + 1 rotated, no second bootstrap");
    let r = all.iter().find(|t| t.id == revoked_id).unwrap();
    assert_eq!(status(r), TokenStatus::Revoked);
    assert_eq!(r.revoke_reason, "leaked");
    let k = all.iter().find(|t| t.id == kept.token.as_ref().unwrap().id).unwrap();
    let seen = k.last_used_time.as_ref().expect("last-used persisted");
    assert_eq!(seen.seconds, used_at.as_nanos() / 1_000_000_000);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_used_times_only_move_forward() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database().await;
    let (clock, admin_secret) = (Clock::manual(START), Secret::generate("tk"));
    let server = start(&url, &clock, &admin_secret).await;
    let mut admin = server.admin().await;
    let t = issue(&mut admin, "t", "o", &[]).await;
    let id = t.token.unwrap().id;
    server.stop().await;
    // Two writers of one token's last-used time, as two replicas would be:
    // the later time wins whichever is written last.
    let id_hex = &id; // ids are UUIDs; the table keys them by their 16 bytes
    let later = START.as_nanos() + 50_000_000_000;
    let earlier = START.as_nanos() + 10_000_000_000;
    for at in [later, earlier] {
        pg.execute(
            &db_name(&url),
            &format!(
                "UPDATE tokend_tokens SET last_used = GREATEST(last_used, {at})
                 WHERE id = decode(replace('{id_hex}', '-', ''), 'hex')"
            ),
        )
        .await;
    }
    let server = start(&url, &clock, &admin_secret).await;
    let mut admin = server.admin().await;
    let got = admin.get(pb::GetRequest { id: id.clone() }).await.unwrap().into_inner().token.unwrap();
    assert_eq!(got.last_used_time.unwrap().seconds, later / 1_000_000_000);
    // And tokend's own write of an earlier time does not move it back.
    clock.advance(Duration::from_secs(11)); // START + 11 s: after `earlier`, before `later`
    let mut v = server.verifier().await;
    assert_eq!(result(&verify(&mut v, &t.secret, &[]).await), VerifyResult::Ok);
    server.stop().await;
    let server = start(&url, &clock, &admin_secret).await;
    let mut admin = server.admin().await;
    let got = admin.get(pb::GetRequest { id }).await.unwrap().into_inner().token.unwrap();
    assert_eq!(got.last_used_time.unwrap().seconds, later / 1_000_000_000, "GREATEST kept the later time");
    server.stop().await;
}

fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fail_unavailable_while_the_database_is_down_and_work_again_after() {
    let Some(mut pg) = Postgres::start() else { return };
    let url = pg.create_database().await;
    let (clock, admin_secret) = (Clock::manual(START), Secret::generate("tk"));
    let server = start(&url, &clock, &admin_secret).await;
    let mut admin = server.admin().await;
    let mut v = server.verifier().await;
    let before = issue(&mut admin, "before", "o", &[]).await;

    pg.stop();
    let started = std::time::Instant::now();
    let err = admin.issue(common::issue_request("during", "o", &[])).await.expect_err("no false OK");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "within --store-timeout (2 s): {:?}", started.elapsed());
    assert!(!err.message().contains(common::postgres::PASSWORD));
    // Verify answers from memory; reads too.
    assert_eq!(result(&verify(&mut v, &before.secret, &[]).await), VerifyResult::Ok);
    admin.get(pb::GetRequest { id: before.token.as_ref().unwrap().id.clone() }).await.expect("Get from memory");

    pg.restart();
    // The first write after a restart may find a dead pooled connection;
    // retries succeed once the pool has reconnected.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let after = loop {
        match admin.issue(common::issue_request("after", "o", &[])).await {
            Ok(r) => break r.into_inner(),
            Err(e) if e.code() == tonic::Code::Unavailable && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("write after the database came back: {e:?}"),
        }
    };
    assert_eq!(result(&verify(&mut v, &after.secret, &[]).await), VerifyResult::Ok);
    let names: Vec<String> =
        list_all(&mut admin, pb::ListRequest::default()).await.into_iter().map(|t| t.name).collect();
    assert!(!names.contains(&"during".to_owned()), "the refused write left nothing behind: {names:?}");
    server.stop().await;
}

/// `tokend serve --store …` as a real process, expected to fail at start-up.
fn failed_start(store: &str, extra: &[&str]) -> (std::process::ExitStatus, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--store", store])
        .args(extra)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_errors_are_clear_and_never_show_the_password() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database().await;
    let db = db_name(&url);
    let secret = "hunter2-not-the-password";

    // Not a PostgreSQL URL.
    let (status, err, _) = failed_start(&format!("mysql://u:{secret}@127.0.0.1/db"), &[]);
    assert!(!status.success());
    assert!(err.contains("--store") && err.contains("postgres://"), "{err}");
    assert!(!err.contains(secret), "{err}");

    // A wrong password: final at once, naming host, port and database.
    let (status, err, took) =
        failed_start(&format!("postgres://postgres:{secret}@127.0.0.1:{}/{db}?sslmode=disable", pg.port), &[]);
    assert!(!status.success());
    assert!(err.contains(&format!("127.0.0.1:{}/{db}", pg.port)), "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains(secret), "{err}");
    assert!(took < Duration::from_secs(10), "no waiting on a wrong password: {took:?}");

    // Unreachable: waits for --store-connect-timeout, logging each failure,
    // then one clear line.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (status, err, took) = failed_start(
        &format!("postgres://postgres:{secret}@127.0.0.1:{closed}/{db}?sslmode=disable"),
        &["--store-connect-timeout", "2s"],
    );
    assert!(!status.success());
    assert!(err.contains("database not reachable; waiting"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{closed}/{db}")) && err.contains("not reachable within"), "{err}");
    assert!(!err.contains(secret), "{err}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(15), "{took:?}");

    // A schema newer than this binary.
    let (clock, admin) = (Clock::manual(START), Secret::generate("tk"));
    start(&url, &clock, &admin).await.stop().await;
    pg.execute(&db, "INSERT INTO tokend_schema_migrations (version) VALUES (999)").await;
    let (status, err, _) = failed_start(&url, &[]);
    assert!(!status.success());
    assert!(err.contains("version 999") && err.contains("newer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = Secret::generate("tk");
    let env = [("TOKEND_BOOTSTRAP_TOKEN", admin.expose())];
    let mut p = common::process::Process::serve_with_env(dir.path(), &["--store", &url], &env);
    let addr = p.addr();
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = pb::token_service_client::TokenServiceClient::with_interceptor(
        channel,
        common::Bearer(admin.expose().to_owned()),
    );
    let mut acknowledged = Vec::new();
    for i in 0..50 {
        let r = client.issue(common::issue_request(&format!("t{i}"), "o", &[])).await.unwrap().into_inner();
        if i % 5 == 0 {
            let id = r.token.as_ref().unwrap().id.clone();
            client.revoke(pb::RevokeRequest { id, reason: String::new() }).await.unwrap();
        }
        acknowledged.push((r.secret, i % 5 == 0));
    }
    p.kill9();

    let clock = Clock::System;
    let server = start(&url, &clock, &admin).await;
    let mut v = server.verifier().await;
    for (secret, revoked) in &acknowledged {
        let want = if *revoked { VerifyResult::Revoked } else { VerifyResult::Ok };
        assert_eq!(result(&verify(&mut v, secret, &[]).await), want);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_encrypts_and_checks_the_server_as_sslmode_says() {
    let Some((pg, roots)) = Postgres::start_tls() else { return };
    let db = pg.create_database_named().await;
    let (clock, admin) = (Clock::manual(START), Secret::generate("tk"));
    let open = |query: String| {
        let mut config = config(&pg.url_with(&db, &query), &clock, &admin);
        config.postgres.as_mut().unwrap().connect_timeout = Duration::from_secs(1);
        tokend::Tokend::open(config)
    };

    // The server takes TLS only: a plaintext connection is refused.
    let err = open("sslmode=disable".into()).await.err().expect("plaintext is refused").to_string();
    assert!(err.contains("no encryption"), "{err}");

    // require: encrypted; verify-full: and the certificate chains to the CA
    // and names 127.0.0.1; verify-ca: the chain only.
    for query in [
        "sslmode=require".to_owned(),
        format!("sslmode=verify-full&sslrootcert={}", roots.ca.display()),
        format!("sslmode=verify-ca&sslrootcert={}", roots.ca.display()),
    ] {
        let tokend = open(query.clone()).await.unwrap_or_else(|e| panic!("{query}: {e}"));
        drop(tokend);
    }
    let server = start(&pg.url_with(&db, "sslmode=require"), &clock, &admin).await;
    let mut admin_client = server.admin().await;
    let t = issue(&mut admin_client, "over-tls", "o", &[]).await;
    let mut v = server.verifier().await;
    assert_eq!(result(&verify(&mut v, &t.secret, &[]).await), VerifyResult::Ok);
    server.stop().await;

    // A certificate from another CA is refused under verify-full.
    let query = format!("sslmode=verify-full&sslrootcert={}", roots.other_ca.display());
    let err = open(query).await.err().expect("an unknown issuer is refused").to_string();
    assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_not_serving_while_start_up_waits_for_the_database() {
    // No PostgreSQL needed: the point is one that does not answer.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://tokend:pw@127.0.0.1:{closed}/tokens?sslmode=disable");
    let mut p = common::process::Process::serve(
        dir.path(),
        &["--store", &url, "--store-connect-timeout", "30s", "--health-listen", "127.0.0.1:0"],
    );
    let addr = p.addr_of(&["serving health checks"]);
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    p.wait_for("database not reachable; waiting");
    for service in ["", "tokend.v1.VerifyService", "tokend.v1.TokenService"] {
        let req = tonic_health::pb::HealthCheckRequest { service: service.into() };
        let status = health.check(req).await.expect("answered during start-up").into_inner().status;
        assert_eq!(status, 2, "NOT_SERVING for {service:?} while waiting for the database");
    }
    p.kill9();
}
