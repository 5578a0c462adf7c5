//! [`CachedVerifier`]: Verify answered in memory, current by tokend's push.

use std::{
    error::Error as _,
    sync::{Arc, LazyLock},
    time::Duration,
};

use tokio::task::AbortHandle;
use tonic::{
    Status,
    transport::{Channel, Endpoint},
};

use crate::{
    Error,
    cache::Cache,
    format::{self, TokenHash},
    pb::{VerifyRequest, VerifyResponse, VerifyResult, verify_service_client::VerifyServiceClient},
    usage::Usage,
    watch,
};

/// How a [`CachedVerifier`] caches and talks to tokend.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Most answers cached (one per token); the least useful go first.
    pub capacity: usize,
    /// The longest the cache answers without a message from tokend's watch
    /// stream. Past it, every call goes to the Verify RPC, so a revocation
    /// can never be missed for longer than this, even if the stream breaks
    /// unnoticed. tokend sends a heartbeat every `--watch-heartbeat` (1 s by
    /// default); keep this a few heartbeats longer.
    pub max_staleness: Duration,
    /// Deadline of each Verify and RecordUse call; past it a call fails with
    /// DEADLINE_EXCEEDED.
    pub rpc_timeout: Duration,
    /// How long `connect` waits for the TCP (and TLS) connection, and then
    /// for the watch stream's first message.
    pub connect_timeout: Duration,
    /// How often cached uses are reported to tokend (`RecordUse`), at most
    /// once per token per interval; zero: never (last_used_time then shows
    /// only the uses that missed the cache).
    pub record_use_interval: Duration,
}

impl Default for CacheOptions {
    fn default() -> CacheOptions {
        CacheOptions {
            capacity: 100_000,
            max_staleness: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            record_use_interval: Duration::from_secs(5),
        }
    }
}

/// What the cache has done so far.
#[derive(Debug, Clone, Default)]
pub struct CacheStats {
    /// Calls answered from the cache (a valid token, or one lacking a scope).
    pub hits: u64,
    /// Calls answered by the Verify RPC: not cached, or the cache was stale.
    pub misses: u64,
    /// Changes pushed by tokend and applied: each drops its token's cached
    /// answer, if any, and any answer for it still in flight.
    pub invalidations: u64,
    /// Times tokend could not resume the stream and everything cached was
    /// dropped (the first message of a new stream counts one).
    pub resets: u64,
    /// How long ago tokend was last heard from; `None`: never. Above
    /// `max_staleness`, the cache is bypassed.
    pub staleness: Option<Duration>,
}

/// Verifies tokens like `VerifyServiceClient::verify`, answering repeat
/// valid tokens from memory. tokend pushes every change that could make a
/// cached answer wrong through its `Watch` stream; without word from it for
/// `max_staleness`, every call goes to the RPC. Cheap to clone (one shared
/// cache); the background tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct CachedVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Arc<Cache>,
    usage: Arc<Usage>,
    client: VerifyServiceClient<Channel>,
    rpc_timeout: Duration,
    /// The watch and report tasks, stopped with the last clone.
    tasks: [AbortHandle; 2],
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What the cache can say without tokend.
pub(crate) enum Local {
    /// The answer.
    Answer(Arc<VerifyResponse>),
    /// Ask tokend; cache a valid answer under this hash if there is one.
    Miss(Option<TokenHash>),
}

/// The one answer for every malformed token, shared.
static MALFORMED: LazyLock<Arc<VerifyResponse>> =
    LazyLock::new(|| Arc::new(VerifyResponse { result: VerifyResult::Malformed.into(), ..Default::default() }));

impl CachedVerifier {
    /// Connects to tokend at `endpoint` (`http://host:port`) with the
    /// default [`CacheOptions`].
    pub async fn connect(endpoint: &str) -> Result<CachedVerifier, Error> {
        CachedVerifier::connect_with(endpoint, CacheOptions::default()).await
    }

    /// Connects to tokend at `endpoint` (`http://host:port`), then waits up
    /// to `connect_timeout` for the watch stream to start.
    pub async fn connect_with(endpoint: &str, options: CacheOptions) -> Result<CachedVerifier, Error> {
        let fail = |source| Error::Endpoint { endpoint: endpoint.to_owned(), source };
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(fail)?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            // A dead connection is found and replaced within seconds even
            // when nothing is being verified.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect()
            .await
            .map_err(|source| Error::Connect { endpoint: endpoint.to_owned(), source })?;
        Ok(CachedVerifier::with_channel(channel, options).await)
    }

    /// A verifier over a channel made by the caller (TLS, a balanced
    /// channel, …); waits up to `connect_timeout` for the watch stream to
    /// start. Must be called within a tokio runtime.
    pub async fn with_channel(channel: Channel, options: CacheOptions) -> CachedVerifier {
        let client = VerifyServiceClient::new(channel);
        let cache = Arc::new(Cache::new(options.capacity, options.max_staleness));
        let usage = Arc::new(Usage::new(options.record_use_interval, options.capacity));
        let (started, first) = tokio::sync::oneshot::channel();
        let watcher = tokio::spawn(watch::follow(cache.clone(), client.clone(), options.max_staleness, started));
        let reporter = tokio::spawn(usage.clone().report(client.clone(), options.rpc_timeout));
        let inner = Inner {
            cache,
            usage,
            client,
            rpc_timeout: options.rpc_timeout,
            tasks: [watcher.abort_handle(), reporter.abort_handle()],
        };
        // Until then, calls go to the RPC: correct, just not yet cached.
        if tokio::time::timeout(options.connect_timeout, first).await.is_err() {
            tracing::warn!("tokend's watch stream has not started; verifying through the RPC until it does");
        }
        CachedVerifier { inner: Arc::new(inner) }
    }

    /// Drop-in for the generated stub's `verify`: the same answer the RPC
    /// would give now.
    pub async fn verify(&self, request: VerifyRequest) -> Result<VerifyResponse, Status> {
        match self.inner.local(&request.token, &request.required_scopes)? {
            Local::Answer(answer) => Ok(VerifyResponse::clone(&answer)),
            Local::Miss(hash) => Box::pin(self.inner.remote(request, hash)).await.map(Arc::unwrap_or_clone),
        }
    }

    /// The allocation-free path: on a cache hit for a valid token it
    /// returns a shared response without allocating (what the tower layer
    /// uses). `presented` is a bare token or an `authorization` header
    /// value (`Bearer …`, `access_token …`).
    pub async fn check(&self, presented: &str, required_scopes: &[&str]) -> Result<Arc<VerifyResponse>, Status> {
        self.check_any(presented, required_scopes).await
    }

    /// [`check`](Self::check) for any kind of scope list.
    pub(crate) async fn check_any<S: AsRef<str>>(
        &self,
        presented: &str,
        required_scopes: &[S],
    ) -> Result<Arc<VerifyResponse>, Status> {
        match self.inner.local(presented, required_scopes)? {
            Local::Answer(answer) => Ok(answer),
            Local::Miss(hash) => {
                let request = VerifyRequest {
                    token: presented.to_owned(),
                    required_scopes: required_scopes.iter().map(|s| s.as_ref().to_owned()).collect(),
                    ..Default::default()
                };
                // Boxed: the RPC's future is kilobytes, and a hit should not
                // pay for moving it around.
                Box::pin(self.inner.remote(request, hash)).await
            }
        }
    }

    /// What the cache has done so far.
    pub fn stats(&self) -> CacheStats {
        let (hits, misses, invalidations, resets) = self.inner.cache.counters();
        CacheStats { hits, misses, invalidations, resets, staleness: self.inner.cache.staleness() }
    }
}

impl Inner {
    /// The answer from memory, if the cache may give one.
    #[inline]
    fn local<S: AsRef<str>>(&self, presented: &str, required: &[S]) -> Result<Local, Status> {
        format::check_required_scopes(required)?;
        let now = self.cache.now();
        if !self.cache.is_fresh(now) {
            return Ok(Local::Miss(None));
        }
        let Ok(token) = format::parse(presented) else {
            return Ok(Local::Answer(MALFORMED.clone()));
        };
        let hash = format::hash(token);
        let Some(entry) = self.cache.get(&hash, now) else {
            return Ok(Local::Miss(Some(hash)));
        };
        if !entry.grants(required) {
            return Ok(Local::Answer(entry.insufficient.clone()));
        }
        self.usage.note(hash, &entry, now);
        Ok(Local::Answer(entry.valid.clone()))
    }

    /// Asks tokend, and caches a valid answer under `hash` when there is
    /// one and nothing changed meanwhile.
    async fn remote(&self, request: VerifyRequest, hash: Option<TokenHash>) -> Result<Arc<VerifyResponse>, Status> {
        self.cache.count_miss();
        // Only answers given without a client address are cached. A token
        // with an IP allowlist never verifies without one, so every cached
        // token is valid from anywhere, and a hit answers any address right;
        // an answer for one address may not hold for another.
        let hash = hash.filter(|_| request.client_ip.is_empty());
        // Taken before the call: see `cache` on the race this closes.
        let since = hash.map(|_| self.cache.position());
        let response = self.call(request).await?;
        Ok(match (since, hash) {
            (Some(since), Some(hash)) if response.valid => self.cache.admit(since, hash, response),
            _ => Arc::new(response),
        })
    }

    /// Verify over the channel, within `rpc_timeout`. A call that meets a
    /// connection the transport has just lost (tokend restarted, a proxy
    /// closed it) is sent once more, on the channel's next connection; a
    /// transport failure is UNAVAILABLE, as with an unreachable tokend.
    async fn call(&self, request: VerifyRequest) -> Result<VerifyResponse, Status> {
        let deadline = tokio::time::Instant::now() + self.rpc_timeout;
        let mut retried = false;
        loop {
            let mut client = self.client.clone();
            let status = match tokio::time::timeout_at(deadline, client.verify(request.clone())).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => {
                    return Err(Status::deadline_exceeded(format!(
                        "tokend did not answer Verify within {:?}",
                        self.rpc_timeout
                    )));
                }
            };
            match status.source().and_then(|s| s.downcast_ref::<tonic::transport::Error>()) {
                Some(_) if !retried => retried = true,
                Some(transport) => {
                    return Err(Status::unavailable(format!(
                        "tokend is unreachable: {}",
                        crate::error::chain(transport)
                    )));
                }
                None => return Err(status),
            }
        }
    }
}
