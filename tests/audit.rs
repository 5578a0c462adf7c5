//! The audit trail (issue #12, item 7): every change and every refusal of
//! an authenticated caller becomes one chained event; ListAuditEvents
//! filters and pages it; the chain survives restarts and shows tampering
//! (the store edited directly, then `tokend audit verify`); the JSON log
//! file mirrors it. The kill -9 side is in `crash.rs`.

mod common;

use std::{collections::BTreeSet, process::Command, sync::Arc, time::Duration};

use common::{process::BIN, *};
use prost::Message as _;
use prost_types::FieldMask;
use tokend::pb;
use tonic::Code;

fn id(r: &pb::IssueResponse) -> String {
    r.token.as_ref().unwrap().id.clone()
}

fn summary(events: &[pb::AuditEvent]) -> Vec<(u64, &str, &str)> {
    events.iter().map(|e| (e.seq, e.action.as_str(), e.code.as_str())).collect()
}

#[tokio::test]
async fn every_change_and_every_refusal_of_a_known_caller_is_chained() {
    let server = TestServer::start_with(|c| c.max_tokens_per_owner = 2).await;
    let mut root = server.admin().await;
    let mut req = issue_request("ci", "team-a", &["deploy"]);
    req.labels.insert("env".into(), "prod".into());
    req.ttl = Some(secs(3600));
    let t1 = root.issue(req).await.unwrap().into_inner();
    let rename = pb::UpdateRequest {
        token: Some(pb::Token { id: id(&t1), name: "ci-2".into(), ..Default::default() }),
        update_mask: Some(FieldMask { paths: vec!["name".into()] }),
    };
    root.update(rename).await.unwrap();
    let rotated = root.rotate(pb::RotateRequest { id: id(&t1), grace_period: Some(secs(60)) }).await.unwrap();
    let t2 = rotated.into_inner();
    let t2_id = t2.token.as_ref().unwrap().id.clone();
    root.revoke(pb::RevokeRequest { id: t2_id.clone(), reason: "leaked".into() }).await.unwrap();
    let unknown = "0190aaaa-0000-7000-8000-000000000000";
    assert_eq!(root.get(pb::GetRequest { id: unknown.into() }).await.unwrap_err().code(), Code::NotFound);
    let bad = root.issue(issue_request("", "team-a", &[])).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let again = root.rotate(pb::RotateRequest { id: t2_id.clone(), grace_period: None }).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let plain = issue(&mut root, "plain", "team-q", &["deploy"]).await;
    let denied = server.admin_as(&plain.secret).await.get(pb::GetRequest { id: id(&t1) }).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Nobody to attribute these to: logs and metrics only.
    let anonymous = server.admin_as("tk_not-a-token").await.get(pb::GetRequest { id: id(&t1) }).await;
    assert_eq!(anonymous.unwrap_err().code(), Code::Unauthenticated);
    issue(&mut root, "q2", "team-q", &[]).await;
    let full = root.issue(issue_request("q3", "team-q", &[])).await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted);

    let events = audit_events(&mut root, Default::default()).await;
    assert_eq!(
        summary(&events),
        [
            (1, "bootstrap", "OK"),
            (2, "issue", "OK"),
            (3, "update", "OK"),
            (4, "rotate", "OK"),
            (5, "revoke", "OK"),
            (6, "get", "NOT_FOUND"),
            (7, "issue", "INVALID_ARGUMENT"),
            (8, "rotate", "FAILED_PRECONDITION"),
            (9, "issue", "OK"),
            (10, "get", "PERMISSION_DENIED"),
            (11, "issue", "OK"),
            (12, "issue", "RESOURCE_EXHAUSTED"),
        ]
    );
    let head = check_chain(&events).expect("the chain verifies");
    assert_eq!((head.seq, head.hash.to_vec()), (12, events[11].hash.clone()));
    assert_eq!(events[0].prev_hash, vec![0; 32], "the first event chains from 32 zero bytes");

    let root_id = events[1].actor_id.clone();
    let e = |seq: usize| &events[seq - 1];
    assert_eq!((e(1).actor_id.as_str(), e(1).owner.as_str(), e(1).peer.as_str()), ("", "tokend", ""));
    assert_eq!(e(1).details["scopes"], "tokend.admin");
    assert_eq!((e(2).target_id.as_str(), e(2).owner.as_str()), (id(&t1).as_str(), "team-a"));
    assert_eq!(e(2).details["name"], "ci");
    assert_eq!(e(2).details["labels.env"], "prod");
    assert_eq!(e(2).details["expire_time"], "2026-11-22T01:00:00Z");
    assert_eq!((e(3).details["update_mask"].as_str(), e(3).details["name"].as_str()), ("name", "ci-2"));
    assert_eq!(e(4).target_id, id(&t1), "Rotate targets the old token");
    assert_eq!((e(4).details["new_id"].as_str(), e(4).details["grace_period"].as_str()), (t2_id.as_str(), "60s"));
    assert_eq!((e(5).target_id.as_str(), e(5).details["reason"].as_str()), (t2_id.as_str(), "leaked"));
    assert_eq!((e(6).target_id.as_str(), e(6).owner.as_str()), (unknown, ""));
    assert_eq!((e(7).owner.as_str(), e(7).target_id.as_str()), ("team-a", ""));
    assert!(e(7).details["message"].contains("name"), "{:?}", e(7).details);
    assert_eq!((e(8).target_id.as_str(), e(8).owner.as_str()), (t2_id.as_str(), "team-a"));
    assert_eq!(e(10).actor_id, id(&plain), "a refusal names the token that was refused");
    assert_eq!(e(12).owner, "team-q");
    for event in &events[1..] {
        assert_eq!(event.peer, "127.0.0.1", "seq {}", event.seq);
        if event.seq != 10 {
            assert_eq!(event.actor_id, root_id, "seq {}", event.seq);
        }
    }
    // Never a secret, nor a stored hash.
    let text = format!("{events:?}");
    for secret in [&t1.secret, &t2.secret, &plain.secret, &server.admin_token] {
        let hash: String = blake3::hash(secret.as_bytes()).as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!text.contains(secret.as_str()) && !text.contains(&hash));
    }
}

#[tokio::test]
async fn list_audit_events_filters_and_pages_and_the_chain_outlives_restarts() {
    let server = TestServer::start().await;
    let mut root = server.admin().await;
    let tokens: Vec<_> = futures_issue(&mut root, 5).await;
    root.revoke(pb::RevokeRequest { id: id(&tokens[2]), reason: String::new() }).await.unwrap();
    server.clock.advance(Duration::from_secs(60));
    let later = issue(&mut root, "later", "team-b", &[]).await;

    let only = |events: Vec<pb::AuditEvent>| events.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    let on = pb::ListAuditEventsRequest { target_id: id(&tokens[2]), ..Default::default() };
    assert_eq!(only(audit_events(&mut root, on).await), [4, 7]);
    let since = pb::ListAuditEventsRequest {
        since: Some(prost_types::Timestamp { seconds: START.0 / 1_000_000_000 + 60, nanos: 0 }),
        ..Default::default()
    };
    assert_eq!(only(audit_events(&mut root, since).await), [8], "since is inclusive");
    let root_id = audit_events(&mut root, Default::default()).await[1].actor_id.clone();
    let by_root = pb::ListAuditEventsRequest { actor_id: root_id, ..Default::default() };
    assert_eq!(only(audit_events(&mut root, by_root).await), [2, 3, 4, 5, 6, 7, 8]);

    // Small pages: every event once, in order.
    let mut seen = Vec::new();
    let mut req = pb::ListAuditEventsRequest { page_size: 3, ..Default::default() };
    loop {
        let page = root.list_audit_events(req.clone()).await.unwrap().into_inner();
        assert!(page.events.len() <= 3);
        seen.extend(page.events.iter().map(|e| e.seq));
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    assert_eq!(seen, (1..=8).collect::<Vec<_>>());

    for (bad, field) in [
        (pb::ListAuditEventsRequest { page_token: "nonsense".into(), ..Default::default() }, "page_token"),
        (pb::ListAuditEventsRequest { page_size: 1001, ..Default::default() }, "page_size"),
        (pb::ListAuditEventsRequest { target_id: "x".into(), ..Default::default() }, "target_id"),
        (pb::ListAuditEventsRequest { actor_id: "x".into(), ..Default::default() }, "actor_id"),
    ] {
        let refused = root.list_audit_events(bad).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains(field), "{field} in {}", refused.message());
    }

    // A restart continues the chain where it stopped.
    let server = server.restart_with(|_| {}).await;
    let mut root = server.admin().await;
    root.revoke(pb::RevokeRequest { id: id(&later), reason: String::new() }).await.unwrap();
    let events = audit_events(&mut root, Default::default()).await;
    // The refused calls above were audited too (4 INVALID_ARGUMENT).
    assert_eq!(summary(&events).last().unwrap(), &(13, "revoke", "OK"));
    check_chain(&events).expect("the chain verifies across the restart");
}

async fn futures_issue(root: &mut AdminClient, n: usize) -> Vec<pb::IssueResponse> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(issue(root, &format!("t{i}"), "team-a", &[]).await);
    }
    out
}

#[tokio::test]
async fn owner_scoped_auditors_see_their_owners_events() {
    let server = TestServer::start().await;
    let mut root = server.admin().await;
    issue(&mut root, "a", "team-a", &[]).await;
    issue(&mut root, "b", "team-b", &[]).await;
    let team_reader = issue(&mut root, "audit-a", "team-a", &["tokend.read:team-a"]).await;
    let reader = issue(&mut root, "audit", "ops", &["tokend.read"]).await;

    let mut team = server.admin_as(&team_reader.secret).await;
    let theirs = audit_events(&mut team, Default::default()).await;
    assert!(!theirs.is_empty() && theirs.iter().all(|e| e.owner == "team-a"), "{theirs:?}");
    assert_eq!(theirs.len(), 2, "issue of a, issue of audit-a");
    let all = audit_events(&mut server.admin_as(&reader.secret).await, Default::default()).await;
    assert_eq!(all.len(), 5);
    check_chain(&all).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_stay_whole_under_concurrent_writes() {
    let server = Arc::new(TestServer::start().await);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let server = server.clone();
            tokio::spawn(async move {
                let mut root = server.admin().await;
                for i in 0..25 {
                    issue(&mut root, &format!("w{w}-{i}"), &format!("o{w}"), &[]).await;
                }
            })
        })
        .collect();
    // Page through while they write: positions never skip or repeat.
    let mut root = server.admin().await;
    let mut seen: Vec<u64> = Vec::new();
    let mut req = pb::ListAuditEventsRequest { page_size: 7, ..Default::default() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = root.list_audit_events(req.clone()).await.unwrap().into_inner();
        seen.extend(page.events.iter().map(|e| e.seq));
        if !page.next_page_token.is_empty() {
            req.page_token = page.next_page_token;
        } else if writers.iter().all(|w| w.is_finished()) && seen.len() == 201 {
            break;
        } else if let Some(last) = seen.last() {
            // At the end for now: go on from the last event seen.
            req.page_token = format!("a{last}");
        }
        assert!(tokio::time::Instant::now() < deadline, "saw {} events", seen.len());
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(seen, (1..=201).collect::<Vec<_>>());
    let events = audit_events(&mut root, Default::default()).await;
    check_chain(&events).unwrap();
}

#[tokio::test]
async fn tampering_with_the_store_is_found_offline() {
    let server = TestServer::start().await;
    let mut root = server.admin().await;
    for i in 0..4 {
        issue(&mut root, &format!("t{i}"), "team-a", &["deploy"]).await;
    }
    let events = audit_events(&mut root, Default::default()).await;
    let head: String = events.last().unwrap().hash.iter().map(|b| format!("{b:02x}")).collect();
    let dir = server.stop().await;

    let verify = |dir: &std::path::Path| {
        let out = Command::new(BIN).args(["audit", "verify", "--data-dir"]).arg(dir).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    };
    let (code, text) = verify(&dir.path().join("no-such-dir"));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("not a tokend data dir"), "{text}");
    let (code, text) = verify(dir.path());
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("5 events, head {head}")), "{text}");

    type Tamper = fn(&sled::Tree);
    let cases: [(&str, Tamper, u64); 3] = [
        (
            "modified",
            |audit| {
                let key = 3u64.to_be_bytes();
                let mut event = tokend::audit::Event::decode(&*audit.get(key).unwrap().unwrap()).unwrap();
                event.details.insert("scopes".into(), "deploy tokend.admin".into());
                audit.insert(key, event.encode_to_vec()).unwrap();
            },
            3,
        ),
        (
            "deleted",
            |audit| {
                audit.remove(2u64.to_be_bytes()).unwrap();
            },
            2,
        ),
        (
            "reordered",
            |audit| {
                let (four, five) = (audit.get(4u64.to_be_bytes()).unwrap(), audit.get(5u64.to_be_bytes()).unwrap());
                audit.insert(4u64.to_be_bytes(), five.unwrap()).unwrap();
                audit.insert(5u64.to_be_bytes(), four.unwrap()).unwrap();
            },
            4,
        ),
    ];
    for (what, tamper, broken) in cases {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        {
            let db = sled::open(copy.path()).unwrap();
            tamper(&db.open_tree("audit").unwrap());
            db.flush().unwrap();
        }
        let (code, text) = verify(copy.path());
        assert_eq!(code, Some(1), "{what}: {text}");
        assert!(text.contains(&format!("broken at seq {broken}")), "{what}: {text}");
    }
}

#[tokio::test]
async fn the_audit_log_file_holds_each_event_as_protobuf_json() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("audit.jsonl");
    let server = TestServer::start_with(|c| c.audit_log_file = Some(path.clone())).await;
    let mut root = server.admin().await;
    let t = issue(&mut root, "ci", "team-a", &[]).await;
    root.revoke(pb::RevokeRequest { id: id(&t), reason: "r".into() }).await.unwrap();
    root.get(pb::GetRequest { id: "nope".into() }).await.unwrap_err();
    let events = audit_events(&mut root, Default::default()).await;

    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), events.len(), "{lines:?}");
    for (line, event) in lines.iter().zip(&events) {
        assert_eq!(line["seq"], event.seq.to_string(), "uint64 as a string");
        assert_eq!(line["action"], event.action);
        assert_eq!(line["code"], event.code);
        if !event.target_id.is_empty() {
            assert_eq!(line["targetId"], event.target_id);
        }
        if !event.actor_id.is_empty() {
            assert_eq!(line["actorId"], event.actor_id);
        }
        assert_eq!(line["hash"].as_str().unwrap().len(), 44, "32 bytes in base64");
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(lines[2]["details"]["reason"], "r");
    let actions: BTreeSet<&str> = lines.iter().map(|l| l["action"].as_str().unwrap()).collect();
    assert_eq!(actions, BTreeSet::from(["bootstrap", "issue", "revoke", "get"]));
}

#[tokio::test]
async fn refusals_before_the_handler_and_repeated_revokes_are_audited() {
    let server = TestServer::start().await;
    let mut root = server.admin().await;
    let reader = issue(&mut root, "audit", "ops", &["tokend.read"]).await;
    let fenced = root
        .issue(pb::IssueRequest {
            allowed_cidrs: vec!["192.0.2.0/24".into()],
            ..issue_request("far", "ops", &["tokend.admin"])
        })
        .await
        .unwrap()
        .into_inner();
    let t = issue(&mut root, "t", "team-a", &[]).await;
    // A reader writing, an admin token from outside its allowlist: refused
    // before any handler runs, and on the record.
    let read_only = server.admin_as(&reader.secret).await.issue(issue_request("x", "team-a", &[])).await;
    assert_eq!(read_only.unwrap_err().code(), Code::PermissionDenied);
    let outside = server.admin_as(&fenced.secret).await.get(pb::GetRequest { id: id(&t) }).await;
    assert_eq!(outside.unwrap_err().code(), Code::PermissionDenied);
    let bad_page = pb::ListAuditEventsRequest { page_token: "nonsense".into(), ..Default::default() };
    assert_eq!(root.list_audit_events(bad_page).await.unwrap_err().code(), Code::InvalidArgument);
    for _ in 0..2 {
        root.revoke(pb::RevokeRequest { id: id(&t), reason: "r".into() }).await.unwrap();
    }
    // Past the last possible position: an empty last page, not a panic.
    let end = pb::ListAuditEventsRequest { page_token: format!("a{}", u64::MAX), ..Default::default() };
    let end = root.list_audit_events(end).await.unwrap().into_inner();
    assert!(end.events.is_empty() && end.next_page_token.is_empty());

    let events = audit_events(&mut root, Default::default()).await;
    check_chain(&events).unwrap();
    let tail: Vec<(&str, &str, &str)> =
        events[4..].iter().map(|e| (e.action.as_str(), e.code.as_str(), e.actor_id.as_str())).collect();
    let root_id = events[1].actor_id.as_str();
    assert_eq!(
        tail,
        [
            ("issue", "PERMISSION_DENIED", id(&reader).as_str()),
            ("get", "PERMISSION_DENIED", id(&fenced).as_str()),
            ("listauditevents", "INVALID_ARGUMENT", root_id),
            ("revoke", "OK", root_id),
            ("revoke", "OK", root_id),
        ]
    );
    assert!(events[4].details["message"].contains("tokend.admin"), "{:?}", events[4].details);
    assert_eq!(events[5].target_id, id(&t));
    assert_eq!(events[7].details.get("already_revoked"), None);
    assert_eq!(events[8].details["already_revoked"], "true", "a repeated revoke is recorded as such");
}
