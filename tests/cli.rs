//! The admin CLI (`tokend issue | list | get | revoke | rotate | update | verify | audit`)
//! driven as a real process against a real server, with its exit codes.

mod common;

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

use common::{process::BIN, *};
use serde_json::Value;

/// Runs the CLI against `server` with the admin token in TOKEND_TOKEN.
async fn cli(server: &TestServer, token: &str, args: &[&str]) -> Output {
    let (addr, token) = (server.addr, token.to_owned());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env("TOKEND_SERVER", format!("http://{addr}"))
            .env("TOKEND_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_the_whole_token_life() {
    let server = TestServer::start().await;
    let admin = server.admin_token.clone();
    let issued = json(
        &cli(
            &server,
            &admin,
            &[
                "issue", "--name", "ci", "--owner", "team-a", "--scope", "read", "--scope", "write", "--label",
                "env=prod", "--ttl", "30d", "--output", "json",
            ],
        )
        .await,
    );
    let secret = issued["secret"].as_str().unwrap().to_owned();
    let id = issued["token"]["id"].as_str().unwrap().to_owned();
    assert_eq!(issued["token"]["scopes"], serde_json::json!(["read", "write"]));
    assert_eq!(issued["token"]["labels"]["env"], "prod");
    assert_eq!(issued["token"]["status"], "active");
    let created = issued["token"]["create_time"].as_str().unwrap();
    let expires = issued["token"]["expire_time"].as_str().unwrap();
    assert!(created.ends_with('Z') && expires > created, "{created} {expires}");

    // verify: exit 0 when valid, 1 when not.
    let ok = cli(&server, "", &["verify", &secret, "--scope", "read"]).await;
    assert_eq!(ok.status.code(), Some(0));
    assert!(stdout(&ok).contains("team-a"));
    let missing = cli(&server, "", &["verify", &secret, "--scope", "admin"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(stdout(&missing).contains("insufficient_scope"));
    assert_eq!(cli(&server, "", &["verify", "garbage"]).await.status.code(), Some(1));
    // `-` reads the token from stdin, so it never shows in `ps`.
    let piped = tokio::task::spawn_blocking({
        let (addr, secret) = (server.addr, secret.clone());
        move || {
            let mut child = Command::new(BIN)
                .args(["verify", "-", "--output", "json"])
                .env("TOKEND_SERVER", format!("http://{addr}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(format!("{secret}\n").as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(json(&piped)["valid"], true);

    // list: a readable table with hint and status, and JSON.
    let table = stdout(&cli(&server, &admin, &["list", "--owner", "team-a"]).await);
    let hint = issued["token"]["hint"].as_str().unwrap();
    assert!(table.lines().next().unwrap().starts_with("ID"), "{table}");
    assert!(table.contains(&id) && table.contains(hint) && table.contains("active"), "{table}");
    assert!(!table.contains(&secret[3..]), "lists never show a secret");
    let all = json(&cli(&server, &admin, &["list", "--output", "json"]).await);
    assert_eq!(all.as_array().unwrap().len(), 2, "the bootstrap token and ours");

    // get, rotate with grace, revoke.
    let got = stdout(&cli(&server, &admin, &["get", &id]).await);
    assert!(got.contains("name:") && got.contains("ci") && got.contains("env=prod"), "{got}");
    let rotated = json(&cli(&server, &admin, &["rotate", &id, "--grace", "1h", "--output", "json"]).await);
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_eq!(rotated["previous"]["rotated_to"], rotated["token"]["id"]);
    assert_eq!(cli(&server, "", &["verify", &secret]).await.status.code(), Some(0), "grace period");
    let new_id = rotated["token"]["id"].as_str().unwrap().to_owned();
    let revoked = stdout(&cli(&server, &admin, &["revoke", &new_id, "--reason", "test"]).await);
    assert!(revoked.contains("revoked") && revoked.contains("test"), "{revoked}");
    assert_eq!(cli(&server, "", &["verify", &new_secret]).await.status.code(), Some(1));
    let revoked_only = json(&cli(&server, &admin, &["list", "--status", "revoked", "--output", "json"]).await);
    assert_eq!(revoked_only[0]["id"], new_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exit_codes_tell_usage_refusal_and_unreachable_apart() {
    let server = TestServer::start().await;
    let refused = cli(&server, "tk_not_a_token", &["list"]).await;
    assert_eq!(refused.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"));
    let missing = tokend::id::IdGenerator::default().next(START).to_string();
    let not_found = cli(&server, &server.admin_token, &["get", &missing]).await;
    assert_eq!(not_found.status.code(), Some(3));
    assert_eq!(
        cli(&server, &server.admin_token, &["issue", "--name", "n", "--owner", "o", "--ttl", "soon"])
            .await
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        cli(&server, &server.admin_token, &["issue", "--name", "n", "--owner", "o", "--label", "novalue"])
            .await
            .status
            .code(),
        Some(2)
    );
    let no_token = tokio::task::spawn_blocking({
        let addr = server.addr;
        move || {
            Command::new(BIN)
                .args(["list"])
                .env("TOKEND_SERVER", format!("http://{addr}"))
                .env_remove("TOKEND_TOKEN")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(no_token.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("TOKEND_TOKEN"));
    // Nothing listens on port 1.
    let out = Command::new(BIN).args(["verify", "x", "--server", "http://127.0.0.1:1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_issues_updates_lists_and_verifies_with_the_policy_fields() {
    let server = TestServer::start().await;
    let admin = server.admin_token.clone();
    let issued = json(
        &cli(
            &server,
            &admin,
            &[
                "issue",
                "--name",
                "ci-net",
                "--owner",
                "team-p",
                "--scope",
                "a",
                "--scope",
                "b",
                "--allow",
                "10.0.0.0/8",
                "--allow",
                "2001:DB8::/32",
                "--not-before",
                "2026-11-22T00:00:00Z",
                "--output",
                "json",
            ],
        )
        .await,
    );
    let (secret, id) =
        (issued["secret"].as_str().unwrap().to_owned(), issued["token"]["id"].as_str().unwrap().to_owned());
    assert_eq!(issued["token"]["allowed_cidrs"], serde_json::json!(["10.0.0.0/8", "2001:db8::/32"]));
    assert_eq!(issued["token"]["not_before"], "2026-11-22T00:00:00Z");

    let inside = cli(&server, &admin, &["verify", &secret, "--client-ip", "10.1.2.3", "--output", "json"]).await;
    assert_eq!(json(&inside)["result"], "ok");
    let outside = cli(&server, &admin, &["verify", &secret, "--client-ip", "11.1.2.3", "--output", "json"]).await;
    assert_eq!(outside.status.code(), Some(1));
    assert!(stdout(&outside).contains("ip_not_allowed"), "{}", stdout(&outside));

    let updated = json(
        &cli(
            &server,
            &admin,
            &[
                "update",
                &id,
                "--name",
                "ci-open",
                "--scope",
                "a",
                "--clear-allow",
                "--expire-at",
                "2026-11-23T00:00:00Z",
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(updated["name"], "ci-open");
    assert_eq!(updated["scopes"], serde_json::json!(["a"]));
    assert_eq!(updated["allowed_cidrs"], serde_json::json!([]));
    assert_eq!(updated["expire_time"], "2026-11-23T00:00:00Z");
    let refused = cli(&server, &admin, &["update", &id, "--scope", "c"]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("scopes"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!cli(&server, &admin, &["update", &id]).await.status.success(), "nothing to change is a usage error");

    let listed = json(
        &cli(
            &server,
            &admin,
            &["list", "--name-prefix", "ci-", "--expiring-before", "2026-11-24T00:00:00Z", "--output", "json"],
        )
        .await,
    );
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    let none = json(&cli(&server, &admin, &["list", "--name-prefix", "deploy-", "--output", "json"]).await);
    assert_eq!(none.as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_hands_out_owner_scoped_admins_and_reads_and_verifies_the_audit_trail() {
    let server = TestServer::start().await;
    let admin = server.admin_token.clone();
    let team = json(
        &cli(
            &server,
            &admin,
            &[
                "issue",
                "--name",
                "team-a-admin",
                "--owner",
                "team-a",
                "--scope",
                "tokend.admin:team-a",
                "--output",
                "json",
            ],
        )
        .await,
    );
    let team_secret = team["secret"].as_str().unwrap().to_owned();
    let mine = cli(&server, &team_secret, &["issue", "--name", "svc", "--owner", "team-a", "--output", "json"]).await;
    let mine_id = json(&mine)["token"]["id"].as_str().unwrap().to_owned();
    let other = cli(&server, &team_secret, &["issue", "--name", "svc", "--owner", "team-b"]).await;
    assert_eq!(other.status.code(), Some(3), "refused by the server");
    assert!(String::from_utf8_lossy(&other.stderr).contains("PermissionDenied"));

    // audit list: every event, as a table or as the log file's JSON.
    let listed = json(&cli(&server, &admin, &["audit", "list", "--output", "json"]).await);
    let events = listed.as_array().unwrap();
    let actions: Vec<(&str, &str)> =
        events.iter().map(|e| (e["action"].as_str().unwrap(), e["code"].as_str().unwrap())).collect();
    assert_eq!(actions, [("bootstrap", "OK"), ("issue", "OK"), ("issue", "OK"), ("issue", "PERMISSION_DENIED")]);
    assert_eq!(events[2]["targetId"], mine_id.as_str());
    let table = cli(&server, &admin, &["audit", "list", "--target", &mine_id]).await;
    assert!(table.status.success());
    let rows: Vec<String> = stdout(&table).lines().skip(1).map(str::to_owned).collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].starts_with("3 ") && rows[0].contains("issue") && rows[0].contains("name=\"svc\""), "{rows:?}");

    // audit verify through the server: the count and the head hash.
    let verified = cli(&server, &admin, &["audit", "verify"]).await;
    assert_eq!(verified.status.code(), Some(0), "{}", String::from_utf8_lossy(&verified.stderr));
    let head = events[3]["hash"].as_str().unwrap();
    let head_hex: String = base64_decode(head).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(stdout(&verified).trim(), format!("audit chain ok: 4 events, head {head_hex}"));
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    digits
        .chunks(4)
        .flat_map(|chunk| {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, d)| n | u32::from(*d) << (18 - 6 * i));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes.into_iter().take(chunk.len() - 1)
        })
        .collect()
}
