//! Accepted connections: the cap on how many are open (`--max-connections`)
//! and the deadline by which each must have sent its first request
//! (`--handshake-timeout`).
//!
//! hyper's HTTP/2 server has neither, and tonic accepts whatever its listener
//! yields, so both live in the stream of connections tonic serves:
//! [`Incoming`] closes a connection past the cap at once and wraps each one
//! it admits in [`Guarded`], which holds its place under the cap until it
//! closes and fails its reads once the deadline passes, unless a request
//! has arrived. The TLS handshake, the HTTP/2 preface and the first request's
//! headers are all reads, so one deadline covers all three, and a peer that
//! sends the preface and then nothing (slow headers) is closed like one that
//! sends nothing. A request reaching the services marks its connection
//! ([`mark_spoke`]); from then on HTTP/2 keepalive, not the deadline, decides
//! whether the peer is alive, so an idle sibling keeps its connection.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::Sleep,
};
use tonic::transport::server::{Connected, TlsConnectInfo};

use crate::limits::SIDE_PORT_MAX_CONNECTIONS;

/// At most one "connection limit reached" line per this long, however many
/// connections a flood brings.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// How long accepting pauses after an error such as EMFILE, which would
/// otherwise repeat at once in a busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Connections refused in one poll before the accept task yields, so a flood
/// cannot hold a worker thread.
const REFUSALS_PER_POLL: usize = 64;

/// A budget of open connections, shared by the listeners it guards.
#[derive(Debug)]
pub struct Gate {
    /// Which ports, for the log line.
    ports: &'static str,
    limit: i64,
    /// Open connections; also the `tokend_connections` gauge.
    open: Gauge,
    /// Refusals; also `tokend_connections_refused_total`.
    refused: Counter,
    /// Refusals not yet reported in a log line.
    unreported: AtomicU64,
    /// When the last warning was logged, in ms since `epoch`, plus one
    /// (0: never).
    warned_at: AtomicU64,
    epoch: Instant,
}

impl Gate {
    /// A gate admitting `limit` connections, counting them in `open` and
    /// refusals in `refused`.
    pub fn new(ports: &'static str, limit: usize, open: Gauge, refused: Counter) -> Arc<Gate> {
        Arc::new(Gate {
            ports,
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            open,
            refused,
            unreported: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// A gate of its own for a side port (health, metrics), with
    /// [`SIDE_PORT_MAX_CONNECTIONS`] places, not counted in the metrics.
    pub fn side_port(ports: &'static str) -> Arc<Gate> {
        Gate::new(ports, SIDE_PORT_MAX_CONNECTIONS, Gauge::default(), Counter::default())
    }

    /// Connections open now.
    pub fn open(&self) -> i64 {
        self.open.get()
    }

    /// A place under the cap, or `None` (counted and reported) past it.
    fn admit(self: &Arc<Gate>) -> Option<Permit> {
        // Increment first, so two listeners admitting at once cannot both
        // take the last place.
        if self.open.inc() < self.limit {
            return Some(Permit(self.clone()));
        }
        self.open.dec();
        self.refused.inc();
        self.unreported.fetch_add(1, Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.warned_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due && self.warned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::warn!(
                ports = self.ports,
                limit = self.limit,
                refused = self.unreported.swap(0, Ordering::Relaxed),
                "connection limit reached: closing new connections at once (--max-connections)"
            );
        }
        None
    }
}

/// A connection's place under its [`Gate`], given back when dropped.
#[derive(Debug)]
struct Permit(Arc<Gate>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.dec();
    }
}

/// The connections a listener accepts, capped by a [`Gate`] and each
/// [`Guarded`] by the handshake deadline.
pub struct Incoming {
    listener: TcpListener,
    gate: Arc<Gate>,
    handshake_timeout: Duration,
    paused: Option<Pin<Box<Sleep>>>,
}

impl Incoming {
    /// Connections from `listener`, admitted by `gate`.
    pub fn new(listener: TcpListener, gate: Arc<Gate>, handshake_timeout: Duration) -> Incoming {
        Incoming { listener, gate, handshake_timeout, paused: None }
    }
}

impl tokio_stream::Stream for Incoming {
    type Item = io::Result<Guarded>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(pause) = &mut this.paused {
            ready!(pause.as_mut().poll(cx));
            this.paused = None;
        }
        for _ in 0..REFUSALS_PER_POLL {
            match ready!(this.listener.poll_accept(cx)) {
                Ok((tcp, remote)) => {
                    // Dropping the socket closes it: the refusal is at once.
                    let Some(permit) = this.gate.admit() else { continue };
                    // Verify is one small request and response: no Nagle.
                    let _ = tcp.set_nodelay(true);
                    return Poll::Ready(Some(Ok(Guarded::new(tcp, remote, permit, this.handshake_timeout))));
                }
                // The peer gave up before we accepted: nothing to report.
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => {}
                Err(e) => {
                    tracing::warn!(error = %e, pause = ?ACCEPT_ERROR_PAUSE, "cannot accept a connection");
                    this.paused = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Who is on the other end of a connection, and whether it has sent a
/// request yet; in every request's extensions (inside [`TlsConnectInfo`]
/// with TLS).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The peer's address.
    pub remote_addr: SocketAddr,
    spoke: Arc<AtomicBool>,
}

impl Peer {
    /// Records that a request arrived, lifting the handshake deadline.
    pub fn mark(&self) {
        // Read before writing: after the first request the flag is only
        // read, so the cache line stays shared between the workers.
        if !self.spoke.load(Ordering::Relaxed) {
            self.spoke.store(true, Ordering::Relaxed);
        }
    }
}

/// Marks the request's connection as having spoken, which lifts its
/// handshake deadline. For `tower::util::MapRequestLayer` on every server.
pub fn mark_spoke<B>(request: http::Request<B>) -> http::Request<B> {
    let extensions = request.extensions();
    let peer =
        extensions.get::<Peer>().or_else(|| extensions.get::<TlsConnectInfo<Peer>>().map(TlsConnectInfo::get_ref));
    if let Some(peer) = peer {
        peer.mark();
    }
    request
}

/// An admitted connection: holds its place under the cap, and fails reads
/// once the handshake deadline passes before a request has arrived.
pub struct Guarded {
    tcp: TcpStream,
    peer: Peer,
    /// Until the first request: the handshake deadline.
    deadline: Option<Pin<Box<Sleep>>>,
    _permit: Permit,
}

impl Guarded {
    fn new(tcp: TcpStream, remote_addr: SocketAddr, permit: Permit, handshake_timeout: Duration) -> Guarded {
        Guarded {
            tcp,
            peer: Peer { remote_addr, spoke: Arc::new(AtomicBool::new(false)) },
            deadline: Some(Box::pin(tokio::time::sleep(handshake_timeout))),
            _permit: permit,
        }
    }
}

impl Guarded {
    /// The peer, for servers that mark requests themselves (HTTP/1).
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl Connected for Guarded {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = &mut this.deadline {
            if this.peer.spoke.load(Ordering::Relaxed) {
                this.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                // The server sees a failed read and closes the connection.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within --handshake-timeout",
                )));
            }
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(limit: usize) -> Arc<Gate> {
        Gate::new("test", limit, Gauge::default(), Counter::default())
    }

    #[test]
    fn the_gate_admits_up_to_its_limit_and_frees_places_as_permits_drop() {
        let gate = gate(2);
        let (a, b) = (gate.admit().unwrap(), gate.admit().unwrap());
        assert!(gate.admit().is_none());
        assert_eq!((gate.open(), gate.refused.get()), (2, 1));
        drop(a);
        let c = gate.admit().unwrap();
        assert!(gate.admit().is_none());
        assert_eq!((gate.open(), gate.refused.get()), (2, 2));
        drop((b, c));
        assert_eq!(gate.open(), 0);
    }

    #[test]
    fn marking_reaches_the_peer_with_or_without_tls() {
        let peer = Peer { remote_addr: "127.0.0.1:1".parse().unwrap(), spoke: Arc::default() };
        let mut request = http::Request::new(());
        request.extensions_mut().insert(peer.clone());
        mark_spoke(request);
        assert!(peer.spoke.load(Ordering::Relaxed));
    }
}
