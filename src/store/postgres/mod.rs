//! The PostgreSQL store (`--store postgres://…`), for several replicas
//! sharing one token set.
//!
//! It implements the same small [`Store`] trait as sled, so the registry and
//! the index do not know which backend they run on. The trait is blocking
//! (the registry calls it from the blocking pool and its own threads), so
//! each method runs its queries on the runtime through a [`Handle`], bounded
//! by `--store-timeout`: a database that does not answer makes a write fail
//! with UNAVAILABLE, never hang, and never answer a false OK. [`Store::apply`]
//! commits, so an acknowledged write is a committed one and
//! [`Store::flush`] has nothing left to do.
//!
//! Tables (see `migrations`): `tokend_tokens` (id → record, encoded as sled
//! stores it, with the owner, version, expiry and revocation beside it for
//! the checks made in SQL, and the last-used time, which only ever moves
//! forward), `tokend_changes` (the change feed's outbox) and the sequence
//! `tokend_last_used_batches` (see `feed`), `tokend_meta` (the bootstrap
//! flag), `tokend_audit_pending` (events written, not yet chained),
//! `tokend_audit` and `tokend_audit_head` (the chain and its end) and
//! `tokend_schema_migrations`.

mod feed;
mod migrations;
mod target;

use std::{future::Future, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;
use tokio_stream::StreamExt as _;

pub use self::{
    feed::{FeedOptions, PostgresFeed},
    target::Target,
};
use super::{
    Decoder, OwnerQuota, SEAL_BATCH, Store, StoreError,
    codec::{decode, encode},
};
use crate::{audit, change::Change, clock::Time, id::TokenId, record::TokenRecord};

/// Settings of [`PostgresStore`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The `postgres://` URL (it may hold a password: never log it).
    pub url: String,
    /// How long start-up waits for an unreachable database.
    pub connect_timeout: Duration,
    /// How long one store operation may take before it fails as UNAVAILABLE.
    pub timeout: Duration,
    /// How often the change feed polls when no notification came.
    pub feed_poll_interval: Duration,
    /// How long outbox rows are kept.
    pub feed_retention: Duration,
    /// Past this without a successful feed read, the replica is stale.
    pub max_staleness: Duration,
}

impl PostgresOptions {
    /// Defaults for `url`, as the flags have them.
    pub fn new(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            connect_timeout: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            feed_poll_interval: Duration::from_secs(1),
            feed_retention: Duration::from_secs(24 * 3600),
            max_staleness: Duration::from_secs(10),
        }
    }

    /// The feed's settings: a number stays a gap for two store timeouts
    /// (the longest a tokend transaction may stay open) and a second more.
    pub fn feed(&self) -> FeedOptions {
        FeedOptions { settle: self.timeout * 2 + Duration::from_secs(1), retention: self.feed_retention }
    }
}

/// Connections per replica: concurrent writers each hold one for their
/// transaction (PostgreSQL shares commit flushes among them), besides the
/// feed and the last-used thread. Three replicas use 48 of PostgreSQL's
/// default 100.
const POOL_SIZE: usize = 16;

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    /// For the feed's listening connection, which is not pooled.
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    runtime: Handle,
    timeout: Duration,
    /// The database, as logs and errors name it (no password).
    target: String,
    /// Rings [`doorbell`] after each commit.
    ring: tokio::sync::mpsc::Sender<()>,
}

impl PostgresStore {
    /// Connects, waiting with backoff for up to `connect_timeout` while the
    /// database is unreachable, and brings the schema up to date. Errors
    /// the database answers with (a wrong password, a missing database, a
    /// schema newer than this binary) are final at once.
    pub async fn connect(options: &PostgresOptions) -> Result<PostgresStore, StoreError> {
        let Target { mut config, tls } =
            Target::parse(&options.url).map_err(|message| StoreError::Connect { target: "--store".into(), message })?;
        let target = target::describe(&config);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.timeout);
        }
        // The server aborts a transaction left idle (a client that stopped
        // mid-write) and a lock waited on past --store-timeout: the feed
        // relies on no tokend transaction outliving its settle window.
        let millis = options.timeout.as_millis();
        let settings = format!("-c idle_in_transaction_session_timeout={millis} -c lock_timeout={millis}");
        let settings = match config.get_options() {
            Some(given) => format!("{given} {settings}"),
            None => settings,
        };
        config.options(&settings);
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.timeout))
            .recycle_timeout(Some(options.timeout))
            .build()
            .map_err(|e| StoreError::Connect { target: target.clone(), message: e.to_string() })?;
        // One ring waiting at most: a commit while a ring is pending is
        // announced by it (the ring goes out after the commit's answer).
        let (ring, rung) = tokio::sync::mpsc::channel(1);
        tokio::spawn(doorbell(pool.clone(), rung));
        let store =
            PostgresStore { pool, config, tls, runtime: Handle::current(), timeout: options.timeout, target, ring };
        store.wait_and_migrate(options.connect_timeout).await?;
        Ok(store)
    }

    async fn wait_and_migrate(&self, connect_timeout: Duration) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + connect_timeout;
        let mut delay = Duration::from_millis(100);
        loop {
            let error = match self.pool.get().await {
                Ok(mut client) => {
                    return match migrations::run(&mut client).await {
                        Ok(found) => {
                            tracing::info!(store = %self.target, schema = migrations::LATEST, was = found, "database ready");
                            Ok(())
                        }
                        Err(e) => Err(self.connect_error(e.to_string())),
                    };
                }
                Err(e) => e,
            };
            if !is_transient(&error) {
                return Err(self.connect_error(describe_pool_error(&error)));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(self.connect_error(format!(
                    "not reachable within --store-connect-timeout ({connect_timeout:?}): {}",
                    describe_pool_error(&error)
                )));
            }
            tracing::warn!(store = %self.target, error = %describe_pool_error(&error), retry_in = ?delay, "database not reachable; waiting");
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Writes `records` with one bulk `COPY` and marks the store
    /// bootstrapped (benchmarks: a million tokens in seconds). For an empty
    /// database only; no outbox rows are written, so running replicas do
    /// not see these records until they restart.
    pub async fn copy_in(&self, records: &[TokenRecord]) -> Result<(), StoreError> {
        use tokio_postgres::{binary_copy::BinaryCopyInWriter, types::Type};
        let mut client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
        let tx = client.transaction().await.map_err(|e| self.pg(e))?;
        let sink = tx
            .copy_in("COPY tokend_tokens (id, owner, version, expire_time, revoke_time, record) FROM STDIN BINARY")
            .await
            .map_err(|e| self.pg(e))?;
        let types = [Type::BYTEA, Type::TEXT, Type::INT8, Type::INT8, Type::INT8, Type::BYTEA];
        let writer = BinaryCopyInWriter::new(sink, &types);
        tokio::pin!(writer);
        for r in records {
            writer.as_mut().write(&TokenRow::of(r).params()).await.map_err(|e| self.pg(e))?;
        }
        writer.finish().await.map_err(|e| self.pg(e))?;
        tx.execute("INSERT INTO tokend_meta (key, value) VALUES ('bootstrapped', 'true') ON CONFLICT DO NOTHING", &[])
            .await
            .map_err(|e| self.pg(e))?;
        tx.commit().await.map_err(|e| self.pg(e))?;
        // Settle the bulk load now rather than during what is measured
        // next: autovacuum would scan the new rows, and the next checkpoint
        // would write them out, both in the middle of the write benchmark.
        // CHECKPOINT needs a superuser (or pg_checkpoint): skipped without.
        client.batch_execute("VACUUM (ANALYZE) tokend_tokens").await.map_err(|e| self.pg(e))?;
        if let Err(e) = client.batch_execute("CHECKPOINT").await {
            tracing::debug!(error = %describe(&e), "no checkpoint after the bulk load");
        }
        Ok(())
    }

    /// The database, as logs name it (no password).
    pub fn target(&self) -> &str {
        &self.target
    }

    fn connect_error(&self, message: String) -> StoreError {
        StoreError::Connect { target: self.target.clone(), message }
    }

    /// Runs `work` on the runtime from a blocking thread, bounded by
    /// `--store-timeout`.
    fn block<T>(&self, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let timeout = self.timeout;
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, work).await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "{} did not answer within --store-timeout ({timeout:?})",
                    self.target
                )))
            })
        })
    }

    fn pg(&self, e: tokio_postgres::Error) -> StoreError {
        // An answer from the server (a constraint, a missing table) is a
        // fault to look into; a lost connection, a server going away or
        // busy, is the database being unavailable, and worth a retry.
        if e.as_db_error().is_some_and(|db| !is_transient_answer(db)) && !e.is_closed() {
            StoreError::Io(format!("{}: {}", self.target, describe(&e)))
        } else {
            StoreError::Unavailable(format!("{}: {}", self.target, describe(&e)))
        }
    }

    /// Writes `r` over version `r.version - 1` (a new record: over none),
    /// and its row in the outbox; both statements in one round trip.
    async fn put(&self, tx: &deadpool_postgres::Transaction<'_>, r: &TokenRecord) -> Result<(), StoreError> {
        let row = TokenRow::of(r);
        let sql = if r.version <= 1 { INSERT_TOKEN } else { UPDATE_TOKEN };
        let (statement, outbox) = tokio::try_join!(
            tx.prepare_cached(sql),
            tx.prepare_cached("INSERT INTO tokend_changes (token_id, version) VALUES ($1, $2)"),
        )
        .map_err(|e| self.pg(e))?;
        // Pipelined: if the token write finds a newer version, the outbox
        // row is rolled back with the rest of the transaction.
        let token_params = row.params();
        let outbox_params: [&(dyn ToSql + Sync); 2] = [&row.id, &row.version];
        let (written, _) = tokio::try_join!(tx.execute(&statement, &token_params), tx.execute(&outbox, &outbox_params))
            .map_err(|e| self.pg(e))?;
        if written == 0 {
            return Err(StoreError::Conflict { id: r.id });
        }
        Ok(())
    }

    /// [`PostgresStore::put`] for a write of one record and its audit event
    /// (Issue without a quota, Revoke, Update): one statement, committed on
    /// its own, so one round trip rather than a transaction's five. The
    /// event is appended only if the record was written.
    async fn put_alone(&self, r: &TokenRecord, event: Option<&[u8]>) -> Result<(), StoreError> {
        let row = TokenRow::of(r);
        let write = if r.version <= 1 { INSERT_TOKEN } else { UPDATE_TOKEN };
        let audit = if event.is_some() {
            ", a AS (INSERT INTO tokend_audit_pending (event) SELECT $7::bytea FROM t)"
        } else {
            ""
        };
        let sql = format!(
            "WITH t AS ({write} RETURNING id, version),
                  o AS (INSERT INTO tokend_changes (token_id, version) SELECT id, version FROM t){audit}
             SELECT count(*) FROM t"
        );
        let client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
        let statement = client.prepare_cached(&sql).await.map_err(|e| self.pg(e))?;
        let mut params = row.params().to_vec();
        if let Some(event) = &event {
            params.push(event);
        }
        let answer = client.query_one(&statement, &params).await.map_err(|e| self.pg(e))?;
        if answer.get::<_, i64>(0) == 0 {
            return Err(StoreError::Conflict { id: r.id });
        }
        self.announce();
        Ok(())
    }

    /// Tells the other replicas' feeds that a change committed, through
    /// [`doorbell`], without waiting.
    fn announce(&self) {
        // Full: a ring is pending and will announce this commit too.
        // Closed: never while the store lives.
        let _ = self.ring.try_send(());
    }

    /// Seals up to [`SEAL_BATCH`] pending audit events, oldest first, in
    /// one transaction holding the chain's head row: sealers on several
    /// replicas take turns, and each seals whatever all replicas appended
    /// meanwhile. A reader never sees an event without those before it.
    async fn seal_batch(&self) -> Result<Vec<audit::Event>, StoreError> {
        let mut client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
        // Most calls find nothing: no need to take the lock for that.
        let first = client
            .query_opt("SELECT id FROM tokend_audit_pending ORDER BY id LIMIT 1", &[])
            .await
            .map_err(|e| self.pg(e))?;
        if first.is_none() {
            return Ok(Vec::new());
        }
        let tx = client.transaction().await.map_err(|e| self.pg(e))?;
        let row =
            tx.query_one("SELECT seq, hash FROM tokend_audit_head FOR UPDATE", &[]).await.map_err(|e| self.pg(e))?;
        let corrupt = |key: &str, message: String| StoreError::Corrupt { key: key.into(), message };
        let mut head = audit::Head {
            seq: u64::try_from(row.get::<_, i64>(0)).map_err(|_| corrupt("tokend_audit_head", "bad seq".into()))?,
            hash: row.get::<_, &[u8]>(1).try_into().map_err(|_| corrupt("tokend_audit_head", "bad hash".into()))?,
        };
        let limit = SEAL_BATCH as i64;
        let pending = tx
            .query("SELECT id, event FROM tokend_audit_pending ORDER BY id LIMIT $1", &[&limit])
            .await
            .map_err(|e| self.pg(e))?;
        let mut ids = Vec::with_capacity(pending.len());
        let mut events = Vec::with_capacity(pending.len());
        for row in &pending {
            let id: i64 = row.get(0);
            let unsealed = audit::Event::decode_stored(row.get(1))
                .map_err(|e| corrupt(&format!("tokend_audit_pending {id}"), e.to_string()))?;
            let event = head.chain(unsealed);
            head = audit::Head::of(&event).expect("chained with a 32-byte hash");
            ids.push(id);
            events.push(event);
        }
        let seqs: Vec<i64> = events.iter().map(|e| i64::try_from(e.seq).unwrap_or(i64::MAX)).collect();
        let times: Vec<i64> = events.iter().map(|e| e.time().0).collect();
        let actors: Vec<&str> = events.iter().map(|e| e.actor_id.as_str()).collect();
        let targets: Vec<&str> = events.iter().map(|e| e.target_id.as_str()).collect();
        let owners: Vec<&str> = events.iter().map(|e| e.owner.as_str()).collect();
        let stored: Vec<Vec<u8>> = events.iter().map(::prost::Message::encode_to_vec).collect();
        let last = i64::try_from(head.seq).unwrap_or(i64::MAX);
        let (insert, delete, advance) = tokio::try_join!(
            tx.prepare_cached(
                "INSERT INTO tokend_audit (seq, time, actor_id, target_id, owner, event)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bytea[])"
            ),
            tx.prepare_cached("DELETE FROM tokend_audit_pending WHERE id = ANY($1)"),
            tx.prepare_cached("UPDATE tokend_audit_head SET seq = $1, hash = $2"),
        )
        .map_err(|e| self.pg(e))?;
        let insert_params: [&(dyn ToSql + Sync); 6] = [&seqs, &times, &actors, &targets, &owners, &stored];
        let head_hash = head.hash.to_vec();
        let advance_params: [&(dyn ToSql + Sync); 2] = [&last, &head_hash];
        let delete_params: [&(dyn ToSql + Sync); 1] = [&ids];
        tokio::try_join!(
            tx.execute(&insert, &insert_params),
            tx.execute(&delete, &delete_params),
            tx.execute(&advance, &advance_params),
        )
        .map_err(|e| self.pg(e))?;
        tx.commit().await.map_err(|e| self.pg(e))?;
        Ok(events)
    }

    /// Appends an audit event alone (a refusal, a repeated revoke).
    async fn append_pending(&self, event: &[u8]) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
        let statement = client.prepare_cached(APPEND_PENDING).await.map_err(|e| self.pg(e))?;
        client.execute(&statement, &[&event]).await.map_err(|e| self.pg(e))?;
        Ok(())
    }

    fn pool_error(&self, e: PoolError) -> StoreError {
        match e {
            PoolError::Backend(e) => self.pg(e),
            other => StoreError::Unavailable(format!("{}: {}", self.target, describe_pool_error(&other))),
        }
    }
}

/// Sends `NOTIFY tokend_changes` once per ring, after the commits it
/// announces, until the store is dropped.
///
/// Not inside the writes' transactions: PostgreSQL serialises every
/// transaction that notifies on one database-wide lock held until its
/// commit is flushed, so a NOTIFY in each write made all writers of all
/// replicas take turns through the commit flush (measured with pgbench here,
/// 64 clients: 30,500 inserts/s, 6,800/s with the NOTIFY). Out here, one
/// ring announces every commit made while the one before was in flight, and
/// it commits asynchronously: a lost notification costs a poll interval,
/// never a change (the poll is the guarantee, see `feed`).
async fn doorbell(pool: Pool, mut rung: tokio::sync::mpsc::Receiver<()>) {
    const RING: &str = "BEGIN; SET LOCAL synchronous_commit = off; NOTIFY tokend_changes; COMMIT";
    while rung.recv().await.is_some() {
        let sent = match pool.get().await {
            Ok(client) => client.batch_execute(RING).await.map_err(|e| describe(&e)),
            Err(e) => Err(describe_pool_error(&e)),
        };
        if let Err(error) = sent {
            tracing::debug!(%error, "cannot notify the other replicas; they will poll");
        }
    }
}

/// Whether waiting may help: the server could not be reached, or said it
/// is starting up, shutting down, or out of connections.
fn is_transient(e: &PoolError) -> bool {
    match e {
        PoolError::Backend(e) => e.as_db_error().is_none_or(is_transient_answer),
        PoolError::Timeout(_) => true,
        _ => false,
    }
}

/// Answers that say "not now" rather than "wrong": connection exceptions
/// (08), insufficient resources (53), operator intervention such as a
/// terminated backend or a shutdown (57), a rolled-back transaction (40),
/// a lock timeout (55P03). A failed login (28) is final, though FATAL too.
fn is_transient_answer(db: &tokio_postgres::error::DbError) -> bool {
    let code = db.code().code();
    ["08", "40", "53", "57"].iter().any(|class| code.starts_with(class)) || code == "55P03"
}

fn describe_pool_error(e: &PoolError) -> String {
    match e {
        PoolError::Backend(e) => describe(e),
        other => other.to_string(),
    }
}

/// What went wrong, in words: tokio-postgres displays a server's answer as
/// "db error" and a failed connection as "error connecting to server", with
/// the reason in the error's source.
fn describe(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{} ({})", db.message(), db.code().code()),
        (None, Some(source)) => format!("{e}: {source}"),
        (None, None) => e.to_string(),
    }
}

const NO_PARAMS: [&(dyn ToSql + Sync); 0] = [];

/// A record as the columns of `tokend_tokens` that tokend writes, in the
/// order of [`INSERT_TOKEN`], [`UPDATE_TOKEN`] and `copy_in`'s `COPY`.
struct TokenRow<'a> {
    id: Vec<u8>,
    owner: &'a str,
    version: i64,
    expire_time: Option<i64>,
    revoke_time: Option<i64>,
    record: Vec<u8>,
}

impl<'a> TokenRow<'a> {
    fn of(r: &'a TokenRecord) -> TokenRow<'a> {
        TokenRow {
            id: r.id.to_bytes().to_vec(),
            owner: &r.owner,
            version: i64::try_from(r.version).unwrap_or(i64::MAX),
            expire_time: r.expire_time.map(|t| t.0),
            revoke_time: r.revoke_time.map(|t| t.0),
            record: encode(r),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [&self.id, &self.owner, &self.version, &self.expire_time, &self.revoke_time, &self.record]
    }
}

/// Appends an unsealed audit event.
const APPEND_PENDING: &str = "INSERT INTO tokend_audit_pending (event) VALUES ($1)";

/// Writes a new token, unless its id exists (a conflict).
const INSERT_TOKEN: &str = "INSERT INTO tokend_tokens (id, owner, version, expire_time, revoke_time, record)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING";
/// Writes a token's next version over the one it was derived from.
const UPDATE_TOKEN: &str = "UPDATE tokend_tokens SET owner = $2, version = $3, expire_time = $4, revoke_time = $5,
     record = $6 WHERE id = $1 AND version + 1 = $3";

impl Store for PostgresStore {
    fn load(&self, decoder: &mut Decoder, each: &mut dyn FnMut(TokenRecord, Option<Time>)) -> Result<bool, StoreError> {
        // Not bounded by --store-timeout: a million rows take longer than one
        // write may. Rows are streamed into the index, not collected first.
        self.runtime.block_on(async {
            let client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
            let bootstrapped = client
                .query_opt("SELECT 1 FROM tokend_meta WHERE key = 'bootstrapped'", &[])
                .await
                .map_err(|e| self.pg(e))?
                .is_some();
            let rows = client
                .query_raw("SELECT id, record, last_used FROM tokend_tokens ORDER BY id", NO_PARAMS)
                .await
                .map_err(|e| self.pg(e))?;
            tokio::pin!(rows);
            while let Some(row) = rows.next().await {
                let row = row.map_err(|e| self.pg(e))?;
                let record = decoder.decode(row.get(0), row.get(1))?;
                each(record, row.get::<_, Option<i64>>(2).map(Time));
            }
            Ok(bootstrapped)
        })
    }

    /// The planner's estimate (kept by autovacuum and ANALYZE).
    fn size_hint(&self) -> Option<u64> {
        let estimate = self.block(async {
            let client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
            let row = client
                .query_one("SELECT reltuples::bigint FROM pg_class WHERE oid = 'tokend_tokens'::regclass", &[])
                .await
                .map_err(|e| self.pg(e))?;
            Ok(row.get::<_, i64>(0))
        });
        estimate.ok().and_then(|n| u64::try_from(n).ok())
    }

    fn fetch(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let key = id.to_bytes();
        self.block(async {
            let client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
            let row = client
                .query_opt("SELECT record FROM tokend_tokens WHERE id = $1", &[&&key[..]])
                .await
                .map_err(|e| self.pg(e))?;
            row.map(|row| decode(&key, row.get(0))).transpose()
        })
    }

    fn apply(
        &self,
        changes: &[Change],
        draft: Option<&audit::Draft>,
        quota: Option<OwnerQuota<'_>>,
    ) -> Result<Option<audit::Event>, StoreError> {
        // Kept unsealed, for `seal_pending`: sealing here would hold the
        // chain's head across this commit and serialise every writer.
        let event = draft.map(|d| ::prost::Message::encode_to_vec(&d.unsealed()));
        match (changes, quota) {
            ([Change::Put(record)], None) => {
                return self.block(self.put_alone(record, event.as_deref())).map(|()| None);
            }
            ([], None) => {
                if let Some(event) = &event {
                    self.block(self.append_pending(event))?;
                }
                return Ok(None);
            }
            _ => {}
        }
        self.block(async {
            let mut client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
            let tx = client.transaction().await.map_err(|e| self.pg(e))?;
            if let Some(quota) = quota {
                // Issues for one owner queue here, replica or not, until the
                // holder commits: the count below then includes its token.
                tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", &[&quota.owner])
                    .await
                    .map_err(|e| self.pg(e))?;
                let active: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM tokend_tokens WHERE owner = $1 AND revoke_time IS NULL
                         AND (expire_time IS NULL OR expire_time > $2)",
                        &[&quota.owner, &quota.now.0],
                    )
                    .await
                    .map_err(|e| self.pg(e))?
                    .get(0);
                if active >= i64::from(quota.limit) {
                    return Err(StoreError::QuotaExceeded { limit: quota.limit });
                }
            }
            for change in changes {
                match change {
                    Change::Put(r) => self.put(&tx, r).await?,
                    Change::Bootstrapped => {
                        let inserted = tx
                            .execute(
                                "INSERT INTO tokend_meta (key, value) VALUES ('bootstrapped', 'true')
                                 ON CONFLICT (key) DO NOTHING",
                                &[],
                            )
                            .await
                            .map_err(|e| self.pg(e))?;
                        if inserted == 0 {
                            return Err(StoreError::AlreadyBootstrapped);
                        }
                    }
                }
            }
            if let Some(event) = &event {
                tx.execute(APPEND_PENDING, &[event]).await.map_err(|e| self.pg(e))?;
            }
            tx.commit().await.map_err(|e| self.pg(e))?;
            self.announce();
            Ok(None)
        })
    }

    fn seals_audit_later(&self) -> bool {
        true
    }

    fn seal_pending(&self) -> Result<Vec<audit::Event>, StoreError> {
        self.block(self.seal_batch())
    }

    fn audit_page(&self, filter: &audit::Filter, after: u64, limit: usize) -> Result<audit::Page, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let target = filter.target_id.map(|id| id.to_string());
        let actor = filter.actor_id.map(|id| id.to_string());
        let since = filter.since.map(|t| t.0);
        let rows = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        self.block(async {
            let client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
            let rows = client
                .query(
                    "SELECT seq, event FROM tokend_audit
                     WHERE seq > $1 AND ($2::text IS NULL OR target_id = $2) AND ($3::text IS NULL OR actor_id = $3)
                       AND ($4::bigint IS NULL OR time >= $4) AND ($5::text[] IS NULL OR owner = ANY($5))
                     ORDER BY seq LIMIT $6",
                    &[&after, &target, &actor, &since, &filter.owners, &rows],
                )
                .await
                .map_err(|e| self.pg(e))?;
            let stored = rows.iter().map(|row| {
                let seq = row.get::<_, i64>(0);
                let event = audit::Event::decode_stored(row.get(1))
                    .map_err(|e| StoreError::Corrupt { key: format!("tokend_audit {seq}"), message: e.to_string() })?;
                Ok((u64::try_from(seq).unwrap_or(0), event))
            });
            audit::page_of(stored, filter, limit)
        })
    }

    fn audit_raw(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.block(async {
            let client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
            let rows = client
                .query("SELECT seq, event FROM tokend_audit WHERE seq > $1 ORDER BY seq LIMIT $2", &[&after, &limit])
                .await
                .map_err(|e| self.pg(e))?;
            Ok(rows.iter().map(|row| (u64::try_from(row.get::<_, i64>(0)).unwrap_or(0), row.get(1))).collect())
        })
    }

    fn record_last_used(&self, times: &[(TokenId, Time)]) -> Result<(), StoreError> {
        if times.is_empty() {
            return Ok(());
        }
        let bytes: Vec<[u8; 16]> = times.iter().map(|(id, _)| id.to_bytes()).collect();
        let ids: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
        let nanos: Vec<i64> = times.iter().map(|(_, t)| t.0).collect();
        self.block(async {
            let client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
            // GREATEST: several replicas record uses of the same token; the
            // time only moves forward, whoever writes last.
            // The batch's mark lets other replicas read the batches they
            // have not seen (see `feed`).
            client
                .execute(
                    "WITH batch AS MATERIALIZED (SELECT nextval('tokend_last_used_batches') AS seq)
                     UPDATE tokend_tokens AS t SET last_used = GREATEST(t.last_used, u.at), last_used_seq = batch.seq
                     FROM unnest($1::bytea[], $2::bigint[]) AS u(id, at), batch
                     WHERE t.id = u.id",
                    &[&ids, &nanos],
                )
                .await
                .map_err(|e| self.pg(e))?;
            // Other replicas then show these uses at once, not at their
            // next poll.
            self.announce();
            Ok(())
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every apply and record_last_used has committed already.
        Ok(())
    }

    fn decides_rules(&self) -> bool {
        true
    }

    fn writes_are_durable(&self) -> bool {
        true
    }
}
