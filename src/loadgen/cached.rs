//! `tokend bench --mode cached`: the sibling side, `tokend-client`.
//!
//! With a server in process and a [`CachedVerifier`] holding every bench
//! token (100,000 by default, see `run`):
//!
//! * in-process `check` and `verify` on cache hits, 1 and 2 threads, each
//!   call timed (p50, p99), against the Verify RPC through the generated
//!   stub;
//! * revoke → rejected by the cache: 1,000 revocations, each timed from the
//!   acknowledged Revoke to the first `check` that answers "revoked"
//!   (polled in a loop that yields to the runtime between calls);
//! * the `RequireToken` layer: the same tonic service (grpc.health.v1
//!   Health/Check) protected and unprotected, alternating, sequential and
//!   64 in flight; both are sent the same `authorization` header.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokend_client::{CacheOptions, CachedVerifier, RequireToken};
use tonic::{metadata::AsciiMetadataValue, transport::Channel};
use tonic_health::pb::health_client::HealthClient;

use super::{BoxError, Call, Sample, admin_client, alternate, block, us};
use crate::pb::{self, verify_service_client::VerifyServiceClient};

/// Calls per thread and kind at most, whatever `--seconds` says.
const MAX_CALLS: usize = 5_000_000;
/// Revocations timed.
const REVOCATIONS: usize = 1_000;

/// Runs the phases against tokend at `addr`.
pub(crate) async fn run(
    channel: &Channel,
    addr: SocketAddr,
    tokens: &Arc<Vec<String>>,
    admin: &str,
    seconds: f64,
) -> Result<(), BoxError> {
    let options = CacheOptions { capacity: tokens.len() * 5 / 4 + 1_000, ..CacheOptions::default() };
    let verifier = CachedVerifier::connect_with(&format!("http://{addr}"), options).await?;
    fill(&verifier, tokens).await?;
    println!("\n== tokend-client: cached verification in process, {} cached tokens, {seconds} s each", tokens.len());
    println!("{:<34}{:>12}{:>12}{:>16}", "", "p50", "p99", "calls/s");
    for threads in [1, 2] {
        for kind in [Kind::Check, Kind::Verify] {
            let (verifier, tokens) = (verifier.clone(), tokens.clone());
            let mut sample =
                tokio::task::spawn_blocking(move || in_threads(&verifier, &tokens, kind, threads, seconds)).await??;
            let label = format!("{kind:?}, {threads} thread{}", if threads == 1 { "" } else { "s" });
            let (p50, p99, rate) = (sample.percentile(50.0), sample.percentile(99.0), sample.throughput());
            println!("{label:<34}{:>12}{:>12}{rate:>16.0}", ns(p50), ns(p99));
        }
    }
    // Most traffic comes from few clients: the same call over 1,000 tokens
    // whose entries stay in the CPU's caches.
    let hot = Arc::new(tokens.iter().take(1_000).cloned().collect::<Vec<_>>());
    let (v, h) = (verifier.clone(), hot.clone());
    let mut sample = tokio::task::spawn_blocking(move || in_threads(&v, &h, Kind::Check, 1, seconds)).await??;
    let (p50, p99, rate) = (sample.percentile(50.0), sample.percentile(99.0), sample.throughput());
    let label = format!("Check, 1 thread, {} hot tokens", hot.len());
    println!("{label:<34}{:>12}{:>12}{rate:>16.0}", ns(p50), ns(p99));
    let mut rpc =
        block(&Call::Verify(VerifyServiceClient::new(channel.clone()), tokens.clone()), 1, secs(seconds)).await?;
    let (p50, p99, rate) = (rpc.percentile(50.0), rpc.percentile(99.0), rpc.throughput());
    println!("{:<34}{:>12}{:>12}{rate:>16.0}", "Verify RPC (stub), sequential", us(p50), us(p99));
    let stats = verifier.stats();
    println!("cache: {} hits, {} misses (the misses filled it)", stats.hits, stats.misses);

    revocations(&verifier, channel, tokens, admin).await?;
    layer(&verifier, &tokens[0], seconds).await
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `check(&str, &[&str])`: shared answer, no allocation.
    Check,
    /// `verify(VerifyRequest)`: the drop-in; owns request and response.
    Verify,
}

/// Verifies every token once, 64 at a time: the misses that fill the cache.
async fn fill(verifier: &CachedVerifier, tokens: &Arc<Vec<String>>) -> Result<(), BoxError> {
    let started = Instant::now();
    let workers: Vec<_> = (0..64)
        .map(|w| {
            let (verifier, tokens) = (verifier.clone(), tokens.clone());
            tokio::spawn(async move {
                for t in tokens.iter().skip(w).step_by(64) {
                    if !verifier.check(t, &["orders:read"]).await?.valid {
                        return Err(tonic::Status::internal("a bench token did not verify"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    println!("\ncache filled with {} tokens in {:.1?}", tokens.len(), started.elapsed());
    Ok(())
}

/// `threads` threads each calling `kind` over the tokens for `seconds`.
fn in_threads(
    verifier: &CachedVerifier,
    tokens: &Arc<Vec<String>>,
    kind: Kind,
    threads: usize,
    seconds: f64,
) -> Result<Sample, BoxError> {
    let started = Instant::now();
    let deadline = started + secs(seconds);
    let per_thread = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    // A runtime of the thread's own: a hit completes without
                    // suspending, so this measures the call itself.
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    rt.block_on(calls(verifier, tokens, kind, t * 7_919, deadline))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench thread panicked")).collect::<Vec<_>>()
    });
    let mut sample = Sample::default();
    for latencies in per_thread {
        sample.latencies.extend(latencies?);
    }
    // Calls per second per thread.
    sample.elapsed = started.elapsed() * threads as u32;
    Ok(sample)
}

async fn calls(
    verifier: &CachedVerifier,
    tokens: &[String],
    kind: Kind,
    start: usize,
    deadline: Instant,
) -> Result<Vec<u64>, BoxError> {
    let mut latencies = Vec::with_capacity(1 << 20);
    // A stride through the set, so consecutive calls touch different entries.
    let mut i = start;
    // The presented token is copied here first: a service has just read it
    // off the request, so it is in the CPU's cache, not cold in a 100k list.
    let mut token = String::with_capacity(128);
    while latencies.len() < MAX_CALLS && (latencies.len() % 1024 != 0 || Instant::now() < deadline) {
        token.clear();
        token.push_str(&tokens[i % tokens.len()]);
        let token = token.as_str();
        let t = Instant::now();
        let valid = match kind {
            Kind::Check => verifier.check(token, &["orders:read"]).await?.valid,
            Kind::Verify => {
                let request = tokend_client::VerifyRequest {
                    token: token.to_owned(),
                    required_scopes: vec!["orders:read".into()],
                    ..Default::default()
                };
                verifier.verify(request).await?.valid
            }
        };
        latencies.push(t.elapsed().as_nanos() as u64);
        if !valid {
            return Err("a cached bench token did not verify".into());
        }
        i += 7_919;
    }
    Ok(latencies)
}

/// Revoke → the cached verifier rejects, over [`REVOCATIONS`] tokens.
async fn revocations(
    verifier: &CachedVerifier,
    channel: &Channel,
    tokens: &Arc<Vec<String>>,
    admin: &str,
) -> Result<(), BoxError> {
    let mut admin = admin_client(channel, admin);
    let (mut after_ack, mut after_call) = (Sample::default(), Sample::default());
    for token in tokens.iter().rev().take(REVOCATIONS.min(tokens.len().saturating_sub(1))) {
        let answer = verifier.check(token, &[]).await?;
        if !answer.valid {
            return Err("a bench token did not verify before its revocation".into());
        }
        let id = answer.token_id.clone();
        let sent = Instant::now();
        admin.revoke(pb::RevokeRequest { id, reason: "bench".into() }).await?;
        let acknowledged = Instant::now();
        loop {
            if !verifier.check(token, &[]).await?.valid {
                break;
            }
            if acknowledged.elapsed() > Duration::from_secs(5) {
                return Err("a revoked token was still accepted by the cache after 5 s".into());
            }
            tokio::task::yield_now().await;
        }
        after_ack.latencies.push(acknowledged.elapsed().as_nanos() as u64);
        after_call.latencies.push(sent.elapsed().as_nanos() as u64);
    }
    println!("\n== revoke → rejected by the cached verifier, {} revocations", after_ack.latencies.len());
    println!("{:<34}{:>12}{:>12}{:>12}", "", "p50", "p99", "max");
    for (label, sample) in [("after Revoke is acknowledged", &mut after_ack), ("after Revoke is sent", &mut after_call)]
    {
        let (p50, p99, max) = (sample.percentile(50.0), sample.percentile(99.0), sample.percentile(100.0));
        println!("{label:<34}{:>12}{:>12}{:>12}", us(p50), us(p99), us(max));
    }
    Ok(())
}

/// Health/Check behind `RequireToken` against the same service bare.
async fn layer(verifier: &CachedVerifier, token: &str, seconds: f64) -> Result<(), BoxError> {
    let bare = sibling(None).await?;
    let guarded = sibling(Some(RequireToken::new(verifier.clone(), ["orders:read"]))).await?;
    let authorization: AsciiMetadataValue = format!("Bearer {token}").parse()?;
    let bare = Call::CheckWith(HealthClient::new(connect(bare).await?), authorization.clone());
    let guarded = Call::CheckWith(HealthClient::new(connect(guarded).await?), authorization);
    println!("\n== RequireToken: grpc.health.v1 Health/Check protected vs bare, alternating, {seconds} s each");
    println!("{:<28}{:>14}{:>14}{:>9}", "", "protected", "bare", "ratio");
    let (mut g, mut b) = alternate(&guarded, &bare, 1, seconds).await?;
    for (name, p) in [("sequential p50", 50.0), ("sequential p99", 99.0)] {
        let (x, y) = (g.percentile(p), b.percentile(p));
        println!("{name:<28}{:>14}{:>14}{:>9.3}", us(x), us(y), x.as_secs_f64() / y.as_secs_f64().max(1e-12));
    }
    let (g, b) = alternate(&guarded, &bare, 64, seconds).await?;
    let (x, y) = (g.throughput(), b.throughput());
    println!("{:<28}{:>12.0}/s{:>12.0}/s{:>9.3}", "64 in flight: throughput", x, y, x / y);
    Ok(())
}

/// A sibling service (Health, reporting SERVING) on a fresh port, behind
/// `guard` if given.
async fn sibling(guard: Option<RequireToken>) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    // The servers live as long as the bench process.
    match guard {
        Some(guard) => tokio::spawn(builder.layer(guard).add_service(health).serve_with_incoming(incoming)),
        None => tokio::spawn(builder.add_service(health).serve_with_incoming(incoming)),
    };
    Ok(addr)
}

async fn connect(addr: SocketAddr) -> Result<Channel, BoxError> {
    Ok(Channel::from_shared(format!("http://{addr}"))?.connect().await?)
}

fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.max(0.01))
}

fn ns(d: Duration) -> String {
    format!("{} ns", d.as_nanos())
}
