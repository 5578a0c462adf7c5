//! The front door's limits: how many connections may be open, how long a new
//! one may stay silent, how peers are kept honest by keepalive, how many
//! streams and how many header bytes a connection may use, and how long and
//! how many admin calls may run.
//!
//! Each is a `tokend serve` flag (see `config`); [`Limits::default`] holds the
//! defaults, chosen for a service on every sibling's request path. Where each
//! is enforced:
//!
//! * connections, the handshake deadline and the abuse cooldown: `conn`
//!   (hyper has none of them);
//! * keepalive, concurrent streams, header bytes, and the HTTP/2 layer's own
//!   flood defences (rapid reset and oversize header blocks answered with
//!   GOAWAY ENHANCE_YOUR_CALM): hyper's HTTP/2 server, set up by
//!   [`Limits::server`];
//! * the admin deadline and load shedding: `service::admission`.

use std::time::Duration;

use tonic::transport::Server;

/// The front door's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// How long a new connection has to complete the TLS handshake, the
    /// HTTP/2 preface and its first request's headers before it is closed.
    pub handshake_timeout: Duration,
    /// Most connections open at once on the gRPC ports (`--listen` and
    /// `--admin-listen` together); past it new ones are closed at once.
    pub max_connections: usize,
    /// How long a connection may be quiet before tokend pings it; `None`:
    /// never.
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
    /// Most concurrent streams per connection, announced in SETTINGS.
    pub max_concurrent_streams: u32,
    /// Largest request header list (HTTP/2's measure: each entry's name and
    /// value plus 32 bytes).
    pub max_header_bytes: u32,
    /// Server-side deadline of every admin call.
    pub admin_timeout: Duration,
    /// Most admin calls running at once; past it, RESOURCE_EXHAUSTED.
    pub max_admin_inflight: usize,
    /// How long new connections from a peer are closed at once after its
    /// connections earned `conn::abuse::STRIKES` GOAWAY ENHANCE_YOUR_CALM
    /// answers; zero: never.
    pub abuse_cooldown: Duration,
}

/// Connections the plaintext health port (`--health-listen`) and the
/// metrics port accept, each on its own: only the kubelet and a scraper talk
/// to them, and a flood of the gRPC port must not starve the probes.
pub const SIDE_PORT_MAX_CONNECTIONS: usize = 128;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 1_000,
            max_header_bytes: 16 << 10,
            admin_timeout: Duration::from_secs(30),
            max_admin_inflight: 256,
            abuse_cooldown: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// A gRPC server builder with the HTTP/2 limits applied.
    pub fn server(&self) -> Server {
        Server::builder()
            .http2_keepalive_interval(self.keepalive_interval)
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_max_header_list_size(self.max_header_bytes)
    }
}
