//! Wiring: open the store, load the index, bootstrap, serve gRPC, shut down.
//!
//! [`Tokend::open`] does everything that can fail before a port is served;
//! [`Tokend::serve`] runs until `shutdown` resolves, then: health goes
//! NOT_SERVING, the listener closes, in-flight calls drain (bounded by
//! [`Config::shutdown_grace`]), last-used times and the store are flushed.

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use tokio::net::TcpListener;

use crate::{
    auth::AdminAuth,
    clock::Clock,
    conn::{self, Gate, Incoming, Protocol, abuse::Cooldown, tls::TlsError},
    feed::Freshness,
    health::{Health, SERVICES},
    index::Index,
    last_used::LastUsedWriter,
    limits::Limits,
    metrics::Metrics,
    pb::token_service_server::TokenServiceServer,
    registry::{Created, Registry, RegistryOptions},
    service::{
        admin::AdminService,
        admission::Admission,
        verify::{VerifyApi, VerifyRoutes},
        watch::Watchers,
    },
    spec::TtlPolicy,
    store::{PostgresOptions, PostgresStore, SledOptions, SledStore, Store, StoreError, postgres::PostgresFeed},
    token::{self, Secret},
    verify::Verifier,
};

/// Everything `serve` needs to know. Built from the command line by
/// `config::ServeArgs`, or directly by tests and benchmarks.
#[derive(Debug, Clone)]
pub struct Config {
    /// sled's directory (unused with a PostgreSQL store).
    pub data_dir: PathBuf,
    /// A PostgreSQL store instead of sled (`--store`).
    pub postgres: Option<PostgresOptions>,
    /// sled's page cache, in bytes.
    pub store_cache_bytes: u64,
    /// fsync after each flush (see `store::SledOptions::fsync`).
    pub fsync: bool,
    /// Prefix of new tokens.
    pub token_prefix: String,
    /// Most active tokens per owner; 0 = unlimited.
    pub max_tokens_per_owner: u32,
    /// `--max-ttl` and `--default-ttl`.
    pub ttl_policy: TtlPolicy,
    /// How often last-used times are persisted.
    pub last_used_flush_interval: Duration,
    /// How long in-flight calls may take to finish at shutdown.
    pub shutdown_grace: Duration,
    /// The first admin token, if the operator supplies it.
    pub bootstrap_token: Option<Secret>,
    /// Largest accepted request message, in bytes.
    pub max_request_bytes: usize,
    /// Source of "now" (manual in tests).
    pub clock: Clock,
    /// Serve TLS (and, with a client CA, require client certificates).
    pub tls: Option<TlsFiles>,
    /// Longest silence on a Watch stream: a heartbeat at least this often.
    pub watch_heartbeat: Duration,
    /// Connection, stream, deadline and admission limits.
    pub limits: Limits,
    /// `--audit-log-file`: also append each audit event here, as JSON.
    pub audit_log_file: Option<PathBuf>,
}

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// CA whose certificates clients must present (mTLS); `None` = no client
    /// certificates.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Reads the files into a TLS acceptor, naming the file that could not
    /// be read or used.
    fn load(&self) -> Result<tokio_rustls::TlsAcceptor, StartError> {
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| StartError::Config(format!("{flag} {}: {e}", path.display())))
        };
        let (cert, key) = (read("--tls-cert", &self.cert)?, read("--tls-key", &self.key)?);
        let client_ca = self.client_ca.as_ref().map(|ca| read("--tls-client-ca", ca)).transpose()?;
        conn::tls::acceptor(&cert, &key, client_ca.as_deref()).map_err(|e| {
            let file = match &e {
                TlsError::Certificate(_) => format!("--tls-cert {}", self.cert.display()),
                TlsError::Key(_) => format!("--tls-key {}", self.key.display()),
                TlsError::ClientCa(_) => format!(
                    "--tls-client-ca {}",
                    self.client_ca.as_ref().map_or_else(String::new, |p| p.display().to_string())
                ),
                TlsError::Config(_) => format!("--tls-cert {} / --tls-key {}", self.cert.display(), self.key.display()),
            };
            StartError::Config(format!("{file}: {e}"))
        })
    }
}

impl Config {
    /// Defaults, with the store in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            postgres: None,
            store_cache_bytes: 16 << 20,
            fsync: true,
            token_prefix: token::DEFAULT_PREFIX.into(),
            max_tokens_per_owner: 0,
            ttl_policy: TtlPolicy::default(),
            last_used_flush_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            bootstrap_token: None,
            max_request_bytes: 64 << 10,
            clock: Clock::System,
            tls: None,
            watch_heartbeat: Duration::from_secs(1),
            limits: Limits::default(),
            audit_log_file: None,
        }
    }
}

/// Why tokend could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record could not be decoded.
    #[error("cannot open the token store at {store}: corrupt token record under key {key}: {message}")]
    Corrupt { store: String, key: String, message: String },
    /// The first admin token could not be created.
    #[error("cannot create the bootstrap admin token: {0}")]
    Bootstrap(#[from] crate::error::Error),
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be built from the descriptor set.
    #[error("cannot build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The final flush failed.
    #[error("final flush failed: {0}")]
    Flush(#[from] StoreError),
    /// A background thread could not be started.
    #[error("cannot start a background thread: {0}")]
    Thread(String),
}

/// An opened tokend, ready to serve.
pub struct Tokend {
    config: Config,
    tls: Option<tokio_rustls::TlsAcceptor>,
    registry: Arc<Registry>,
    verifier: Arc<Verifier>,
    metrics: Arc<Metrics>,
    bootstrap: Option<Created>,
    feed: Option<Feed>,
    health: Health,
}

/// Where [`Tokend::serve_on`] serves.
pub struct Listeners {
    /// gRPC: VerifyService and health, and TokenService unless `admin` is set.
    pub grpc: TcpListener,
    /// TokenService only (plus health and reflection), so a network policy
    /// can fence the admin plane.
    pub admin: Option<TcpListener>,
    /// Prometheus metrics over HTTP (`GET /metrics`).
    pub metrics: Option<TcpListener>,
    /// `grpc.health.v1.Health` only, always plaintext: for Kubernetes'
    /// native gRPC probes, which cannot speak TLS, so readiness keeps
    /// following the staleness watchdog with TLS on.
    pub health: Option<TcpListener>,
}

impl Tokend {
    /// Opens the store, loads the index and creates the first admin token if
    /// none was ever created.
    pub async fn open(config: Config) -> Result<Tokend, StartError> {
        Self::open_reporting(config, Health::starting().await).await
    }

    /// [`Tokend::open`], reporting through `health`, which may already be
    /// served (NOT_SERVING) while the store opens; serving turns it SERVING.
    pub async fn open_reporting(config: Config, health: Health) -> Result<Tokend, StartError> {
        token::validate_prefix(&config.token_prefix).map_err(|_| {
            StartError::Config(format!(
                "token prefix {:?} must be 1-16 of [a-z0-9], starting with a letter",
                config.token_prefix
            ))
        })?;
        let tls = config.tls.as_ref().map(TlsFiles::load).transpose()?;
        let audit_log = match &config.audit_log_file {
            Some(path) => Some(Arc::new(
                crate::audit::LogFile::open(path)
                    .map_err(|e| StartError::Config(format!("--audit-log-file {}: {e}", path.display())))?,
            )),
            None => None,
        };
        let Opened { store, bootstrapped, index, feed } = open_store(&config).await?;
        let metrics = Arc::new(Metrics::new());
        let flush_metrics = metrics.clone();
        let registry = Arc::new(Registry::new(
            store,
            index.clone(),
            config.clock.clone(),
            RegistryOptions {
                token_prefix: config.token_prefix.clone(),
                max_tokens_per_owner: config.max_tokens_per_owner,
                ttl_policy: config.ttl_policy,
                audit_log,
            },
            Box::new(move |elapsed| flush_metrics.flush(elapsed)),
        ));
        let bootstrap = registry.bootstrap(bootstrapped, config.bootstrap_token.clone()).await?;
        if !bootstrapped {
            tracing::info!(generated = bootstrap.is_some(), "bootstrap admin token created");
        }
        let verifier = Arc::new(match &feed {
            Some(feed) => Verifier::with_freshness(index, config.clock.clone(), feed.freshness.clone()),
            None => Verifier::new(index, config.clock.clone()),
        });
        if let Some(feed) = &feed {
            metrics.watch_feed(feed.freshness.clone());
        }
        Ok(Tokend { config, tls, registry, verifier, metrics, bootstrap, feed, health })
    }

    /// The admin token generated at bootstrap, if this start generated one.
    /// It is handed out once: later calls return `None`.
    pub fn take_bootstrap_secret(&mut self) -> Option<Secret> {
        self.bootstrap.take().map(|c| c.secret)
    }

    /// The registry (for tests and benchmarks that fill the store directly).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The verifier (for benchmarks of the hot path).
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// Serves every service on `listener` until `shutdown` resolves, then
    /// shuts down gracefully.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        self.serve_on(Listeners { grpc: listener, admin: None, metrics: None, health: None }, shutdown).await
    }

    /// Like [`Tokend::serve`], on every listener in `listeners`.
    pub async fn serve_on(self, listeners: Listeners, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let Tokend { config, tls, registry, verifier, metrics, feed, health, .. } = self;
        let Listeners { grpc: listener, admin: admin_listener, metrics: metrics_listener, health: health_listener } =
            listeners;
        let health_service = health.service();
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        // grpcurl 1.8 speaks only v1alpha reflection.
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let limits = &config.limits;
        let admin = Admission::new(
            TokenServiceServer::new(AdminService::new(
                registry.clone(),
                AdminAuth::new(verifier.clone()),
                metrics.clone(),
            ))
            .max_decoding_message_size(config.max_request_bytes),
            limits.max_admin_inflight,
            limits.admin_timeout,
            metrics.clone(),
        );
        // One budget for both gRPC ports: it guards the process's descriptors.
        let (open, refused) = metrics.connections();
        let gate = Gate::new("gRPC", limits.max_connections, open, refused);
        let (abusive, cooled) = metrics.abuse();
        let http2 = Protocol::Http2 { cooldown: Arc::new(Cooldown::new(limits.abuse_cooldown, abusive, cooled)) };
        // Turns true at shutdown: listeners stop, Watch streams end.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let watchers = Watchers::new(verifier.clone(), config.watch_heartbeat, stop_rx.clone());
        let verify = VerifyRoutes::new(VerifyApi::new(verifier, metrics.clone(), watchers), config.max_request_bytes);
        let metrics_task = metrics_listener.map(|l| {
            tracing::info!(addr = %l.local_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string()), "serving metrics");
            let incoming = Incoming::new(l, Gate::side_port("metrics"), limits.handshake_timeout, Protocol::Http1);
            tokio::spawn(crate::metrics::serve(incoming, metrics, registry.index().clone(), config.clock.clone()))
        });

        health.set(&SERVICES, tonic_health::ServingStatus::Serving).await;
        // The feed keeps the index current until the very end (calls still
        // draining must see revocations); the watchdog only until shutdown
        // starts, so it cannot turn health back to SERVING during the drain.
        let (feed_task, watchdog_task) = match feed {
            Some(Feed { source, freshness, poll_interval }) => {
                let index = registry.index().clone();
                let feed = tokio::spawn(crate::feed::run(source, index, freshness.clone(), poll_interval));
                (Some(feed), Some(tokio::spawn(watchdog(freshness, health.clone()))))
            }
            None => (None, None),
        };

        let persister = LastUsedWriter::start(registry.clone(), config.last_used_flush_interval)
            .map_err(|e| ServeError::Thread(e.to_string()))?;
        let oversize = oversize_is_invalid_argument(config.max_request_bytes);
        let router = |with_admin: bool, with_verify: bool| -> Result<_, ServeError> {
            // TLS is terminated in `conn`, below the server.
            Ok(limits
                .server()
                .layer(tower::util::MapResponseLayer::new(oversize.clone()))
                .add_service(health_service.clone())
                .add_service(reflection_v1.clone())
                .add_service(reflection_v1alpha.clone())
                .add_optional_service(with_admin.then(|| admin.clone()))
                .add_optional_service(with_verify.then(|| verify.clone())))
        };
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let addr = |l: &TcpListener| l.local_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string());
        tracing::info!(addr = %addr(&listener), tls = config.tls.is_some(), admin = admin_listener.is_none(), "serving");
        let main = router(admin_listener.is_none(), true)?.serve_with_incoming_shutdown(
            Incoming::new(listener, gate.clone(), limits.handshake_timeout, http2.clone()).with_tls(tls.clone()),
            stopped(stop_rx.clone()),
        );
        let admin_plane = match admin_listener {
            Some(l) => {
                tracing::info!(addr = %addr(&l), "serving the admin plane");
                let incoming = Incoming::new(l, gate, limits.handshake_timeout, http2).with_tls(tls);
                Some(router(true, false)?.serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())))
            }
            None => None,
        };
        let health_only = health_listener.map(|l| {
            tracing::info!(addr = %addr(&l), "serving health checks (plaintext)");
            health.serve_alone(l, limits, stopped(stop_rx))
        });
        let server = async move { tokio::try_join!(main, optional(admin_plane), optional(health_only)).map(|_| ()) };
        tokio::pin!(server);

        let served = tokio::select! {
            result = &mut server => result,
            () = shutdown => {
                tracing::info!("shutting down: draining in-flight calls");
                if let Some(task) = &watchdog_task {
                    task.abort();
                }
                health.set(&SERVICES, tonic_health::ServingStatus::NotServing).await;
                let _ = stop_tx.send(true);
                match tokio::time::timeout(config.shutdown_grace, &mut server).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(grace = ?config.shutdown_grace, "shutdown grace expired; dropping remaining calls");
                        Ok(())
                    }
                }
            }
        };
        if let Some(task) = metrics_task {
            task.abort();
        }
        for task in [feed_task, watchdog_task].into_iter().flatten() {
            task.abort();
        }
        let closed = tokio::task::spawn_blocking(move || {
            persister.stop();
            registry.close()
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Io(format!("close task failed: {e}"))));
        served?;
        closed?;
        tracing::info!("shut down cleanly");
        Ok(())
    }
}

/// A shared store's change feed, ready to run, and how current it is.
struct Feed {
    source: PostgresFeed,
    freshness: Arc<Freshness>,
    poll_interval: Duration,
}

/// What [`open_store`] opened.
struct Opened {
    store: Arc<dyn Store>,
    bootstrapped: bool,
    index: Arc<Index>,
    feed: Option<Feed>,
}

/// Serves `server` if there is one.
async fn optional<E>(server: Option<impl Future<Output = Result<(), E>>>) -> Result<(), E> {
    match server {
        Some(server) => server.await,
        None => Ok(()),
    }
}

/// Opens the configured store and loads the index from it.
async fn open_store(config: &Config) -> Result<Opened, StartError> {
    let mut feed = None;
    let (store, described): (Arc<dyn Store>, String) = match &config.postgres {
        Some(options) => {
            let store = PostgresStore::connect(options).await?;
            let described = store.target().to_owned();
            // Before the load: the feed starts far enough back to read again
            // whatever commits while the load runs.
            let source = store.feed(options.feed()).await?;
            let freshness = Arc::new(Freshness::new(options.max_staleness));
            feed = Some(Feed { source, freshness, poll_interval: options.feed_poll_interval });
            (Arc::new(store), described)
        }
        None => {
            let (dir, options) =
                (config.data_dir.clone(), SledOptions { cache_bytes: config.store_cache_bytes, fsync: config.fsync });
            // sled is blocking: open it off the async workers.
            let store = tokio::task::spawn_blocking(move || SledStore::open(&dir, &options))
                .await
                .map_err(|e| StartError::Config(format!("start-up task failed: {e}")))??;
            (Arc::new(store), config.data_dir.display().to_string())
        }
    };
    let loading = store.clone();
    let (bootstrapped, index) = tokio::task::spawn_blocking(move || crate::load::index_from(&loading))
        .await
        .map_err(|e| StartError::Config(format!("start-up task failed: {e}")))?
        .map_err(|e| match e {
            StoreError::Corrupt { key, message } => StartError::Corrupt { store: described.clone(), key, message },
            other => StartError::Store(other),
        })?;
    tracing::info!(tokens = index.len(), store = %described, "token store loaded");
    if let Some(feed) = &feed {
        feed.freshness.confirm();
    }
    Ok(Opened { store, bootstrapped, index: Arc::new(index), feed })
}

/// Takes the replica out of service while its feed is stale, and back.
async fn watchdog(freshness: Arc<Freshness>, health: Health) {
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    loop {
        ticks.tick().await;
        let status = match freshness.check() {
            None => continue,
            Some(true) => {
                tracing::warn!(
                    staleness = ?freshness.staleness(), max = ?freshness.max_staleness(),
                    "replica is stale: Verify answers UNAVAILABLE and health NOT_SERVING until the feed reads again"
                );
                tonic_health::ServingStatus::NotServing
            }
            Some(false) => {
                tracing::info!("replica is current again: serving");
                tonic_health::ServingStatus::Serving
            }
        };
        health.set(&["", "tokend.v1.VerifyService"], status).await;
    }
}

/// tonic refuses a request over `--max-request-bytes` with OUT_OF_RANGE
/// before any handler runs; tokend's contract answers bad input with
/// INVALID_ARGUMENT. tokend's own handlers never answer OUT_OF_RANGE, so
/// every such answer is that refusal, and is rewritten (trailers-only
/// responses carry the status in their headers).
fn oversize_is_invalid_argument(
    limit: usize,
) -> impl Fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> + Clone {
    // grpc-message is percent-encoded.
    let message = format!("request%20message%20is%20larger%20than%20{limit}%20bytes%20(--max-request-bytes)");
    let message = http::HeaderValue::from_str(&message).expect("ASCII header value");
    move |mut response| {
        let headers = response.headers_mut();
        if headers.get("grpc-status").is_some_and(|v| v == "11") {
            headers.insert("grpc-status", http::HeaderValue::from_static("3"));
            headers.insert("grpc-message", message.clone());
        }
        response
    }
}
