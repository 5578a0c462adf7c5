//! `tokend bench --mode postgres --store URL`: replicas on PostgreSQL.
//!
//! Seeds the (empty) database with `--tokens` tokens by bulk `COPY`,
//! measures the real binary's start-up from it, then runs two replicas in
//! this process and measures revocation propagation from one to the other,
//! Verify vs Check on a replica, and durable Issue through a replica.

use std::{
    ffi::OsStr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use tonic::transport::Channel;

use super::{BenchArgs, BoxError, admin_client, issue_request, us, verify_vs_check, writes};
use crate::{
    Config, Tokend,
    clock::Clock,
    pb, seed,
    store::PostgresOptions,
    verify::{Outcome, Verifier},
};

/// Revocations whose propagation is measured.
const REVOCATIONS: usize = 1_000;

pub(super) fn run(args: &BenchArgs, url: &str, dir: &Path) -> Result<(), BoxError> {
    let server_rt = tokio::runtime::Builder::new_multi_thread().thread_name("server").enable_all().build()?;
    let options = PostgresOptions::new(url);
    let started = Instant::now();
    let sample_every = (args.tokens / 10_000).max(1);
    let secrets = server_rt.block_on(seed::postgres(&options, args.tokens, sample_every, Clock::System.now()))?;
    println!(
        "tokend bench (PostgreSQL): {} tokens seeded in {:.1?} ({} cores)",
        args.tokens,
        started.elapsed(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    super::startup(&[OsStr::new("--store"), OsStr::new(url), OsStr::new("--data-dir"), dir.as_os_str()])?;

    let open = |options: &PostgresOptions| {
        let mut config = Config::new(dir);
        config.postgres = Some(options.clone());
        server_rt.block_on(Tokend::open(config))
    };
    let (a, b) = (open(&options)?, open(&options)?);
    let (registry_a, verifier_b) = (a.registry().clone(), b.verifier().clone());
    let serve = |tokend: Tokend| -> Result<_, BoxError> {
        let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = server_rt.spawn(tokend.serve(listener, async {
            let _ = stopped.await;
        }));
        Ok((addr, stop, task))
    };
    let (addr_a, stop_a, task_a) = serve(a)?;
    let (addr_b, stop_b, task_b) = serve(b)?;

    let client_rt = tokio::runtime::Builder::new_multi_thread().thread_name("client").enable_all().build()?;
    let admin = secrets[0].expose().to_owned();
    let valid: Arc<Vec<String>> = Arc::new(secrets[1..].iter().map(|s| s.expose().to_owned()).collect());
    let seconds = args.seconds;
    let result = client_rt.block_on(async move {
        let channel_a = Channel::from_shared(format!("http://{addr_a}"))?.connect().await?;
        let channel_b = Channel::from_shared(format!("http://{addr_b}"))?.connect().await?;
        propagation(&channel_a, &admin, &verifier_b).await?;
        println!("\n(on replica B)");
        verify_vs_check(&channel_b, &valid, seconds).await?;
        println!("\n(through replica A; flushes do not apply: each write is its own transaction)");
        writes(&channel_a, &admin, seconds, &registry_a).await
    });
    let _ = (stop_a.send(()), stop_b.send(()));
    server_rt.block_on(task_a)??;
    server_rt.block_on(task_b)??;
    result
}

/// Issues [`REVOCATIONS`] tokens through A, waits for B to know them all,
/// then revokes them one by one through A, timing from each Revoke's answer
/// to B's verifier rejecting the token.
async fn propagation(channel_a: &Channel, admin: &str, verifier_b: &Arc<Verifier>) -> Result<(), BoxError> {
    let mut client = admin_client(channel_a, admin);
    let mut issued = Vec::with_capacity(REVOCATIONS);
    for n in 0..REVOCATIONS as u64 {
        let r = client.issue(issue_request(n)).await?.into_inner();
        issued.push((r.token.ok_or("no token")?.id, r.secret));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while issued.iter().any(|(_, s)| verifier_b.verify(s, &[] as &[&str]).outcome != Outcome::Ok) {
        if Instant::now() > deadline {
            return Err("replica B did not learn the issued tokens within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut latencies = Vec::with_capacity(REVOCATIONS);
    for (id, secret) in issued {
        client.revoke(pb::RevokeRequest { id, reason: "bench".into() }).await?;
        let revoked_at = Instant::now();
        let verifier = verifier_b.clone();
        // Polled on a blocking thread with yields: a timer's millisecond
        // granularity would round every figure up.
        let seen = tokio::task::spawn_blocking(move || {
            let limit = revoked_at + Duration::from_secs(5);
            while verifier.verify(&secret, &[] as &[&str]).outcome != Outcome::Revoked {
                if Instant::now() > limit {
                    return None;
                }
                std::thread::yield_now();
            }
            Some(revoked_at.elapsed())
        })
        .await?;
        latencies.push(seen.ok_or("a revocation did not reach replica B within 5 s")?);
    }
    latencies.sort_unstable();
    let pick = |p: f64| latencies[((p / 100.0) * (latencies.len() - 1) as f64).round() as usize];
    println!("\n== revocation through A → rejected by B ({REVOCATIONS} revocations)");
    println!("p50 {}   p99 {}   max {}", us(pick(50.0)), us(pick(99.0)), us(pick(100.0)));
    Ok(())
}
