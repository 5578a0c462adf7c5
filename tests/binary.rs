//! The real `tokend` binary: start-up banner, serving, SIGTERM, bad
//! configuration, a locked data dir, and `token generate`.

mod common;

use std::{process::Command, time::Duration};

use common::{process::Process, *};
use tokend::{pb, token::Secret};
use tonic_health::pb::health_check_response::ServingStatus;

use common::process::BIN;

// Multi-threaded: terminate() blocks this thread, and the client's connection
// task must still run to answer the server's GOAWAY, or the drain would wait
// for the whole shutdown grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_the_bootstrap_token_once_serves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Process::serve(dir.path(), &[]);
    p.wait_for("bootstrap admin token was generated");
    p.wait_for(""); // the blank line
    let token_line = p.wait_for("tk_");
    let admin_token = token_line.trim().to_owned();
    Secret::from_text(&admin_token).expect("the banner shows a well-formed token");
    let addr = p.addr();

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut admin =
        pb::token_service_client::TokenServiceClient::with_interceptor(channel.clone(), Bearer(admin_token));
    let issued = admin.issue(issue_request("bin", "o", &["x"])).await.unwrap().into_inner();
    let mut v = pb::verify_service_client::VerifyServiceClient::new(channel);
    assert!(verify(&mut v, &issued.secret, &["x"]).await.valid);
    drop((admin, v));

    let status = p.terminate();
    assert!(status.success(), "exit status {status:?}; log:\n{}", p.seen.join("\n"));
    assert!(p.seen.iter().any(|l| l.contains("shut down cleanly")));
    assert!(!p.seen.iter().any(|l| l.contains(&issued.secret)), "the issued secret never reaches the log");

    // A restart does not print a new bootstrap token, and the token survived.
    let mut p = Process::serve(dir.path(), &[]);
    let addr = p.addr();
    assert!(!p.seen.iter().any(|l| l.contains("bootstrap admin token was generated")));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut v = pb::verify_service_client::VerifyServiceClient::new(channel);
    assert!(verify(&mut v, &issued.secret, &["x"]).await.valid);
    drop(v);
    assert!(p.terminate().success());
}

#[test]
fn a_bootstrap_token_can_come_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bootstrap");
    let token = Secret::generate("tk");
    std::fs::write(&file, format!("{}\n", token.expose())).unwrap();
    let data = dir.path().join("data");
    let mut p = Process::serve(&data, &["--bootstrap-token-file", file.to_str().unwrap()]);
    p.addr();
    assert!(!p.seen.iter().any(|l| l.contains("was generated") || l.contains(token.expose())));
    assert!(p.terminate().success());

    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data2"))
        .env("TOKEND_BOOTSTRAP_TOKEN", "tk_notatoken")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TOKEND_BOOTSTRAP_TOKEN") && err.contains("well-formed"), "{err}");
    assert!(!err.contains("tk_notatoken"), "the rejected value is not echoed");
}

#[test]
fn bad_configuration_exits_non_zero_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--token-prefix", "BAD"], "--token-prefix \"BAD\""),
        (&["--listen", "nowhere"], "--listen"),
        (&["--last-used-flush-interval", "0"], "--last-used-flush-interval"),
        (&["--shutdown-grace", "soon"], "--shutdown-grace"),
        (&["--store-cache-mb", "0"], "--store-cache-mb"),
        (&["--bootstrap-token-file", "/nonexistent/token"], "/nonexistent/token"),
        (&["--max-ttl", "1h", "--default-ttl", "2h"], "--default-ttl"),
        (&["--max-ttl", "1h", "--default-ttl", "2h"], "--max-ttl"),
    ];
    for (args, needle) in cases {
        let out = Command::new(BIN).args(["serve", "--data-dir"]).arg(dir.path()).args(*args).output().unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // The environment works like the flags.
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("TOKEND_TOKEN_PREFIX", "No")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"No\""));
}

#[test]
fn a_data_dir_locked_by_another_tokend_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Process::serve(dir.path(), &[]);
    first.addr();
    let out =
        Command::new(BIN).args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked") && err.contains(&dir.path().display().to_string()), "{err}");
    assert!(first.terminate().success());
}

#[test]
fn token_generate_prints_a_well_formed_token() {
    for (args, prefix) in
        [(&["token", "generate"][..], "tk_"), (&["token", "generate", "--prefix", "acme"][..], "acme_")]
    {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let token = text.trim();
        assert!(token.starts_with(prefix), "{token}");
        Secret::from_text(token).expect("well-formed");
    }
    let out = Command::new(BIN).args(["token", "generate", "--prefix", "Bad"]).output().unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_used_times_are_persisted_on_the_interval_not_only_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let admin_token = Secret::generate("tk");
    let env = [("TOKEND_BOOTSTRAP_TOKEN", admin_token.expose())];
    let mut p = Process::serve_with_env(dir.path(), &["--last-used-flush-interval", "100ms"], &env);
    let addr = p.addr();
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut admin = pb::token_service_client::TokenServiceClient::with_interceptor(
        channel.clone(),
        Bearer(admin_token.expose().into()),
    );
    let issued = admin.issue(issue_request("used", "o", &[])).await.unwrap().into_inner();
    let mut v = pb::verify_service_client::VerifyServiceClient::new(channel);
    assert!(verify(&mut v, &issued.secret, &[]).await.valid);
    tokio::time::sleep(Duration::from_millis(600)).await; // several persistence passes
    drop((admin, v));
    // No graceful shutdown: only the interval could have written it.
    tokio::task::spawn_blocking(move || p.kill9()).await.unwrap();

    let mut p = Process::serve_with_env(dir.path(), &[], &env);
    let addr = p.addr();
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut admin =
        pb::token_service_client::TokenServiceClient::with_interceptor(channel, Bearer(admin_token.expose().into()));
    let got = admin.get(pb::GetRequest { id: issued.token.unwrap().id }).await.unwrap().into_inner().token.unwrap();
    assert!(got.last_used_time.is_some(), "last-used time lost although persisted on the interval");
    drop(admin);
    assert!(p.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_seed_file_makes_the_admin_token_that_token_from_seed_prints() {
    let dir = tempfile::tempdir().unwrap();
    let seed: String = Secret::generate("tk").expose()[3..3 + tokend::token::BODY_LEN].to_owned();
    let seed_file = dir.path().join("seed");
    std::fs::write(&seed_file, format!("{seed}\n")).unwrap();
    let out = Command::new(BIN).args(["token", "from-seed", "--file"]).arg(&seed_file).output().unwrap();
    assert!(out.status.success());
    let admin_token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    Secret::from_text(&admin_token).expect("well-formed");

    let mut p = Process::serve(&dir.path().join("data"), &["--bootstrap-token-seed-file", seed_file.to_str().unwrap()]);
    let addr = p.addr();
    assert!(!p.log().contains("was generated"));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut admin = pb::token_service_client::TokenServiceClient::with_interceptor(channel, Bearer(admin_token));
    admin.list(pb::ListRequest::default()).await.expect("the completed token is the admin token");
    drop(admin);
    assert!(p.terminate().success());

    std::fs::write(&seed_file, "too-short").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data2"))
        .args(["--bootstrap-token-seed-file", seed_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bootstrap-token-seed-file"));
}

/// While a large token set loads, `--health-listen` already answers, with
/// NOT_SERVING; SERVING comes once every token is in, and then the last
/// token the store holds verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_until_every_token_is_loaded() {
    const TOKENS: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    // Keeps the admin secret, then those of the first and the last token.
    let secrets = tokend::seed::store(dir.path(), TOKENS, TOKENS - 1, tokend::clock::Clock::System.now()).unwrap();
    let last = secrets.last().unwrap().expose().to_owned();
    let mut p = Process::serve(dir.path(), &["--health-listen", "127.0.0.1:0"]);
    let addr = p.addr_of(&["serving health checks"]);
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut not_serving = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let req = tonic_health::pb::HealthCheckRequest { service: "tokend.v1.VerifyService".into() };
        match health.check(req).await.expect("answered while loading").into_inner().status() {
            ServingStatus::Serving => break,
            ServingStatus::NotServing => not_serving += 1,
            other => panic!("{other:?} while loading"),
        }
        assert!(std::time::Instant::now() < deadline, "not SERVING within 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(not_serving > 0, "loading {TOKENS} tokens showed no NOT_SERVING answer");
    let addr = p.addr();
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut verifier = pb::verify_service_client::VerifyServiceClient::new(channel);
    assert_eq!(result(&verify(&mut verifier, &last, &[]).await), pb::VerifyResult::Ok);
    p.kill9();
}
