//! The PostgreSQL side of the change feed: what other replicas wrote.
//!
//! Each write adds a row per record to the outbox `tokend_changes`, in the
//! same transaction, numbered by a sequence. Writers never wait on a shared
//! row, so sequence numbers can commit out of order: 42 may be visible
//! while 41, taken earlier, is still in flight. The reader therefore keeps
//! a [`Cursor`]: the highest number seen, and the *gaps* below it, numbers
//! not yet visible. Each read asks for everything above the highest, and
//! for the gaps again. A number is allocated when its row is inserted, and
//! a tokend transaction cannot stay open longer than the settle window (the
//! server aborts transactions idle past `--store-timeout`), so a gap that
//! has stayed empty for the window belongs to a transaction that rolled
//! back and is dropped. Reads return each token's current record, and the
//! index keeps the highest version it sees, so a row read twice is harmless.
//!
//! Last-used times travel the same way: each batch a replica writes marks
//! its rows with a number from `tokend_last_used_batches`, read with a
//! second cursor.
//!
//! `LISTEN tokend_changes` wakes the reader at once (each replica notifies
//! after its commits, see `doorbell`); the poll every `--feed-poll-interval` is the guarantee when a
//! notification is lost. Rows older than `--feed-retention` are pruned by
//! any replica; a replica that could not read for longer than half of that
//! reloads the whole token set instead of trusting its cursor.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_stream::StreamExt as _;

use super::{NO_PARAMS, PostgresStore};
use crate::{
    change::Change,
    clock::Time,
    feed::{Batch, FeedSource},
    id::TokenId,
    store::{StoreError, codec::decode},
};

/// Most gaps a cursor tracks: a jump wider than this (a mass rollback) is
/// not worth a read of each number.
const MAX_GAPS: i64 = 100_000;

/// Settings of the feed.
#[derive(Debug, Clone, Copy)]
pub struct FeedOptions {
    /// How long a number may stay invisible before it is given up.
    pub settle: Duration,
    /// How long outbox rows are kept (`--feed-retention`).
    pub retention: Duration,
}

/// A position in a sequence whose numbers may become visible out of order.
#[derive(Debug, Default)]
struct Cursor {
    highest: i64,
    /// Numbers below `highest` not yet seen, with when they were noticed.
    gaps: BTreeMap<i64, Instant>,
}

impl Cursor {
    fn at(highest: i64) -> Cursor {
        Cursor { highest, gaps: BTreeMap::new() }
    }

    fn gaps(&self) -> Vec<i64> {
        self.gaps.keys().copied().collect()
    }

    /// Takes the numbers a read returned (`seen`), notes the new gaps, and
    /// drops gaps older than `settle`.
    fn observe(&mut self, seen: &HashSet<i64>, now: Instant, settle: Duration) {
        for n in seen {
            self.gaps.remove(n);
        }
        let top = seen.iter().copied().max().unwrap_or(self.highest).max(self.highest);
        if top - self.highest <= MAX_GAPS {
            for n in self.highest + 1..top {
                if !seen.contains(&n) {
                    self.gaps.insert(n, now);
                }
            }
        }
        self.highest = top;
        self.gaps.retain(|_, noticed| now.duration_since(*noticed) < settle);
    }
}

/// The change feed of a [`PostgresStore`].
pub struct PostgresFeed {
    pool: Pool,
    listen: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// Signalled by the listening connection's task on each notification
    /// (and when that connection ends, so the next wait reconnects).
    notified: Arc<Notify>,
    /// The listening connection's client and the task that drives it.
    listening: Option<(tokio_postgres::Client, tokio::task::JoinHandle<()>)>,
    changes: Cursor,
    last_used: Cursor,
    options: FeedOptions,
    last_read: Instant,
    last_prune: Option<Instant>,
    /// `--store-timeout`: the bound of one incremental read.
    timeout: Duration,
    target: String,
}

impl PostgresStore {
    /// The feed of changes committed from now on. Call it before loading
    /// the index: its starting position is one settle window back, so a
    /// write in flight during the load is read again, not missed.
    pub async fn feed(&self, options: FeedOptions) -> Result<PostgresFeed, StoreError> {
        let client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
        let (changes, last_used) = positions(&client, options.settle).await.map_err(|e| self.pg(e))?;
        Ok(PostgresFeed {
            pool: self.pool.clone(),
            listen: self.config.clone(),
            tls: self.tls.clone(),
            notified: Arc::new(Notify::new()),
            listening: None,
            changes: Cursor::at(changes),
            last_used: Cursor::at(last_used),
            options,
            last_read: Instant::now(),
            last_prune: None,
            timeout: self.timeout,
            target: self.target.clone(),
        })
    }
}

/// Settled positions: the highest outbox number older than `settle`, and
/// the last-used batch numbered last.
async fn positions(client: &tokio_postgres::Client, settle: Duration) -> Result<(i64, i64), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT (SELECT coalesce(max(seq), 0) FROM tokend_changes
                     WHERE at < clock_timestamp() - make_interval(secs => $1)),
                    (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM tokend_last_used_batches)",
            &[&settle.as_secs_f64()],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

impl PostgresFeed {
    fn unavailable(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(format!("{}: change feed: {e}", self.target))
    }

    fn pg(&self, e: tokio_postgres::Error) -> StoreError {
        self.unavailable(super::describe(&e))
    }

    async fn read_changes(&mut self) -> Result<Batch, StoreError> {
        let client = self.pool.get().await.map_err(|e| self.unavailable(e))?;
        let now = Instant::now();
        let rows = client
            .query(
                "SELECT c.seq, t.id, t.record FROM tokend_changes c JOIN tokend_tokens t ON t.id = c.token_id
                 WHERE c.seq > $1 OR c.seq = ANY($2) ORDER BY c.seq",
                &[&self.changes.highest, &self.changes.gaps()],
            )
            .await
            .map_err(|e| self.pg(e))?;
        let mut seen = HashSet::with_capacity(rows.len());
        let mut tokens = HashSet::with_capacity(rows.len());
        let mut batch = Batch::default();
        for row in &rows {
            seen.insert(row.get::<_, i64>(0));
            let id: &[u8] = row.get(1);
            // The row holds the token's current record: once per read is enough.
            if tokens.insert(id.to_vec()) {
                batch.changes.push(Change::Put(decode(id, row.get(2))?));
            }
        }
        self.changes.observe(&seen, now, self.options.settle);

        let rows = client
            .query(
                "SELECT id, last_used, last_used_seq FROM tokend_tokens
                 WHERE last_used_seq > $1 OR last_used_seq = ANY($2)",
                &[&self.last_used.highest, &self.last_used.gaps()],
            )
            .await
            .map_err(|e| self.pg(e))?;
        let mut seen = HashSet::new();
        for row in &rows {
            seen.insert(row.get::<_, i64>(2));
            let (id, at): (&[u8], Option<i64>) = (row.get(0), row.get(1));
            let id = <[u8; 16]>::try_from(id).ok().and_then(|b| TokenId::from_bytes(b).ok());
            if let (Some(id), Some(at)) = (id, at) {
                batch.last_used.push((id, Time(at)));
            }
        }
        self.last_used.observe(&seen, now, self.options.settle);
        Ok(batch)
    }

    /// Everything, for a replica that was away longer than the outbox keeps.
    async fn reload(&mut self) -> Result<Batch, StoreError> {
        tracing::warn!(store = %self.target, "change feed was away longer than half of --feed-retention; reloading every token");
        let client = self.pool.get().await.map_err(|e| self.unavailable(e))?;
        let (changes, last_used) = positions(&client, self.options.settle).await.map_err(|e| self.pg(e))?;
        let rows = client
            .query_raw("SELECT id, record, last_used FROM tokend_tokens", NO_PARAMS)
            .await
            .map_err(|e| self.pg(e))?;
        tokio::pin!(rows);
        let mut batch = Batch::default();
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| self.pg(e))?;
            let record = decode(row.get(0), row.get(1))?;
            if let Some(at) = row.get::<_, Option<i64>>(2) {
                batch.last_used.push((record.id, Time(at)));
            }
            batch.changes.push(Change::Put(record));
        }
        (self.changes, self.last_used) = (Cursor::at(changes), Cursor::at(last_used));
        Ok(batch)
    }

    async fn prune(&mut self) {
        if self.last_prune.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return;
        }
        self.last_prune = Some(Instant::now());
        let Ok(client) = self.pool.get().await else { return };
        let retention = self.options.retention.as_secs_f64();
        match client
            .execute(
                "DELETE FROM tokend_changes WHERE at < clock_timestamp() - make_interval(secs => $1)",
                &[&retention],
            )
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "change feed outbox pruned"),
            Err(e) => tracing::warn!(error = %super::describe(&e), "cannot prune the change feed outbox"),
        }
    }

    /// (Re)opens the listening connection if it is not running.
    async fn ensure_listening(&mut self) {
        if self.listening.as_ref().is_some_and(|(_, task)| !task.is_finished()) {
            return;
        }
        self.listening = None;
        let (client, mut connection) = match self.listen.connect(self.tls.clone()).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %super::describe(&e), "change feed cannot listen; polling only");
                return;
            }
        };
        let notified = self.notified.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => notified.notify_one(),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            // Wake the reader: it reads, then reconnects.
            notified.notify_one();
        });
        match client.batch_execute("LISTEN tokend_changes").await {
            Ok(()) => self.listening = Some((client, task)),
            Err(e) => {
                tracing::debug!(error = %super::describe(&e), "change feed cannot listen; polling only");
                task.abort();
            }
        }
    }
}

impl FeedSource for PostgresFeed {
    async fn read(&mut self) -> Result<Batch, StoreError> {
        // Listen before reading: a commit between the two then wakes the
        // next wait; in the other order it would wait for the poll.
        self.ensure_listening().await;
        // Bounded, so a connection that stops answering without closing (a
        // partition) fails the read and the watchdog, not a hung task,
        // decides; a reload of every token gets longer.
        let reload = self.last_read.elapsed() > self.options.retention / 2;
        let bound = if reload { (self.timeout * 10).max(Duration::from_secs(60)) } else { self.timeout };
        let read = async { if reload { self.reload().await } else { self.read_changes().await } };
        let batch = tokio::time::timeout(bound, read)
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("change feed: no answer within {bound:?}"))))?;
        self.last_read = Instant::now();
        self.prune().await;
        Ok(batch)
    }

    async fn wait(&mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.notified.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_read_again_until_they_settle() {
        let settle = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut c = Cursor::at(40);
        // 42 and 44 are visible, 41 and 43 are still in flight.
        c.observe(&[42, 44].into(), t0, settle);
        assert_eq!((c.highest, c.gaps()), (44, vec![41, 43]));
        // 41 commits late: it is read (as a gap) and leaves the gaps.
        c.observe(&[41].into(), t0 + Duration::from_secs(1), settle);
        assert_eq!((c.highest, c.gaps()), (44, vec![43]));
        // 43 never commits: given up after the settle window.
        c.observe(&HashSet::new(), t0 + Duration::from_secs(11), settle);
        assert_eq!((c.highest, c.gaps()), (44, vec![]));
    }
}
