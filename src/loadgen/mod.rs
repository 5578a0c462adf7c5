//! `tokend bench`: the load generator.
//!
//! It fills a throwaway store with N tokens through the library (seconds,
//! not N RPCs), then measures, on one gRPC connection:
//!
//! * Verify against `grpc.health.v1.Health/Check` — the cost floor of any
//!   call on the same server and connection — sequentially (p50/p99/p99.9)
//!   and with 16 and 64 calls in flight (throughput, p99). The two are run in
//!   alternating blocks, so drift on a shared machine hits both alike, and
//!   reported with their ratio;
//! * Verify throughput with and without a writer issuing and revoking 200
//!   tokens a second;
//! * durable Issue and Revoke with 1, 16 and 64 concurrent clients, with the
//!   store flushes made per 100 writes;
//! * the tail (`--mode tail`): Verify against Check at p99 and p99.9,
//!   sequentially and at 64 in flight, while last-used times are persisted
//!   every second and every token in use is dirty at each tick: the
//!   Verify calls walk the whole token set, and a background thread uses
//!   30,000 more tokens a second in process (`--tail-dirty-per-second`), as
//!   other clients of a busy replica would;
//! * the front door under attack (`--mode flood`, in `flood`): Verify's
//!   latency while 5,000 idle connections and a rapid-reset attacker run,
//!   against the same client without them;
//! * start-up of the real binary: time to SERVING and resident memory.
//! * with `--mode postgres --store URL` (an empty database): the same
//!   start-up figures loading from PostgreSQL, then two replicas in process:
//!   how long a revocation through one takes to be rejected by the other
//!   (over 1,000 revocations), Verify vs Check on a replica, and durable
//!   Issue through a replica.
//!
//! Every loop is bounded by a deadline; all traffic stays on 127.0.0.1 (and
//! the database named by `--store`).

mod cached;
mod flood;
mod postgres;

pub use flood::{
    ATTACKER, ENHANCE_YOUR_CALM, GOAWAY, PREFACE, client_start, connect_from, rapid_reset_burst, read_until_goaway,
};

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use clap::{Args, ValueEnum};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    Config, Tokend,
    clock::Clock,
    pb::{self, token_service_client::TokenServiceClient, verify_service_client::VerifyServiceClient},
    seed,
};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Everything below.
    All,
    /// Verify vs Health/Check, and Verify under a concurrent writer.
    Verify,
    /// Durable Issue and Revoke under concurrency.
    Write,
    /// Start-up time and memory of the real binary.
    Startup,
    /// Verify's tail against Check's while last-used times are persisted.
    Tail,
    /// Replicas on the PostgreSQL database named by `--store`.
    Postgres,
    /// Verify while idle connections and a rapid-reset attacker flood the
    /// port.
    Flood,
    /// The sibling-side cache (`tokend-client`): in-process checks,
    /// revoke → reject, and the tower layer's overhead.
    Cached,
}

/// Flags of `tokend bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Tokens in the store.
    #[arg(long, default_value_t = 1_000_000)]
    pub tokens: usize,
    /// Seconds of measurement per phase and kind of call.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// What to measure.
    #[arg(long, value_enum, default_value = "all")]
    pub mode: Mode,
    /// fsync after each flush in the write measurements.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
    /// Where to build the throwaway store (default: the system temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Tail phase: how often last-used times are persisted.
    #[arg(long, default_value = "1s", value_parser = crate::config::parse_positive_duration)]
    pub tail_interval: Duration,
    /// Tail phase: tokens a background thread uses per second, besides the
    /// Verify calls (0 = none).
    #[arg(long, default_value_t = 30_000)]
    pub tail_dirty_per_second: usize,
    /// Flood phase: connections held open without a byte sent.
    #[arg(long, default_value_t = 5_000)]
    pub flood_idle: usize,
    /// Flood phase: the server's --abuse-cooldown (0: off, to see what it
    /// buys).
    #[arg(long, default_value = "10s", value_parser = crate::config::parse_duration)]
    pub abuse_cooldown: Duration,
    /// `--mode startup` or `verify`: seed the store in this directory and
    /// keep it, or reuse it if an earlier run seeded it with as many tokens
    /// (large runs seed once). The secrets of the sampled tokens are kept
    /// beside it (`tokend-bench-secrets`, synthetic tokens of this store
    /// only); a verify run's writer adds its few tokens to the store.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// `--mode postgres`: an empty PostgreSQL database to seed and measure.
    #[arg(long, env = "TOKEND_STORE", hide_env_values = true)]
    pub store: Option<String>,
}

/// Length of one measurement block; Verify and Check blocks alternate.
const BLOCK: Duration = Duration::from_millis(250);

/// Runs the benchmark and prints its report to stdout.
pub fn run(args: &BenchArgs) -> Result<(), BoxError> {
    let base = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("tokend-bench-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    if args.mode == Mode::Postgres {
        let url = args.store.as_deref().ok_or("--mode postgres needs --store postgres://… (an empty database)")?;
        return postgres::run(args, url, &dir);
    }
    // The tail phase uses every token; the others a sample of about 10,000.
    let sample_every = (args.tokens / 10_000).max(1);
    if let Some(keep) = &args.keep {
        if !matches!(args.mode, Mode::Startup | Mode::Verify) {
            return Err("--keep goes with --mode startup or --mode verify".into());
        }
        let secrets = seed_kept(keep, args.tokens, sample_every)?;
        if args.mode == Mode::Startup {
            return startup(&[OsStr::new("--data-dir"), keep.as_os_str()]);
        }
        let (admin, sample) = secrets.split_first().ok_or("the kept secrets file is empty: give another --keep")?;
        return in_process(args, keep, admin, sample.to_vec(), Phases::Standard);
    }
    let started = Instant::now();
    let tail = matches!(args.mode, Mode::All | Mode::Tail);
    // The cached phase holds 100,000 of them (or all, if fewer).
    let cached_every = (args.tokens / 100_000).max(1);
    let keep_every = if tail {
        1
    } else if args.mode == Mode::Cached {
        cached_every
    } else {
        sample_every
    };
    let secrets = seed::store(&dir, args.tokens, keep_every, Clock::System.now())?;
    println!(
        "tokend bench: {} tokens seeded in {:.1?} ({} cores)",
        args.tokens,
        started.elapsed(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if matches!(args.mode, Mode::All | Mode::Startup) {
        startup(&[OsStr::new("--data-dir"), dir.as_os_str()])?;
    }
    let admin = secrets[0].expose().to_owned();
    let valid: Vec<String> = secrets[1..].iter().map(|s| s.expose().to_owned()).collect();
    drop(secrets);
    if matches!(args.mode, Mode::All | Mode::Verify | Mode::Write) {
        let step = if tail { sample_every } else { 1 };
        let sample = valid.iter().step_by(step).cloned().collect();
        in_process(args, &dir, &admin, sample, Phases::Standard)?;
    }
    if matches!(args.mode, Mode::All | Mode::Flood) {
        let sample = valid.iter().step_by(if tail { sample_every } else { 1 }).cloned().collect();
        in_process(args, &dir, &admin, sample, Phases::Flood)?;
    }
    if tail {
        in_process(args, &dir, &admin, valid.clone(), Phases::Tail)?;
    }
    // Last: it revokes some of the tokens.
    if matches!(args.mode, Mode::All | Mode::Cached) {
        let sample = valid.iter().step_by(if tail { cached_every } else { 1 }).cloned().collect();
        in_process(args, &dir, &admin, sample, Phases::Cached)?;
    }
    Ok(())
}

/// Seeds `n` tokens into `dir` unless an earlier `--keep` run did: a
/// marker file records how many, written only once the store and the
/// secrets file (the admin token's, then every `keep_every`-th token's)
/// are complete. Returns those secrets.
fn seed_kept(dir: &Path, n: usize, keep_every: usize) -> Result<Vec<String>, BoxError> {
    let marker = dir.join("tokend-bench-seeded");
    let kept = dir.join("tokend-bench-secrets");
    match std::fs::read_to_string(&marker) {
        Ok(text) if text.trim() == n.to_string() => {
            let secrets = std::fs::read_to_string(&kept).map_err(|e| {
                format!("{}: {e} (seeded by an earlier tokend bench: give another --keep)", kept.display())
            })?;
            println!("tokend bench: reusing {} tokens seeded in {}", n, dir.display());
            return Ok(secrets.lines().map(str::to_owned).collect());
        }
        Ok(text) => {
            return Err(
                format!("{} holds {} seeded tokens, not {n}: give another --keep", dir.display(), text.trim()).into()
            );
        }
        Err(_) if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) => {
            return Err(format!(
                "{} is not empty and was not seeded by --keep: give an empty or new one",
                dir.display()
            )
            .into());
        }
        Err(_) => {}
    }
    let started = Instant::now();
    let secrets: Vec<String> =
        seed::store(dir, n, keep_every, Clock::System.now())?.iter().map(|s| s.expose().to_owned()).collect();
    write_private(&kept, &secrets.join("\n"))?;
    std::fs::write(&marker, n.to_string())?;
    println!("tokend bench: {n} tokens seeded in {:.1?} into {} (kept)", started.elapsed(), dir.display());
    Ok(secrets)
}

/// Writes `text` to a new file only its owner may read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?.write_all(text.as_bytes())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the real binary with `store_args` and measures time to SERVING
/// and RSS.
pub(crate) fn startup(store_args: &[&OsStr]) -> Result<(), BoxError> {
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(store_args)
        .env("RUST_LOG", "info")
        .env_remove("TOKEND_BOOTSTRAP_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut addr = None;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if let Some(rest) = line.split(" serving addr=").nth(1) {
            addr = Some(rest.split_whitespace().next().unwrap_or_default().parse::<SocketAddr>()?);
            break;
        }
    }
    let addr = addr.ok_or("the server exited before serving")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let serving = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))?.connect().await {
                let mut health = HealthClient::new(channel);
                let req = HealthCheckRequest { service: "tokend.v1.VerifyService".into() };
                if health.check(req).await.is_ok_and(|r| r.into_inner().status == 1) {
                    return Ok::<_, BoxError>(started.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err("not SERVING within 120 s".into())
    })?;
    let rss = rss_kib(child.id()).unwrap_or(0);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    println!("\n== start-up (real binary)\nprocess start → SERVING: {serving:.2?}\nRSS after load: {} MiB", rss / 1024);
    Ok(())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Which measurements one server run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phases {
    /// Verify vs Check, under a writer, durable writes (as `--mode` asks).
    Standard,
    /// The tail under last-used persistence.
    Tail,
    /// Verify under a connection flood.
    Flood,
    /// The sibling-side cache.
    Cached,
}

/// Runs a server in this process (its own runtime, as a separate process
/// would have) and the client on another runtime.
fn in_process(args: &BenchArgs, dir: &Path, admin: &str, valid: Vec<String>, phases: Phases) -> Result<(), BoxError> {
    let server_rt = tokio::runtime::Builder::new_multi_thread().thread_name("server").enable_all().build()?;
    let mut config = Config::new(dir);
    config.fsync = args.fsync;
    if phases == Phases::Tail {
        config.last_used_flush_interval = args.tail_interval;
    }
    config.limits.abuse_cooldown = args.abuse_cooldown;
    let tokend = server_rt.block_on(Tokend::open(config))?;
    let registry = tokend.registry().clone();
    let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = server_rt.spawn(tokend.serve(listener, async {
        let _ = stopped.await;
    }));

    let client_rt = tokio::runtime::Builder::new_multi_thread().thread_name("client").enable_all().build()?;
    let valid = Arc::new(valid);
    let seconds = args.seconds;
    let result = client_rt.block_on(async move {
        let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
        if phases == Phases::Tail {
            return tail(&channel, &valid, registry.index(), args).await;
        }
        if phases == Phases::Flood {
            return flood::flood(&channel, &valid, addr, seconds, args.flood_idle).await;
        }
        if phases == Phases::Cached {
            return cached::run(&channel, addr, &valid, admin, seconds).await;
        }
        if matches!(args.mode, Mode::All | Mode::Verify) {
            verify_vs_check(&channel, &valid, seconds).await?;
            verify_under_writes(&channel, &valid, admin, seconds).await?;
        }
        if matches!(args.mode, Mode::All | Mode::Write) {
            writes(&channel, admin, seconds, &registry).await?;
        }
        Ok::<_, BoxError>(())
    });
    let _ = stop.send(());
    server_rt.block_on(server)??;
    result
}

/// One kind of call, made repeatedly.
#[derive(Clone)]
enum Call {
    Verify(VerifyServiceClient<Channel>, Arc<Vec<String>>),
    Check(HealthClient<Channel>),
    /// Health/Check with an `authorization` header (for a guarded service).
    CheckWith(HealthClient<Channel>, tonic::metadata::AsciiMetadataValue),
}

impl Call {
    async fn once(&mut self, i: usize) -> Result<(), tonic::Status> {
        match self {
            Call::Verify(client, tokens) => {
                let req = pb::VerifyRequest {
                    token: tokens[i % tokens.len()].clone(),
                    required_scopes: vec!["orders:read".into()],
                    ..Default::default()
                };
                let r = client.verify(req).await?.into_inner();
                if !r.valid {
                    return Err(tonic::Status::internal(format!("bench token did not verify: {:?}", r.result)));
                }
            }
            Call::Check(client) => {
                client.check(HealthCheckRequest { service: String::new() }).await?;
            }
            Call::CheckWith(client, authorization) => {
                let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
                request.metadata_mut().insert("authorization", authorization.clone());
                client.check(request).await?;
            }
        }
        Ok(())
    }
}

/// Latencies (ns) and the wall time they were collected over.
#[derive(Default)]
struct Sample {
    latencies: Vec<u64>,
    elapsed: Duration,
}

impl Sample {
    fn add(&mut self, other: Sample) {
        self.latencies.extend(other.latencies);
        self.elapsed += other.elapsed;
    }

    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile(&mut self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let i = ((p / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        Duration::from_nanos(self.latencies[i])
    }
}

/// Runs `call` with `in_flight` concurrent callers for `length`.
async fn block(call: &Call, in_flight: usize, length: Duration) -> Result<Sample, BoxError> {
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = (0..in_flight)
        .map(|worker| {
            let mut call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(4096);
                let mut i = worker * 7919;
                while Instant::now() < deadline && latencies.len() < 10_000_000 {
                    let t = Instant::now();
                    call.once(i).await?;
                    latencies.push(t.elapsed().as_nanos() as u64);
                    i += 1;
                }
                Ok::<_, tonic::Status>(latencies)
            })
        })
        .collect();
    gather(tasks, started).await
}

/// Waits for measuring tasks and merges their latencies into one sample.
async fn gather(
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<u64>, tonic::Status>>>,
    started: Instant,
) -> Result<Sample, BoxError> {
    let mut sample = Sample::default();
    for t in tasks {
        sample.latencies.extend(t.await??);
    }
    sample.elapsed = started.elapsed();
    Ok(sample)
}

/// Alternates blocks of `a` and `b` (swapping which goes first each round).
async fn alternate(a: &Call, b: &Call, in_flight: usize, seconds: f64) -> Result<(Sample, Sample), BoxError> {
    let rounds = ((seconds / BLOCK.as_secs_f64()).ceil() as usize).max(2);
    let (mut sa, mut sb) = (Sample::default(), Sample::default());
    // Warm-up: connections, caches, allocator.
    block(a, in_flight, BLOCK / 2).await?;
    block(b, in_flight, BLOCK / 2).await?;
    for round in 0..rounds {
        if round % 2 == 0 {
            sa.add(block(a, in_flight, BLOCK).await?);
            sb.add(block(b, in_flight, BLOCK).await?);
        } else {
            sb.add(block(b, in_flight, BLOCK).await?);
            sa.add(block(a, in_flight, BLOCK).await?);
        }
    }
    Ok((sa, sb))
}

pub(crate) fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

pub(crate) async fn verify_vs_check(
    channel: &Channel,
    tokens: &Arc<Vec<String>>,
    seconds: f64,
) -> Result<(), BoxError> {
    let verify = Call::Verify(VerifyServiceClient::new(channel.clone()), tokens.clone());
    let check = Call::Check(HealthClient::new(channel.clone()));
    println!("\n== Verify vs Health/Check, one connection, alternating {BLOCK:?} blocks, {seconds} s each");
    println!("{:<28}{:>14}{:>14}{:>9}", "", "Verify", "Check", "ratio");
    let (mut v, mut c) = alternate(&verify, &check, 1, seconds).await?;
    for (name, p) in [("sequential p50", 50.0), ("sequential p99", 99.0), ("sequential p99.9", 99.9)] {
        let (a, b) = (v.percentile(p), c.percentile(p));
        println!("{name:<28}{:>14}{:>14}{:>9.3}", us(a), us(b), a.as_secs_f64() / b.as_secs_f64().max(1e-12));
    }
    for in_flight in [16, 64] {
        let (mut v, mut c) = alternate(&verify, &check, in_flight, seconds).await?;
        let (a, b) = (v.throughput(), c.throughput());
        println!("{:<28}{:>12.0}/s{:>12.0}/s{:>9.3}", format!("{in_flight} in flight: throughput"), a, b, a / b);
        let (a, b) = (v.percentile(99.0), c.percentile(99.0));
        let label = format!("{in_flight} in flight: p99");
        println!("{label:<28}{:>14}{:>14}{:>9.3}", us(a), us(b), a.as_secs_f64() / b.as_secs_f64().max(1e-12));
    }
    Ok(())
}

/// Verify against Check, sequentially and at 64 in flight, with last-used
/// persistence every `--tail-interval` and every token in use dirty at each
/// tick (see the module doc).
async fn tail(
    channel: &Channel,
    tokens: &Arc<Vec<String>>,
    index: &Arc<crate::index::Index>,
    args: &BenchArgs,
) -> Result<(), BoxError> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dirtier = {
        // The hashes are computed up front, so the thread costs what the
        // index's own bookkeeping costs (a lookup and a touch per token), in
        // slices every 10 ms: a smooth background load, not bursts that
        // would take a core from the server and blur what is measured.
        let hashes: Vec<_> =
            tokens.iter().filter_map(|t| crate::token::parse(t).ok().map(crate::token::hash_token)).collect();
        let (index, stop) = (index.clone(), stop.clone());
        let slice = args.tail_dirty_per_second / 100;
        std::thread::Builder::new().name("bench-dirtier".into()).spawn(move || {
            // Walks the token set from its far end, so these uses rarely fall
            // on a token the gRPC calls just used.
            let mut next = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let now = Clock::System.now();
                for _ in 0..slice {
                    if let Some(entry) = index.lookup(&hashes[hashes.len() - 1 - next % hashes.len()]) {
                        index.touch(&entry, now);
                    }
                    next += 1;
                }
                std::thread::sleep(Duration::from_millis(10).saturating_sub(started.elapsed()));
            }
        })?
    };
    let result = tail_phases(channel, tokens, args).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = dirtier.join();
    result
}

async fn tail_phases(channel: &Channel, tokens: &Arc<Vec<String>>, args: &BenchArgs) -> Result<(), BoxError> {
    let seconds = args.seconds;
    let verify = Call::Verify(VerifyServiceClient::new(channel.clone()), tokens.clone());
    let check = Call::Check(HealthClient::new(channel.clone()));
    println!(
        "\n== tail: last-used persisted every {:?}, every token in use dirty \
         ({} tokens walked by the calls, {}/s more in process), {seconds} s each",
        args.tail_interval,
        tokens.len(),
        args.tail_dirty_per_second,
    );
    println!("{:<28}{:>14}{:>14}{:>9}", "", "Verify", "Check", "ratio");
    for in_flight in [1, 64] {
        let (mut v, mut c) = alternate(&verify, &check, in_flight, seconds).await?;
        let label = if in_flight == 1 { "sequential".to_owned() } else { format!("{in_flight} in flight") };
        for p in [50.0, 99.0, 99.9] {
            let (a, b) = (v.percentile(p), c.percentile(p));
            let name = format!("{label} p{p}");
            println!("{name:<28}{:>14}{:>14}{:>9.3}", us(a), us(b), a.as_secs_f64() / b.as_secs_f64().max(1e-12));
        }
        let (a, b) = (v.throughput(), c.throughput());
        println!("{:<28}{:>12.0}/s{:>12.0}/s{:>9.3}", format!("{label} throughput"), a, b, a / b);
    }
    Ok(())
}

/// Verify throughput at 64 in flight with and without a writer issuing and
/// revoking 200 tokens a second, in alternating blocks.
async fn verify_under_writes(
    channel: &Channel,
    tokens: &Arc<Vec<String>>,
    admin: &str,
    seconds: f64,
) -> Result<(), BoxError> {
    let verify = Call::Verify(VerifyServiceClient::new(channel.clone()), tokens.clone());
    let rounds = ((seconds / BLOCK.as_secs_f64()).ceil() as usize).max(2);
    let (mut quiet, mut busy) = (Sample::default(), Sample::default());
    let admin_client = admin_client(channel, admin);
    for round in 0..rounds * 2 {
        let with_writer = (round % 2 == 0) == (round / 2 % 2 == 0);
        if with_writer {
            let writer = tokio::spawn(write_at_rate(admin_client.clone(), 200.0, BLOCK));
            busy.add(block(&verify, 64, BLOCK).await?);
            writer.await??;
        } else {
            quiet.add(block(&verify, 64, BLOCK).await?);
        }
    }
    println!("\n== Verify at 64 in flight while a writer issues and revokes 200 tokens/s");
    let (a, b) = (busy.throughput(), quiet.throughput());
    println!("with writer {a:.0}/s, without {b:.0}/s, ratio {:.3}", a / b);
    Ok(())
}

pub(crate) type AdminClient =
    TokenServiceClient<tonic::service::interceptor::InterceptedService<Channel, crate::auth::BearerToken>>;

pub(crate) fn admin_client(channel: &Channel, admin: &str) -> AdminClient {
    // The admin token comes from `seed`, so it is always a valid header value.
    let bearer = crate::auth::BearerToken::new(admin).expect("seeded admin token is ASCII");
    TokenServiceClient::with_interceptor(channel.clone(), bearer)
}

/// Issues and revokes tokens, alternately, at `per_second` for `length`.
async fn write_at_rate(mut admin: AdminClient, per_second: f64, length: Duration) -> Result<(), BoxError> {
    let started = Instant::now();
    let mut n = 0u64;
    let mut last_id = None;
    while started.elapsed() < length {
        match last_id.take() {
            None => {
                let r = admin.issue(issue_request(n)).await?.into_inner();
                last_id = r.token.map(|t| t.id);
            }
            Some(id) => {
                admin.revoke(pb::RevokeRequest { id, reason: "bench".into() }).await?;
            }
        }
        n += 1;
        let due = started + Duration::from_secs_f64(n as f64 / per_second);
        tokio::time::sleep_until(due.into()).await;
    }
    Ok(())
}

pub(crate) fn issue_request(n: u64) -> pb::IssueRequest {
    pb::IssueRequest {
        name: format!("bench-{n}"),
        owner: format!("bench-owner-{}", n % 100),
        scopes: vec!["orders:read".into()],
        ttl: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
        ..Default::default()
    }
}

/// Durable Issue, then Revoke of what was issued, with 1, 16 and 64 clients.
pub(crate) async fn writes(
    channel: &Channel,
    admin: &str,
    seconds: f64,
    registry: &Arc<crate::registry::Registry>,
) -> Result<(), BoxError> {
    println!("\n== durable writes ({seconds} s per row)");
    println!("{:<20}{:>12}{:>14}{:>22}", "", "calls/s", "p99", "flushes/100 writes");
    let length = Duration::from_secs_f64(seconds);
    for clients in [1usize, 16, 64] {
        let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
        for revoke in [false, true] {
            let flushes_before = registry.committer().flushes();
            let started = Instant::now();
            let deadline = started + length;
            let tasks: Vec<_> = (0..clients)
                .map(|w| {
                    let mut admin = admin_client(channel, admin);
                    let ids = ids.clone();
                    tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        let mut n = (w as u64) << 32;
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            if revoke {
                                let Some(id) = ids.lock().unwrap_or_else(|e| e.into_inner()).pop() else { break };
                                admin.revoke(pb::RevokeRequest { id, reason: "bench".into() }).await?;
                            } else {
                                let r = admin.issue(issue_request(n)).await?.into_inner();
                                ids.lock().unwrap_or_else(|e| e.into_inner()).extend(r.token.map(|t| t.id));
                            }
                            latencies.push(t.elapsed().as_nanos() as u64);
                            n += 1;
                        }
                        Ok::<_, tonic::Status>(latencies)
                    })
                })
                .collect();
            let mut sample = gather(tasks, started).await?;
            let flushes = registry.committer().flushes() - flushes_before;
            let per_100 = flushes as f64 * 100.0 / sample.latencies.len().max(1) as f64;
            let label = format!("{} × {clients}", if revoke { "Revoke" } else { "Issue" });
            println!("{label:<20}{:>12.0}{:>14}{:>22.1}", sample.throughput(), us(sample.percentile(99.0)), per_100);
        }
    }
    Ok(())
}
