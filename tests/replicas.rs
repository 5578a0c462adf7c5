//! Several replicas on one PostgreSQL: writes through any replica reach
//! every other through the change feed, the rules hold across replicas,
//! and a replica cut off from the database fails closed. Skips (saying
//! why) without PostgreSQL server binaries, unless TOKEND_REQUIRE_POSTGRES=1.

mod common;

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{START, TestServer, issue, issue_request, postgres::Postgres, proxy::Proxy, result, verify};
use tokend::{
    Config,
    clock::{Clock, Time},
    pb::{self, VerifyResult},
    store::PostgresOptions,
    token::Secret,
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

struct Cluster {
    pg: Postgres,
    url: String,
    db: String,
    clock: Clock,
    admin: Secret,
}

impl Cluster {
    async fn start() -> Option<Cluster> {
        let pg = Postgres::start()?;
        let db = pg.create_database_named().await;
        let url = pg.url(&db);
        Some(Cluster { pg, url, db, clock: Clock::manual(START), admin: Secret::generate("tk") })
    }

    fn config(&self, url: &str, adjust: impl FnOnce(&mut Config, &mut PostgresOptions)) -> Config {
        let mut config = Config::new("unused-with-postgres");
        let mut options = PostgresOptions { timeout: Duration::from_secs(2), ..PostgresOptions::new(url) };
        config.clock = self.clock.clone();
        config.bootstrap_token = Some(self.admin.clone());
        adjust(&mut config, &mut options);
        config.postgres = Some(options);
        config
    }

    async fn replica(&self) -> TestServer {
        self.replica_with(|_, _| {}).await
    }

    async fn replica_with(&self, adjust: impl FnOnce(&mut Config, &mut PostgresOptions)) -> TestServer {
        self.replica_at(&self.url.clone(), adjust).await
    }

    async fn replica_at(&self, url: &str, adjust: impl FnOnce(&mut Config, &mut PostgresOptions)) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        TestServer::start_in(dir, self.config(url, adjust), self.admin.expose().to_owned()).await
    }
}

/// Polls `check` every 10 ms until it holds or `limit` passes; returns how
/// long it took.
async fn eventually<F: Future<Output = bool>>(limit: Duration, mut check: impl FnMut() -> F) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

async fn verdict(server: &TestServer, secret: &str) -> VerifyResult {
    result(&verify(&mut server.verifier().await, secret, &[]).await)
}

/// Like [`verdict`], but a refused call (a stale replica) is `None`.
async fn answer(server: &TestServer, secret: &str) -> Option<VerifyResult> {
    let req = pb::VerifyRequest { token: secret.to_owned(), ..Default::default() };
    let response = server.verifier().await.verify(req).await.ok()?;
    Some(result(&response.into_inner()))
}

/// Whether `server`'s Get shows token `id` last used at `at` (to the
/// second) within `limit`.
async fn shows_use(server: &TestServer, id: &str, at: Time, limit: Duration) -> bool {
    let admin = server.admin().await;
    let used = at.as_nanos() / 1_000_000_000;
    let shown = eventually(limit, || {
        let (mut admin, id) = (admin.clone(), id.to_owned());
        async move {
            let t = admin.get(pb::GetRequest { id }).await.unwrap().into_inner().token.unwrap();
            t.last_used_time.is_some_and(|at| at.seconds == used)
        }
    })
    .await;
    shown.is_some()
}

async fn sees(server: &TestServer, secret: &str, want: VerifyResult, limit: Duration) -> Duration {
    match eventually(limit, || async { answer(server, secret).await == Some(want) }).await {
        Some(took) => took,
        None => panic!("replica did not see {want:?} within {limit:?} (sees {:?})", answer(server, secret).await),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_any_replica_reach_every_other_within_a_second() {
    let Some(cluster) = Cluster::start().await else { return };
    let r = [cluster.replica().await, cluster.replica().await, cluster.replica().await];

    let t = issue(&mut r[0].admin().await, "t", "team", &[]).await;
    for other in &r[1..] {
        sees(other, &t.secret, VerifyResult::Ok, Duration::from_secs(1)).await;
    }

    let id = t.token.as_ref().unwrap().id.clone();
    r[1].admin().await.revoke(pb::RevokeRequest { id: id.clone(), reason: "leak".into() }).await.unwrap();
    assert_eq!(verdict(&r[1], &t.secret).await, VerifyResult::Revoked, "the writing replica, before Revoke returns");
    for other in [&r[0], &r[2]] {
        let took = sees(other, &t.secret, VerifyResult::Revoked, Duration::from_secs(1)).await;
        eprintln!("revocation reached another replica in {took:?}");
    }

    // A rotation with grace: both halves, the same on every replica.
    let old = issue(&mut r[2].admin().await, "old", "team", &[]).await;
    let old_id = old.token.as_ref().unwrap().id.clone();
    sees(&r[0], &old.secret, VerifyResult::Ok, Duration::from_secs(1)).await;
    let rotation = r[2]
        .admin()
        .await
        .rotate(pb::RotateRequest { id: old_id.clone(), grace_period: Some(common::secs(60)) })
        .await
        .unwrap()
        .into_inner();
    let new_id = rotation.token.as_ref().unwrap().id.clone();
    for replica in &r {
        sees(replica, &rotation.secret, VerifyResult::Ok, Duration::from_secs(1)).await;
        assert_eq!(verdict(replica, &old.secret).await, VerifyResult::Ok, "old half within its grace");
        let got = replica.admin().await.get(pb::GetRequest { id: old_id.clone() }).await.unwrap().into_inner();
        let got = got.token.unwrap();
        assert_eq!(got.rotated_to, new_id);
        assert_eq!(got.expire_time, rotation.previous.as_ref().unwrap().expire_time);
    }
    // Past the grace, the old half expires everywhere.
    cluster.clock.advance(Duration::from_secs(61));
    for replica in &r {
        assert_eq!(verdict(replica, &old.secret).await, VerifyResult::Expired);
    }
}

/// The fast path alone: with a poll interval far longer than the test, only
/// the writers' notifications can carry changes, through both kinds of
/// write (a statement of its own: Issue, Revoke; a transaction: Rotate),
/// and last-used times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_carry_changes_without_waiting_for_the_poll() {
    let Some(cluster) = Cluster::start().await else { return };
    let slow_poll = |c: &mut Config, o: &mut PostgresOptions| {
        c.last_used_flush_interval = Duration::from_millis(200);
        o.feed_poll_interval = Duration::from_secs(60);
        o.max_staleness = Duration::from_secs(120);
    };
    let (a, b) = (cluster.replica_with(slow_poll).await, cluster.replica_with(slow_poll).await);

    let t = issue(&mut a.admin().await, "t", "team", &[]).await;
    sees(&b, &t.secret, VerifyResult::Ok, Duration::from_secs(1)).await;
    let rotation = b
        .admin()
        .await
        .rotate(pb::RotateRequest { id: t.token.as_ref().unwrap().id.clone(), grace_period: None })
        .await
        .unwrap()
        .into_inner();
    sees(&a, &rotation.secret, VerifyResult::Ok, Duration::from_secs(1)).await;
    assert_eq!(verdict(&a, &t.secret).await, VerifyResult::Revoked, "rotated without grace: the old half is gone");
    let id = rotation.token.as_ref().unwrap().id.clone();

    // A's use of the new token (flushed within 200 ms) shows on B.
    cluster.clock.advance(Duration::from_secs(30));
    assert_eq!(verdict(&a, &rotation.secret).await, VerifyResult::Ok);
    assert!(shows_use(&b, &id, cluster.clock.now(), Duration::from_secs(2)).await, "B shows A's use before its poll");

    a.admin().await.revoke(pb::RevokeRequest { id, reason: String::new() }).await.unwrap();
    sees(&b, &rotation.secret, VerifyResult::Revoked, Duration::from_secs(1)).await;
}

/// Update (#12) through one replica: the writer answers by the new state at
/// once, the others within a second, and a stale replica's view is not
/// written over (the update is derived from the stored version).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_through_one_replica_reaches_the_others() {
    let Some(cluster) = Cluster::start().await else { return };
    let r = [cluster.replica().await, cluster.replica().await];
    let t = issue(&mut r[0].admin().await, "t", "team", &["a", "b"]).await;
    let id = t.token.as_ref().unwrap().id.clone();
    sees(&r[1], &t.secret, VerifyResult::Ok, Duration::from_secs(1)).await;
    let change = pb::Token { id: id.clone(), allowed_cidrs: vec!["10.0.0.0/8".into()], ..Default::default() };
    let mask = prost_types::FieldMask { paths: vec!["allowed_cidrs".into()] };
    r[1].admin().await.update(pb::UpdateRequest { token: Some(change), update_mask: Some(mask) }).await.unwrap();
    assert_eq!(verdict(&r[1], &t.secret).await, VerifyResult::IpNotAllowed, "the writing replica, at once");
    sees(&r[0], &t.secret, VerifyResult::IpNotAllowed, Duration::from_secs(1)).await;
    // A second update through the first replica builds on the first one.
    let change = pb::Token { id: id.clone(), scopes: vec!["a".into()], ..Default::default() };
    let mask = prost_types::FieldMask { paths: vec!["scopes".into()] };
    let after = r[0].admin().await.update(pb::UpdateRequest { token: Some(change), update_mask: Some(mask) }).await;
    let after = after.unwrap().into_inner().token.unwrap();
    assert_eq!(
        (after.scopes.as_slice(), after.allowed_cidrs.as_slice()),
        (["a".to_string()].as_slice(), ["10.0.0.0/8".to_string()].as_slice())
    );
}

/// One audit chain for the token set: replicas writing at once append to
/// it, sealed in the background, every replica serves all of it, `tokend
/// audit verify --store` checks it offline, and an event edited in the
/// database breaks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_append_to_one_audit_chain() {
    let Some(cluster) = Cluster::start().await else { return };
    let r = Arc::new([cluster.replica().await, cluster.replica().await]);
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let r = r.clone();
            tokio::spawn(async move {
                let mut admin = r[w % 2].admin().await;
                for i in 0..10 {
                    let t = issue(&mut admin, &format!("w{w}-{i}"), &format!("team-{w}"), &[]).await;
                    if i % 3 == 0 {
                        admin
                            .revoke(pb::RevokeRequest { id: t.token.unwrap().id, reason: String::new() })
                            .await
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let url = cluster.url.clone();
    let verify = move || {
        let out = std::process::Command::new(common::process::BIN)
            .args(["audit", "verify", "--store", &url])
            .output()
            .unwrap();
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    // Writes keep their events pending; the replicas' sealers chain them in
    // the background, with nobody reading the trail.
    let sealed = eventually(Duration::from_secs(5), || {
        let verify = verify.clone();
        async move { tokio::task::spawn_blocking(verify).await.unwrap().1.contains("ok: 85 events") }
    })
    .await;
    assert!(sealed.is_some(), "the background sealers chained every event");
    let from_0 = common::audit_events(&mut r[0].admin().await, Default::default()).await;
    let from_1 = common::audit_events(&mut r[1].admin().await, Default::default()).await;
    assert_eq!(from_0, from_1, "every replica serves the one chain");
    assert_eq!(from_0.len(), 1 + 60 + 24, "bootstrap, 60 issues, 24 revokes");
    let head = common::check_chain(&from_0).expect("the chain verifies");
    let head_hex: String = head.hash.iter().map(|b| format!("{b:02x}")).collect();
    let (code, text) = tokio::task::spawn_blocking(verify.clone()).await.unwrap();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("85 events, head {head_hex}")), "{text}");
    // The filters run in SQL here: by target, and by owner for an
    // owner-scoped reader.
    let target = from_0[7].target_id.clone();
    let on = pb::ListAuditEventsRequest { target_id: target.clone(), ..Default::default() };
    let on_target = common::audit_events(&mut r[1].admin().await, on).await;
    assert!(!on_target.is_empty() && on_target.iter().all(|e| e.target_id == target), "{on_target:?}");
    assert_eq!(on_target.len(), from_0.iter().filter(|e| e.target_id == target).count());
    let reader = issue(&mut r[1].admin().await, "audit-3", "team-3", &["tokend.read:team-3"]).await;
    let theirs = common::audit_events(&mut r[1].admin_as(&reader.secret).await, Default::default()).await;
    assert_eq!(theirs.len(), 1 + 10 + 4, "team-3's ten issues and four revokes, and the reader's own issue");
    assert!(theirs.iter().all(|e| e.owner == "team-3"));
    // Rewrite event 7's owner inside its stored bytes (same length).
    let owner = &from_0[6].owner;
    let forged = owner.replace("team-", "tEam-");
    cluster
        .pg
        .execute(
            &cluster.db,
            &format!(
                "UPDATE tokend_audit SET event = decode(replace(encode(event, 'hex'), encode('{owner}', 'hex'), \
                 encode('{forged}', 'hex')), 'hex') WHERE seq = 7"
            ),
        )
        .await;
    let (code, text) = tokio::task::spawn_blocking(verify).await.unwrap();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("broken at seq 7"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_hold_across_replicas() {
    let Some(cluster) = Cluster::start().await else { return };
    let r = Arc::new([
        cluster.replica_with(|c, _| c.max_tokens_per_owner = 3).await,
        cluster.replica_with(|c, _| c.max_tokens_per_owner = 3).await,
        cluster.replica_with(|c, _| c.max_tokens_per_owner = 3).await,
    ]);

    // Rotation race: two replicas rotate one token at once; exactly one wins.
    // Rounds 5..8 race on one replica: a PostgreSQL replica does not
    // serialise its own writers either; the database decides.
    for round in 0..8 {
        let t = issue(&mut r[0].admin().await, &format!("race-{round}"), &format!("rot-{round}"), &[]).await;
        let id = t.token.unwrap().id;
        let (mut a, mut b) =
            if round < 5 { (r[1].admin().await, r[2].admin().await) } else { (r[1].admin().await, r[1].admin().await) };
        let (ra, rb) = tokio::join!(
            a.rotate(pb::RotateRequest { id: id.clone(), grace_period: None }),
            b.rotate(pb::RotateRequest { id: id.clone(), grace_period: None }),
        );
        let codes =
            [ra.as_ref().map_or_else(|e| e.code(), |_| Code::Ok), rb.as_ref().map_or_else(|e| e.code(), |_| Code::Ok)];
        let mut sorted = codes;
        sorted.sort_by_key(|c| *c as i32);
        assert_eq!(sorted, [Code::Ok, Code::FailedPrecondition], "round {round}: {ra:?} / {rb:?}");
    }

    // Quota race: twelve Issues for one owner through three replicas at once.
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                let mut admin = r[i % 3].admin().await;
                admin.issue(issue_request(&format!("q{i}"), "quota-owner", &[])).await.map(|_| ()).map_err(|e| e.code())
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(code) => assert_eq!(code, Code::ResourceExhausted),
        }
    }
    assert_eq!(ok, 3, "exactly --max-tokens-per-owner succeed across replicas");

    // Revoke stays idempotent with the first revoke time, whichever replica.
    let t = issue(&mut r[0].admin().await, "rev", "rev-owner", &[]).await;
    let id = t.token.unwrap().id;
    let first = r[0].admin().await.revoke(pb::RevokeRequest { id: id.clone(), reason: "first".into() }).await.unwrap();
    cluster.clock.advance(Duration::from_secs(5));
    let again = r[1].admin().await.revoke(pb::RevokeRequest { id: id.clone(), reason: "second".into() }).await.unwrap();
    let (first, again) = (first.into_inner().token.unwrap(), again.into_inner().token.unwrap());
    assert_eq!(again.revoke_time, first.revoke_time);
    assert_eq!(again.revoke_reason, "first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_commits_out_of_sequence_order_is_not_missed() {
    let Some(cluster) = Cluster::start().await else { return };
    // A's rotation waits on a lock the test holds; under a loaded CI machine
    // that may take seconds. Replicas must agree on --store-timeout: it sets
    // how long a reader keeps waiting for an invisible number.
    let patient = |_: &mut Config, o: &mut PostgresOptions| o.timeout = Duration::from_secs(10);
    let (a, b, c) =
        (cluster.replica_with(patient).await, cluster.replica_with(patient).await, cluster.replica_with(patient).await);
    let old = issue(&mut a.admin().await, "old", "o", &[]).await;
    let old_id = old.token.as_ref().unwrap().id.clone();
    sees(&c, &old.secret, VerifyResult::Ok, Duration::from_secs(1)).await;

    // Hold a row lock on the old token: A's rotation takes its outbox number
    // for the new token, then waits on the lock with its transaction open.
    let (side, connection) = tokio_postgres::connect(&cluster.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    side.batch_execute("BEGIN").await.unwrap();
    side.execute("SELECT 1 FROM tokend_tokens WHERE id = decode(replace($1, '-', ''), 'hex') FOR UPDATE", &[&old_id])
        .await
        .unwrap();
    let rotating = {
        let mut admin = a.admin().await;
        let id = old_id.clone();
        tokio::spawn(async move { admin.rotate(pb::RotateRequest { id, grace_period: None }).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A later number commits first, and C reads past it.
    let later = issue(&mut b.admin().await, "later", "o", &[]).await;
    sees(&c, &later.secret, VerifyResult::Ok, Duration::from_secs(1)).await;

    side.batch_execute("COMMIT").await.unwrap();
    let rotation = rotating.await.unwrap().expect("the rotation commits once the lock is released").into_inner();
    let took = sees(&c, &rotation.secret, VerifyResult::Ok, Duration::from_secs(2)).await;
    assert_eq!(verdict(&c, &old.secret).await, VerifyResult::Revoked);
    eprintln!("the out-of-order change reached C {took:?} after its commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_reconnect_and_catch_up_after_lost_connections_and_a_database_restart() {
    let Some(mut cluster) = Cluster::start().await else { return };
    let (a, b) = (cluster.replica().await, cluster.replica().await);
    let t1 = issue(&mut a.admin().await, "t1", "o", &[]).await;
    let t2 = issue(&mut a.admin().await, "t2", "o", &[]).await;
    sees(&b, &t2.secret, VerifyResult::Ok, Duration::from_secs(1)).await;

    // Every tokend connection is terminated by the server.
    let terminate = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        cluster.db
    );
    cluster.pg.execute("postgres", &terminate).await;
    revoke_with_retries(&a, &t1).await;
    sees(&b, &t1.secret, VerifyResult::Revoked, Duration::from_secs(3)).await;

    // A fast restart of the database.
    cluster.pg.restart();
    revoke_with_retries(&b, &t2).await;
    sees(&a, &t2.secret, VerifyResult::Revoked, Duration::from_secs(3)).await;
}

/// The first write after the database dropped connections may fail with
/// UNAVAILABLE; retries succeed once the pool has reconnected.
async fn revoke_with_retries(server: &TestServer, t: &pb::IssueResponse) {
    let id = t.token.as_ref().unwrap().id.clone();
    let admin = server.admin().await;
    let done = eventually(Duration::from_secs(10), || {
        let (mut admin, id) = (admin.clone(), id.clone());
        async move {
            match admin.revoke(pb::RevokeRequest { id, reason: String::new() }).await {
                Ok(_) => true,
                Err(e) if e.code() == Code::Unavailable => false,
                Err(e) => panic!("revoke: {e:?}"),
            }
        }
    })
    .await;
    assert!(done.is_some(), "revoke succeeded after reconnecting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_the_database_fails_closed_and_recovers() {
    let Some(cluster) = Cluster::start().await else { return };
    let a = cluster.replica().await;
    let proxy = Proxy::start(format!("127.0.0.1:{}", cluster.pg.port).parse().unwrap()).await;
    let via_proxy = cluster.url.replace(&format!(":{}/", cluster.pg.port), &format!(":{}/", proxy.addr.port()));
    let max_staleness = Duration::from_secs(2);
    let heartbeat = Duration::from_millis(200);
    let c = cluster
        .replica_at(&via_proxy, |config, o| {
            o.max_staleness = max_staleness;
            config.watch_heartbeat = heartbeat;
        })
        .await;
    let t = issue(&mut a.admin().await, "t", "o", &[]).await;
    sees(&c, &t.secret, VerifyResult::Ok, Duration::from_secs(1)).await;
    // A sibling's cache, fed by C.
    let mut watcher =
        c.verifier().await.watch(pb::WatchRequest { resume_token: String::new() }).await.unwrap().into_inner();
    watcher.message().await.unwrap().unwrap();

    proxy.forward(false);
    let cut = Instant::now();
    let id = t.token.as_ref().unwrap().id.clone();
    a.admin().await.revoke(pb::RevokeRequest { id, reason: "while C is cut off".into() }).await.unwrap();
    // The plaintext health port, as Kubernetes' probes see it.
    let probe = tonic::transport::Channel::from_shared(format!("http://{}", c.health_addr)).unwrap();
    let mut health = HealthClient::new(probe.connect().await.unwrap());
    let serving = |health: &mut HealthClient<_>| {
        let mut health: HealthClient<tonic::transport::Channel> = health.clone();
        async move {
            let req = HealthCheckRequest { service: "tokend.v1.VerifyService".into() };
            health.check(req).await.unwrap().into_inner().status
        }
    };
    let stale = eventually(max_staleness + Duration::from_secs(2), || {
        let fut = serving(&mut health);
        async move {
            fut.await == 2 /* NOT_SERVING */
        }
    })
    .await;
    assert!(stale.is_some(), "NOT_SERVING within max-staleness + 2 s of the cut");
    let err = c.verifier().await.verify(pb::VerifyRequest { token: t.secret.clone(), ..Default::default() }).await;
    let err = err.expect_err("a stale replica does not answer Verify");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("stale"), "{}", err.message());
    assert!(cut.elapsed() <= max_staleness + Duration::from_secs(2) + Duration::from_millis(500));
    // Stale, C sends no heartbeats: a cache fed by it goes stale as well and
    // falls back to Verify, which fails closed. (A heartbeat already on its
    // way when C went stale is let through, as are those it sent before.)
    while tokio::time::timeout(Duration::from_millis(50), watcher.message()).await.is_ok() {}
    let next = tokio::time::timeout(heartbeat * 5, watcher.message()).await;
    assert!(next.is_err(), "a stale replica kept sending heartbeats: {next:?}");

    proxy.forward(true);
    let healed = Instant::now();
    sees(&c, &t.secret, VerifyResult::Revoked, Duration::from_secs(2 + 2)).await;
    assert!(healed.elapsed() < Duration::from_secs(4), "rejected within 2 s of healing (+ one pool timeout)");
    let back = eventually(Duration::from_secs(2), || {
        let fut = serving(&mut health);
        async move {
            fut.await == 1 /* SERVING */
        }
    })
    .await;
    assert!(back.is_some(), "SERVING again by itself");
    let resumed = tokio::time::timeout(Duration::from_secs(2), watcher.message()).await;
    assert!(matches!(resumed, Ok(Ok(Some(_)))), "heartbeats or changes again once current: {resumed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_happens_once_when_three_replicas_start_together() {
    let Some(cluster) = Cluster::start().await else { return };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut procs: Vec<_> =
        dirs.iter().map(|d| common::process::Process::serve(d.path(), &["--store", &cluster.url])).collect();
    let mut banners = 0;
    for p in &mut procs {
        p.addr(); // serving: start-up, bootstrap included, is over
    }
    for mut p in procs {
        assert!(p.terminate().success());
        banners += p.log().matches("a bootstrap admin token was generated").count();
    }
    assert_eq!(banners, 1, "one banner in total");
    let (side, connection) = tokio_postgres::connect(&cluster.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let admins: i64 = side.query_one("SELECT count(*) FROM tokend_tokens", &[]).await.unwrap().get(0);
    assert_eq!(admins, 1, "one bootstrap token in the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_a_replica_under_concurrent_writes() {
    let Some(cluster) = Cluster::start().await else { return };
    let b = cluster.replica().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("TOKEND_BOOTSTRAP_TOKEN", cluster.admin.expose())];
    let mut a = common::process::Process::serve_with_env(dir.path(), &["--store", &cluster.url], &env);
    let addr = a.addr();
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acknowledged, token) = (acknowledged.clone(), cluster.admin.expose().to_owned());
            let addr = addr.clone();
            tokio::spawn(async move {
                let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap();
                let Ok(channel) = channel.connect().await else { return };
                let mut admin =
                    pb::token_service_client::TokenServiceClient::with_interceptor(channel, common::Bearer(token));
                for i in 0.. {
                    match admin.issue(issue_request(&format!("w{w}-{i}"), "o", &[])).await {
                        Ok(r) => {
                            let r = r.into_inner();
                            acknowledged.lock().unwrap().push((r.secret, r.token.unwrap().id));
                        }
                        Err(_) => return, // killed
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 10, "writes happened before the kill: {}", acknowledged.len());
    // Every acknowledged write is on the surviving replica (via the feed)
    // and on a replica started afterwards (via the load).
    let c = cluster.replica().await;
    for (secret, _) in &acknowledged {
        sees(&b, secret, VerifyResult::Ok, Duration::from_secs(2)).await;
        assert_eq!(verdict(&c, secret).await, VerifyResult::Ok);
    }
    // The killed replica's events that it had not sealed yet are sealed by
    // a survivor: each acknowledged write has its event, in one chain.
    let events = common::audit_events(&mut b.admin().await, Default::default()).await;
    common::check_chain(&events).expect("the chain verifies after the kill");
    let issued: std::collections::HashSet<&str> =
        events.iter().filter(|e| e.action == "issue" && e.code == "OK").map(|e| e.target_id.as_str()).collect();
    for (_, id) in &acknowledged {
        assert!(issued.contains(id.as_str()), "acknowledged issue of {id} has no audit event");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uses_seen_by_one_replica_show_on_another_and_the_feed_is_measured() {
    let Some(cluster) = Cluster::start().await else { return };
    let quick = |c: &mut Config, _: &mut PostgresOptions| c.last_used_flush_interval = Duration::from_millis(200);
    let (a, b) = (cluster.replica_with(quick).await, cluster.replica_with(quick).await);
    let t = issue(&mut a.admin().await, "t", "o", &[]).await;
    let id = t.token.as_ref().unwrap().id.clone();
    sees(&b, &t.secret, VerifyResult::Ok, Duration::from_secs(1)).await;
    let (_, before) = common::scrape(&b, "/metrics").await;

    // A use on A: B's Get shows it within flush interval + poll interval.
    cluster.clock.advance(Duration::from_secs(30));
    assert_eq!(verdict(&a, &t.secret).await, VerifyResult::Ok);
    let limit = Duration::from_millis(200) + Duration::from_secs(1) + Duration::from_millis(500);
    assert!(shows_use(&b, &id, cluster.clock.now(), limit).await, "B shows A's use");

    // The feed's metrics: B applied the issue and the revoke, and is current.
    // Each is seen on B before the next is made: one read that found both
    // would apply the token's current record once. The counter moves just
    // after the index, so it is polled.
    let revoked = issue(&mut a.admin().await, "r", "o", &[]).await;
    sees(&b, &revoked.secret, VerifyResult::Ok, Duration::from_secs(1)).await;
    let rid = revoked.token.as_ref().unwrap().id.clone();
    a.admin().await.revoke(pb::RevokeRequest { id: rid, reason: String::new() }).await.unwrap();
    sees(&b, &revoked.secret, VerifyResult::Revoked, Duration::from_secs(1)).await;
    let applied = |body: &str| common::value(body, "tokend_feed_changes_applied_total");
    let counted = eventually(Duration::from_secs(2), || {
        let (b, before) = (&b, &before);
        async move { applied(&common::scrape(b, "/metrics").await.1) - applied(before) >= 2.0 }
    })
    .await;
    let (_, after) = common::scrape(&b, "/metrics").await;
    assert!(counted.is_some(), "issue and revoke applied:\n{after}");
    let staleness = common::value(&after, "tokend_feed_staleness_seconds");
    assert!(after.contains("tokend_feed_staleness_seconds ") && staleness < 2.0, "{staleness}\n{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_is_pruned_after_the_retention_and_a_late_replica_still_loads_everything() {
    let Some(cluster) = Cluster::start().await else { return };
    let a = cluster.replica().await;
    let early = issue(&mut a.admin().await, "early", "o", &[]).await;
    let (side, connection) = tokio_postgres::connect(&cluster.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows: i64 = side.query_one("SELECT count(*) FROM tokend_changes", &[]).await.unwrap().get(0);
    assert!(rows >= 1, "`early` is in the outbox");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A replica with a 1 s retention prunes on its first read.
    let b = cluster.replica_with(|_, o| o.feed_retention = Duration::from_secs(1)).await;
    let pruned = eventually(Duration::from_secs(3), || {
        let side = &side;
        async move { side.query_one("SELECT count(*) FROM tokend_changes", &[]).await.unwrap().get::<_, i64>(0) == 0 }
    })
    .await;
    assert!(pruned.is_some(), "rows older than the retention are deleted");
    // Pruned rows are history, not state: B loaded the token regardless.
    assert_eq!(verdict(&b, &early.secret).await, VerifyResult::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_replica_stays_not_serving_while_it_drains_even_if_it_catches_up() {
    let Some(cluster) = Cluster::start().await else { return };
    let proxy = Proxy::start(format!("127.0.0.1:{}", cluster.pg.port).parse().unwrap()).await;
    let via_proxy = cluster.url.replace(&format!(":{}/", cluster.pg.port), &format!(":{}/", proxy.addr.port()));
    let c = cluster
        .replica_at(&via_proxy, |config, o| {
            o.max_staleness = Duration::from_secs(1);
            config.shutdown_grace = Duration::from_secs(4);
        })
        .await;
    // A Watch stream holds the drain open for the whole grace, and reports
    // every status change while it lasts.
    let mut watch = HealthClient::new(c.channel().await)
        .watch(HealthCheckRequest { service: "tokend.v1.VerifyService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, 1, "SERVING first");
    proxy.forward(false);
    let stale = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.expect("stale in time");
    assert_eq!(stale.unwrap().unwrap().status, 2, "NOT_SERVING while cut off");

    let stopping = tokio::spawn(c.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.forward(true); // the feed catches up during the drain
    // The stream stays open through the drain: collect what it says for 3 s.
    let mut during_drain = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Ok(Some(m)) = watch.message().await {
            during_drain.push(m.status);
        }
    })
    .await;
    assert!(!during_drain.contains(&1), "never SERVING again once shutdown began: {during_drain:?}");
    drop(watch);
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_replica_sees_a_revocation_made_through_another() {
    let Some(cluster) = Cluster::start().await else { return };
    let (a, b) = (cluster.replica().await, cluster.replica().await);
    let t = issue(&mut a.admin().await, "t", "team", &[]).await;
    sees(&b, &t.secret, VerifyResult::Ok, Duration::from_secs(1)).await;
    let mut watcher =
        b.verifier().await.watch(pb::WatchRequest { resume_token: String::new() }).await.unwrap().into_inner();
    let first = watcher.message().await.unwrap().unwrap();
    assert!(first.reset);
    let id = t.token.as_ref().unwrap().id.clone();
    let started = Instant::now();
    a.admin().await.revoke(pb::RevokeRequest { id: id.clone(), reason: "leak".into() }).await.unwrap();
    let change = loop {
        let m = tokio::time::timeout(Duration::from_secs(2), watcher.message()).await.unwrap().unwrap().unwrap();
        if let Some(c) = m.changes.into_iter().find(|c| c.token_id == id) {
            break c;
        }
    };
    assert_eq!(change.status(), pb::TokenStatus::Revoked);
    eprintln!("revocation through A reached a watcher on B in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(1));
}
