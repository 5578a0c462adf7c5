//! [`Guarded`]: one admitted connection, on the plaintext side of TLS.
//!
//! It holds the connection's place under the cap, fails its reads once the
//! handshake deadline passes before the first request, and, on HTTP/2
//! ports, watches both directions' frames: the client's until its first
//! complete header block (the first request), the server's for a GOAWAY
//! ENHANCE_YOUR_CALM, which earns the peer a strike. Watching costs a few
//! comparisons per frame; payloads are skipped by length, never copied.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};
use tonic::transport::server::Connected;

use super::{
    Permit, Protocol,
    abuse::Cooldown,
    frames::{CONTINUATION, END_HEADERS, ENHANCE_YOUR_CALM, FrameWalker, HEADERS, Seen},
};

/// The socket under a connection.
pub(crate) enum Stream {
    /// Plaintext TCP.
    Plain(TcpStream),
    /// TLS over TCP, handshake done.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Who is on the other end of a connection; in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The peer's address.
    pub remote_addr: SocketAddr,
}

/// HTTP/2 frame watching, on HTTP/2 ports.
struct Watch {
    /// The client's frames, until the first request.
    client: FrameWalker,
    /// The server's frames.
    server: FrameWalker,
    cooldown: Arc<Cooldown>,
    /// A strike was recorded for this connection already.
    struck: bool,
}

/// An admitted connection (see the module doc).
pub struct Guarded {
    stream: Stream,
    peer: Peer,
    /// Set by the first request: lifts the deadline.
    spoke: Arc<AtomicBool>,
    /// Until the first request: the handshake deadline.
    deadline: Option<Pin<Box<Sleep>>>,
    watch: Option<Watch>,
    _permit: Permit,
}

impl Guarded {
    pub(crate) fn new(
        stream: Stream,
        remote_addr: SocketAddr,
        permit: Permit,
        deadline: Instant,
        protocol: Protocol,
    ) -> Guarded {
        let watch = match protocol {
            Protocol::Http1 => None,
            Protocol::Http2 { cooldown } => {
                Some(Watch { client: FrameWalker::client(), server: FrameWalker::server(), cooldown, struck: false })
            }
        };
        Guarded {
            stream,
            peer: Peer { remote_addr },
            spoke: Arc::default(),
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
            watch,
            _permit: permit,
        }
    }

    /// The flag an HTTP/1 server sets on each request, lifting the deadline.
    pub fn spoke(&self) -> Arc<AtomicBool> {
        self.spoke.clone()
    }

    /// Notes what the server wrote: a GOAWAY ENHANCE_YOUR_CALM is a strike.
    fn written(&mut self, bytes: &[u8]) {
        let Some(watch) = &mut self.watch else { return };
        let mut calm = false;
        watch.server.feed(bytes, |seen| calm |= seen == Seen::GoAway(ENHANCE_YOUR_CALM));
        if calm && !watch.struck {
            watch.struck = true;
            watch.cooldown.strike(self.peer.remote_addr.ip());
        }
    }
}

impl Connected for Guarded {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = &mut this.deadline {
            if this.spoke.load(Ordering::Relaxed) {
                this.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                // The server sees a failed read and closes the connection.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within --handshake-timeout",
                )));
            }
        }
        let before = buf.filled().len();
        match &mut this.stream {
            Stream::Plain(s) => ready!(Pin::new(s).poll_read(cx, buf))?,
            Stream::Tls(s) => ready!(Pin::new(s.as_mut()).poll_read(cx, buf))?,
        }
        if this.deadline.is_some()
            && let Some(watch) = &mut this.watch
        {
            let mut first_request = false;
            watch.client.feed(&buf.filled()[before..], |seen| {
                if let Seen::Frame { kind: HEADERS | CONTINUATION, flags } = seen {
                    first_request |= flags & END_HEADERS != 0;
                }
            });
            if first_request {
                this.spoke.store(true, Ordering::Relaxed);
                this.deadline = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let n = match &mut self.stream {
            Stream::Plain(s) => ready!(Pin::new(s).poll_write(cx, buf))?,
            Stream::Tls(s) => ready!(Pin::new(s.as_mut()).poll_write(cx, buf))?,
        };
        self.written(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = match &mut self.stream {
            Stream::Plain(s) => ready!(Pin::new(s).poll_write_vectored(cx, bufs))?,
            Stream::Tls(s) => ready!(Pin::new(s.as_mut()).poll_write_vectored(cx, bufs))?,
        };
        let mut left = n;
        for buf in bufs {
            let take = left.min(buf.len());
            self.written(&buf[..take]);
            left -= take;
            if left == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
