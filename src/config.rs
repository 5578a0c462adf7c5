//! Command-line and environment configuration of `tokend serve`, validated
//! into a [`crate::server::Config`] before anything is bound or opened.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use crate::{
    limits::Limits,
    server::{Config, TlsFiles},
    spec::TtlPolicy,
    store::{PostgresOptions, postgres::Target},
    telemetry::LogFormat,
    token::{self, Secret},
};

/// Flags of `tokend serve`. Every flag can also be set by its `TOKEND_*`
/// environment variable.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve gRPC on.
    #[arg(long, env = "TOKEND_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// Serve TokenService (the admin plane) only on this address; --listen
    /// then serves VerifyService and health only.
    #[arg(long, env = "TOKEND_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Serve Prometheus metrics (`GET /metrics`) on this address; off by default.
    #[arg(long, env = "TOKEND_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Serve grpc.health.v1.Health alone on this address, always without
    /// TLS: for Kubernetes' gRPC probes, which cannot speak TLS.
    #[arg(long, env = "TOKEND_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Directory of the embedded sled store (created if missing). Accepted
    /// and unused with --store.
    #[arg(long, env = "TOKEND_DATA_DIR", default_value = "./tokend-data")]
    pub data_dir: PathBuf,

    /// A PostgreSQL store shared by several replicas, as a libpq URL
    /// (postgres://user:password@host:port/db?sslmode=…); without it, sled
    /// under --data-dir. The password is never logged.
    #[arg(long, env = "TOKEND_STORE", hide_env_values = true)]
    pub store: Option<String>,

    /// How long start-up waits for an unreachable database (--store).
    #[arg(long, env = "TOKEND_STORE_CONNECT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub store_connect_timeout: Duration,

    /// How long one database operation may take; past it a write fails
    /// with UNAVAILABLE (--store). Replicas of one database should agree.
    #[arg(long, env = "TOKEND_STORE_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub store_timeout: Duration,

    /// How often the change feed polls the database when no notification
    /// arrived (--store).
    #[arg(long, env = "TOKEND_FEED_POLL_INTERVAL", default_value = "1s", value_parser = parse_positive_duration)]
    pub feed_poll_interval: Duration,

    /// How long the change feed's outbox keeps rows; a replica away for
    /// longer reloads every token (--store).
    #[arg(long, env = "TOKEND_FEED_RETENTION", default_value = "24h", value_parser = parse_positive_duration)]
    pub feed_retention: Duration,

    /// Past this without confirming it is current with the database, a
    /// replica answers Verify with UNAVAILABLE and health NOT_SERVING
    /// (--store).
    #[arg(long, env = "TOKEND_MAX_STALENESS", default_value = "10s", value_parser = parse_positive_duration)]
    pub max_staleness: Duration,

    /// sled page cache in MiB. Verify never reads sled, so this stays small.
    #[arg(long, env = "TOKEND_STORE_CACHE_MB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub store_cache_mb: u64,

    /// Sync sled's log after every flush (and its directories when their
    /// names changed), so acknowledged writes survive power loss, not only a
    /// crash.
    #[arg(long, env = "TOKEND_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,

    /// Prefix of newly issued tokens (1-16 of [a-z0-9], starting with a
    /// letter). Tokens with an earlier prefix keep verifying.
    #[arg(long, env = "TOKEND_TOKEN_PREFIX", default_value = token::DEFAULT_PREFIX)]
    pub token_prefix: String,

    /// Most active tokens one owner may hold; 0 = unlimited.
    #[arg(long, env = "TOKEND_MAX_TOKENS_PER_OWNER", default_value_t = 0)]
    pub max_tokens_per_owner: u32,

    /// Longest lifetime of a token: an Issue with no ttl or a longer one is
    /// refused, and Rotate caps the new token's at it; 0 = no limit (e.g.
    /// 90d).
    #[arg(long, env = "TOKEND_MAX_TTL", default_value = "0", value_parser = parse_duration)]
    pub max_ttl: Duration,

    /// TTL of an Issue that gives none (or zero); 0 = such tokens never
    /// expire. At most --max-ttl.
    #[arg(long, env = "TOKEND_DEFAULT_TTL", default_value = "0", value_parser = parse_duration)]
    pub default_ttl: Duration,

    /// Also append every audit event to this file, one JSON line each
    /// (protobuf's JSON mapping of AuditEvent), for log shippers.
    #[arg(long, env = "TOKEND_AUDIT_LOG_FILE")]
    pub audit_log_file: Option<PathBuf>,

    /// How often last-used times are written to disk (e.g. 5s, 1m).
    #[arg(long, env = "TOKEND_LAST_USED_FLUSH_INTERVAL", default_value = "5s", value_parser = parse_positive_duration)]
    pub last_used_flush_interval: Duration,

    /// How long in-flight calls may take to finish after SIGTERM.
    #[arg(long, env = "TOKEND_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// File holding the first admin token, used only if none was ever
    /// created. Without it (and without TOKEND_BOOTSTRAP_TOKEN) one is
    /// generated and printed once to stderr.
    #[arg(long, env = "TOKEND_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,

    /// File holding 43 random base62 characters from which the first admin
    /// token is completed (`<prefix>_<seed><checksum>`; see `tokend token
    /// from-seed`). For deployment tools that cannot compute the checksum.
    #[arg(long, env = "TOKEND_BOOTSTRAP_TOKEN_SEED_FILE", conflicts_with = "bootstrap_token_file")]
    pub bootstrap_token_seed_file: Option<PathBuf>,

    /// The first admin token itself (environment only: a flag would show in
    /// `ps`).
    #[arg(skip)]
    pub bootstrap_token: Option<String>,

    /// Largest accepted request message, in bytes.
    #[arg(long, env = "TOKEND_MAX_REQUEST_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u32).range(1024..=4 * 1024 * 1024))]
    pub max_request_bytes: u32,

    /// PEM certificate chain: serve TLS (needs --tls-key).
    #[arg(long, env = "TOKEND_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "TOKEND_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate: require client certificates signed by it (mTLS).
    #[arg(long, env = "TOKEND_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// How long a new connection has to finish the TLS handshake, the HTTP/2
    /// preface and its first request's headers before it is closed.
    #[arg(long, env = "TOKEND_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub handshake_timeout: Duration,

    /// Most connections open at once on the gRPC ports (--listen and
    /// --admin-listen together); past it, new connections are closed at once.
    #[arg(long, env = "TOKEND_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// How long a connection may be quiet before it is sent an HTTP/2 ping;
    /// 0 turns keepalive off.
    #[arg(long, env = "TOKEND_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,

    /// How long a keepalive ping may go unanswered before the connection is
    /// dropped.
    #[arg(long, env = "TOKEND_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub keepalive_timeout: Duration,

    /// Most concurrent streams (calls) per connection, announced in HTTP/2
    /// SETTINGS.
    #[arg(long, env = "TOKEND_MAX_CONCURRENT_STREAMS", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// Largest request metadata (HTTP/2 header list: names, values and 32
    /// bytes per entry); a larger request is refused.
    #[arg(long, env = "TOKEND_MAX_HEADER_BYTES", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u32).range(1024..=1024 * 1024))]
    pub max_header_bytes: u32,

    /// Server-side deadline of every admin call (DEADLINE_EXCEEDED past it);
    /// a client's shorter grpc-timeout wins.
    #[arg(long, env = "TOKEND_ADMIN_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub admin_timeout: Duration,

    /// Most admin calls running at once; past it, RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "TOKEND_MAX_ADMIN_INFLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_admin_inflight: u32,

    /// How long new connections from a peer are refused (its SYNs dropped by
    /// a socket filter) after ten of its connections within 10 s were
    /// answered GOAWAY ENHANCE_YOUR_CALM (HTTP/2 floods such as rapid
    /// reset); 0 turns the cooldown off.
    #[arg(long, env = "TOKEND_ABUSE_COOLDOWN", default_value = "10s", value_parser = parse_duration)]
    pub abuse_cooldown: Duration,

    /// Longest silence on a Watch stream: with no changes, a heartbeat at
    /// least this often, so siblings' caches can bound their staleness.
    #[arg(long, env = "TOKEND_WATCH_HEARTBEAT", default_value = "1s", value_parser = parse_positive_duration)]
    pub watch_heartbeat: Duration,

    /// Log format.
    #[arg(long, env = "TOKEND_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl ServeArgs {
    /// Validates the flags into a server configuration. The error names the
    /// bad value (but never prints a token).
    pub fn into_config(self) -> Result<Config, String> {
        token::validate_prefix(&self.token_prefix).map_err(|_| {
            format!("--token-prefix {:?}: must be 1-16 of [a-z0-9], starting with a letter", self.token_prefix)
        })?;
        let bootstrap_token = match (&self.bootstrap_token_seed_file, &self.bootstrap_token_file, &self.bootstrap_token)
        {
            (Some(path), _, _) => {
                let seed = std::fs::read_to_string(path)
                    .map_err(|e| format!("--bootstrap-token-seed-file {}: {e}", path.display()))?;
                Some(Secret::from_body(&self.token_prefix, seed.trim()).map_err(|_| {
                    format!("--bootstrap-token-seed-file {}: must hold 43 characters of [A-Za-z0-9]", path.display())
                })?)
            }
            (None, Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--bootstrap-token-file {}: {e}", path.display()))?;
                Some(
                    Secret::from_text(text.trim()).map_err(|e| {
                        format!("--bootstrap-token-file {}: not a well-formed token ({e})", path.display())
                    })?,
                )
            }
            (None, None, Some(text)) => Some(
                Secret::from_text(text.trim())
                    .map_err(|e| format!("TOKEND_BOOTSTRAP_TOKEN: not a well-formed token ({e})"))?,
            ),
            (None, None, None) => None,
        };
        let postgres = match self.store {
            None => None,
            Some(url) => {
                // Checked now, before anything is bound; the message never
                // repeats the URL, which may hold a password.
                Target::parse(&url).map_err(|e| format!("--store: {e}"))?;
                if self.max_staleness <= self.feed_poll_interval {
                    return Err(format!(
                        "--max-staleness {:?} must be longer than --feed-poll-interval {:?}",
                        self.max_staleness, self.feed_poll_interval
                    ));
                }
                Some(PostgresOptions {
                    url,
                    connect_timeout: self.store_connect_timeout,
                    timeout: self.store_timeout,
                    feed_poll_interval: self.feed_poll_interval,
                    feed_retention: self.feed_retention,
                    max_staleness: self.max_staleness,
                })
            }
        };
        let mut config = Config::new(self.data_dir);
        config.postgres = postgres;
        config.store_cache_bytes = self.store_cache_mb << 20;
        config.fsync = self.fsync;
        config.token_prefix = self.token_prefix;
        config.max_tokens_per_owner = self.max_tokens_per_owner;
        config.ttl_policy = TtlPolicy::new(self.max_ttl, self.default_ttl)?;
        config.last_used_flush_interval = self.last_used_flush_interval;
        config.audit_log_file = self.audit_log_file;
        config.shutdown_grace = self.shutdown_grace;
        config.bootstrap_token = bootstrap_token;
        config.max_request_bytes = self.max_request_bytes as usize;
        config.tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key, client_ca: self.tls_client_ca }),
            _ => None,
        };
        config.watch_heartbeat = self.watch_heartbeat;
        config.limits = Limits {
            handshake_timeout: self.handshake_timeout,
            max_connections: self.max_connections as usize,
            keepalive_interval: (!self.keepalive_interval.is_zero()).then_some(self.keepalive_interval),
            keepalive_timeout: self.keepalive_timeout,
            max_concurrent_streams: self.max_concurrent_streams,
            max_header_bytes: self.max_header_bytes,
            admin_timeout: self.admin_timeout,
            max_admin_inflight: self.max_admin_inflight as usize,
            abuse_cooldown: self.abuse_cooldown,
        };
        Ok(config)
    }
}

/// Parses a human duration: `0`, `500ms`, `30s`, `15m`, `12h`, `30d`, or a
/// sum such as `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("invalid duration {s:?} (examples: 0, 500ms, 30s, 15m, 12h, 30d, 1h30m)");
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = unit.checked_mul(u32::try_from(n).map_err(|_| bad())?).ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?} must be greater than zero")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "5", "h", "5x", "-5s", "1.5h", "s5", "99999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_positive_duration("0").is_err());
    }
}
