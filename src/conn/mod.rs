//! Accepted connections: the cap on how many are open (`--max-connections`),
//! the deadline by which each must have sent its first request
//! (`--handshake-timeout`), TLS, and the cooldown of abusive peers
//! (`--abuse-cooldown`, in `abuse`).
//!
//! hyper's HTTP/2 server has none of these, and tonic serves whatever
//! stream of connections it is given, so they live in that stream:
//! [`Incoming`] closes a connection at once past the cap or from a peer
//! cooling down, runs TLS handshakes (several at a time, each under the
//! deadline), and hands tonic each admitted connection wrapped in
//! [`Guarded`] (in `guard`), which holds its place under the cap until it
//! closes, fails its reads once the deadline passes unless a request has
//! arrived, and watches the server's frames for GOAWAY ENHANCE_YOUR_CALM.
//! The TLS handshake, the HTTP/2 preface and the first request's headers
//! all count against the one deadline, so a peer that sends the preface and
//! then nothing (slow headers) is closed like one that sends nothing; from
//! the first request on, HTTP/2 keepalive decides whether the peer is alive,
//! so an idle sibling keeps its connection.
//!
//! TLS is terminated here rather than by tonic so that `Guarded` sits on the
//! plaintext side and can read the HTTP/2 frames.

pub mod abuse;
mod filter;
mod frames;
mod guard;
pub mod tls;

pub use self::guard::{Guarded, Peer};

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tokio::{net::TcpListener, task::JoinSet, time::Sleep};
use tokio_rustls::TlsAcceptor;

use self::{abuse::Cooldown, guard::Stream};
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
pub(crate) struct Permit(Arc<Gate>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.dec();
    }
}

/// What the connections of a port speak.
#[derive(Debug, Clone)]
pub enum Protocol {
    /// HTTP/1 (the metrics port): the server marks each request itself
    /// ([`Guarded::spoke`]); frames are not watched.
    Http1,
    /// HTTP/2: the first request is seen in the frames, and GOAWAY
    /// ENHANCE_YOUR_CALM answers earn the peer a strike in `cooldown`.
    Http2 {
        /// Where strikes are recorded and cooldowns looked up.
        cooldown: Arc<Cooldown>,
    },
}

/// The connections a listener accepts: capped by a [`Gate`], refused while
/// their peer cools down, TLS-terminated if asked, each [`Guarded`].
pub struct Incoming {
    /// Shared with the cooldown, which keeps its socket filter current.
    listener: Arc<TcpListener>,
    gate: Arc<Gate>,
    handshake_timeout: Duration,
    protocol: Protocol,
    tls: Option<TlsAcceptor>,
    handshakes: JoinSet<Option<Guarded>>,
    paused: Option<Pin<Box<Sleep>>>,
}

impl Incoming {
    /// Connections from `listener`, admitted by `gate`.
    pub fn new(listener: TcpListener, gate: Arc<Gate>, handshake_timeout: Duration, protocol: Protocol) -> Incoming {
        let listener = Arc::new(listener);
        if let Protocol::Http2 { cooldown } = &protocol {
            cooldown.guard(&listener);
        }
        Incoming { listener, gate, handshake_timeout, protocol, tls: None, handshakes: JoinSet::new(), paused: None }
    }

    /// Terminates TLS with `acceptor` before handing a connection on.
    pub fn with_tls(mut self, acceptor: Option<TlsAcceptor>) -> Incoming {
        self.tls = acceptor;
        self
    }

    /// Admits or refuses one accepted socket; `Some` when it is ready to
    /// serve (plaintext), `None` when refused or handed to a TLS handshake.
    fn admit(&mut self, tcp: tokio::net::TcpStream, remote: std::net::SocketAddr) -> Option<Guarded> {
        if let Protocol::Http2 { cooldown } = &self.protocol
            && cooldown.refuses(remote.ip())
        {
            return None; // dropping the socket closes it
        }
        let permit = self.gate.admit()?;
        // Verify is one small request and response: no Nagle.
        let _ = tcp.set_nodelay(true);
        let deadline = tokio::time::Instant::now() + self.handshake_timeout;
        let protocol = self.protocol.clone();
        let Some(acceptor) = &self.tls else {
            return Some(Guarded::new(Stream::Plain(tcp), remote, permit, deadline, protocol));
        };
        let accepting = acceptor.accept(tcp);
        self.handshakes.spawn(async move {
            // A failed or late handshake drops the socket and the permit.
            let tls = tokio::time::timeout_at(deadline, accepting).await.ok()?.ok()?;
            Some(Guarded::new(Stream::Tls(Box::new(tls)), remote, permit, deadline, protocol))
        });
        None
    }
}

impl tokio_stream::Stream for Incoming {
    type Item = io::Result<Guarded>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(pause) = &mut this.paused
            && pause.as_mut().poll(cx).is_ready()
        {
            this.paused = None;
        }
        let mut budget_spent = this.paused.is_none();
        if this.paused.is_none() {
            for _ in 0..REFUSALS_PER_POLL {
                match this.listener.poll_accept(cx) {
                    Poll::Pending => {
                        budget_spent = false;
                        break;
                    }
                    Poll::Ready(Ok((tcp, remote))) => {
                        if let Some(conn) = this.admit(tcp, remote) {
                            return Poll::Ready(Some(Ok(conn)));
                        }
                    }
                    // The peer gave up before we accepted: nothing to report.
                    Poll::Ready(Err(e))
                        if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => {}
                    Poll::Ready(Err(e)) => {
                        tracing::warn!(error = %e, pause = ?ACCEPT_ERROR_PAUSE, "cannot accept a connection");
                        let mut pause = Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE));
                        let _ = pause.as_mut().poll(cx); // registers the wake-up
                        this.paused = Some(pause);
                        budget_spent = false;
                        break;
                    }
                }
            }
        }
        // After accepting, so a handshake spawned above has the waker too.
        while let Poll::Ready(Some(done)) = this.handshakes.poll_join_next(cx) {
            if let Ok(Some(conn)) = done {
                return Poll::Ready(Some(Ok(conn)));
            }
        }
        if budget_spent {
            // Refused or handed to TLS in a burst: yield, and come back at once.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
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
}
