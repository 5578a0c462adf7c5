//! Secret hygiene: a full issue / verify / rotate / revoke flow against the
//! real binary with `RUST_LOG=trace`, then every log line and every byte of
//! the data dir is searched for each secret and for its random body alone.

mod common;

use std::time::Duration;

use common::{process::Process, *};
use tokend::{
    pb::{self, token_service_client::TokenServiceClient, verify_service_client::VerifyServiceClient},
    token::{BODY_LEN, Secret},
};

fn files_under(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(std::fs::read(&path).unwrap());
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_line_or_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bootstrap = Secret::generate("tk");
    let mut server = Process::serve_with_env(
        &data,
        &["--log-format", "json", "--last-used-flush-interval", "100ms"],
        &[("RUST_LOG", "trace"), ("TOKEND_BOOTSTRAP_TOKEN", bootstrap.expose())],
    );
    let addr = server.addr();
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut admin = TokenServiceClient::with_interceptor(channel.clone(), Bearer(bootstrap.expose().to_owned()));
    let mut v = VerifyServiceClient::new(channel.clone());
    let mut secrets = vec![bootstrap.expose().to_owned()];

    let mut req = issue_request("hygiene", "team", &["a"]);
    req.ttl = Some(secs(3600));
    let issued = admin.issue(req).await.unwrap().into_inner();
    secrets.push(issued.secret.clone());
    let id = issued.token.unwrap().id;
    let issued_id = id.clone();
    assert!(verify(&mut v, &issued.secret, &["a"]).await.valid);
    assert!(!verify(&mut v, &format!("Bearer {}", issued.secret), &["b"]).await.valid);
    // A typo'd secret is refused; it must not be logged either.
    let mut typo = issued.secret.clone();
    typo.pop();
    verify(&mut v, &typo, &[]).await;
    let rotated = admin.rotate(pb::RotateRequest { id, grace_period: Some(secs(60)) }).await.unwrap().into_inner();
    secrets.push(rotated.secret.clone());
    assert!(verify(&mut v, &rotated.secret, &[]).await.valid);
    let rotated2 = admin
        .rotate(pb::RotateRequest { id: rotated.token.unwrap().id, grace_period: None })
        .await
        .unwrap()
        .into_inner();
    secrets.push(rotated2.secret.clone());
    admin.revoke(pb::RevokeRequest { id: rotated2.token.unwrap().id, reason: "done".into() }).await.unwrap();
    // Refused admin calls log their reason: with a non-admin and a bad token.
    let mut non_admin = TokenServiceClient::with_interceptor(channel.clone(), Bearer(issued.secret.clone()));
    assert!(non_admin.list(pb::ListRequest::default()).await.is_err());
    let mut bad = TokenServiceClient::with_interceptor(channel.clone(), Bearer(typo.clone()));
    assert!(bad.list(pb::ListRequest::default()).await.is_err());
    let bootstrap_id =
        list_all(&mut admin, pb::ListRequest { owner: "tokend".into(), ..Default::default() }).await[0].id.clone();
    tokio::time::sleep(Duration::from_millis(250)).await; // a last-used persistence pass
    drop((admin, v, non_admin, bad, channel));

    assert!(server.terminate().success());
    let log = server.log();
    assert!(log.len() > 10_000, "trace logging was on ({} bytes)", log.len());
    assert!(log.lines().all(|l| l.starts_with('{') && l.ends_with('}')), "--log-format json: one object per line");
    // One audit line per admin action, naming the token, its owner and the acting admin token.
    let issue_line = log.lines().find(|l| l.contains("token issued")).expect("issue is logged");
    for field in [issued_id.as_str(), "team", bootstrap_id.as_str()] {
        assert!(issue_line.contains(field), "{field} missing from {issue_line}");
    }
    assert!(log.contains("token rotated") && log.contains("token revoked"));
    // Refusals are logged with their reason (never the presented value: checked below).
    assert!(log.lines().any(|l| l.contains("admin call refused") && l.contains("insufficient_scope")));
    assert!(log.lines().any(|l| l.contains("admin call refused") && l.contains("malformed")));
    let log = log.into_bytes();

    let mut stored = Vec::new();
    files_under(&data, &mut stored);
    assert!(!stored.is_empty());
    secrets.push(typo);
    for secret in &secrets {
        let body = &secret[secret.len() - BODY_LEN - 6..secret.len() - 6];
        for needle in [secret.as_str(), body, &body[..20], &body[BODY_LEN - 20..]] {
            assert!(!contains(&log, needle), "a secret fragment reached the log");
            for file in &stored {
                assert!(!contains(file, needle), "a secret fragment reached the data dir");
            }
        }
    }
}
