//! The change feed: keeps this replica's index current with writes made
//! through other replicas of a shared store, and knows how current it is.
//!
//! Written after kube-rs's watcher: a [`FeedSource`] (the store's side: what
//! changed since the last read, and a wake-up when something may have)
//! driven by one loop whose states are named (`State`). Every batch
//! reaches the index through `Index::apply`, the same path as local writes;
//! applies are idempotent by record version, so a change read twice, or
//! after a later one, does no harm.
//!
//! [`Freshness`] is the fail-closed half: each successful read confirms the
//! replica is current. Past `--max-staleness` without one, Verify answers
//! UNAVAILABLE and health NOT_SERVING, so a replica cut off from the
//! database stops accepting tokens revoked through another replica; it
//! returns to service by itself with the next successful read.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{change::Change, clock::Time, id::TokenId, index::Index, store::StoreError};

/// What one read of the feed found.
#[derive(Debug, Default)]
pub struct Batch {
    /// Records written since the last read (by any replica, this one too).
    pub changes: Vec<Change>,
    /// Last-used times recorded since the last read.
    pub last_used: Vec<(TokenId, Time)>,
}

/// The store's side of the feed.
pub trait FeedSource: Send + 'static {
    /// What changed since the previous read. The first read, and a read
    /// after the source lost its place, may return everything.
    fn read(&mut self) -> impl Future<Output = Result<Batch, StoreError>> + Send;
    /// Resolves when the store signals a change, or after `timeout`.
    fn wait(&mut self, timeout: Duration) -> impl Future<Output = ()> + Send;
}

/// How current this replica is.
#[derive(Debug)]
pub struct Freshness {
    started: Instant,
    /// When the last read succeeded, in nanoseconds since `started`.
    confirmed: AtomicU64,
    max_staleness: Duration,
    /// Set by the watchdog; read by Verify (one relaxed load per call).
    stale: AtomicBool,
    applied: AtomicU64,
}

impl Freshness {
    /// Current as of now, stale past `max_staleness` without a confirmation.
    pub fn new(max_staleness: Duration) -> Freshness {
        Freshness {
            started: Instant::now(),
            confirmed: AtomicU64::new(0),
            max_staleness,
            stale: AtomicBool::new(false),
            applied: AtomicU64::new(0),
        }
    }

    /// Records a successful read.
    pub fn confirm(&self) {
        let nanos = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.confirmed.store(nanos, Ordering::Release);
    }

    /// Time since the last successful read.
    pub fn staleness(&self) -> Duration {
        self.started.elapsed().saturating_sub(Duration::from_nanos(self.confirmed.load(Ordering::Acquire)))
    }

    /// Whether the watchdog has taken this replica out of service.
    #[inline]
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// The watchdog's check: marks the replica stale or current; returns
    /// the new state if it changed.
    pub fn check(&self) -> Option<bool> {
        let stale = self.staleness() > self.max_staleness;
        (self.stale.swap(stale, Ordering::Relaxed) != stale).then_some(stale)
    }

    /// `--max-staleness`.
    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// Records applied from the feed so far.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }
}

/// Where the feed loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reads succeed; waiting for the next signal or poll.
    Current,
    /// The last read failed; retrying with backoff. Freshness is not
    /// confirmed meanwhile, so the watchdog decides when it matters.
    Failing { delay: Duration },
}

/// Runs the feed until the task is dropped: read, apply, confirm, wait for
/// a signal or `poll_interval`, again.
pub async fn run(mut source: impl FeedSource, index: Arc<Index>, freshness: Arc<Freshness>, poll_interval: Duration) {
    let mut state = State::Current;
    loop {
        state = match source.read().await {
            Ok(batch) => {
                let applied = index.apply(&batch.changes);
                for (id, at) in &batch.last_used {
                    index.merge_last_used(*id, *at);
                }
                freshness.applied.fetch_add(applied as u64, Ordering::Relaxed);
                freshness.confirm();
                if let State::Failing { .. } = state {
                    tracing::info!("change feed reading again");
                }
                State::Current
            }
            Err(e) => {
                let delay = match state {
                    State::Current => {
                        tracing::warn!(error = %e, "change feed read failed; retrying");
                        Duration::from_millis(100)
                    }
                    State::Failing { delay } => (delay * 2).min(poll_interval.max(Duration::from_secs(1))),
                };
                State::Failing { delay }
            }
        };
        match state {
            State::Current => source.wait(poll_interval).await,
            State::Failing { delay } => tokio::time::sleep(delay).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_goes_stale_and_back() {
        let f = Freshness::new(Duration::from_millis(30));
        f.confirm();
        assert_eq!(f.check(), None, "current, and unchanged");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(f.check(), Some(true));
        assert!(f.is_stale());
        assert_eq!(f.check(), None);
        f.confirm();
        assert_eq!(f.check(), Some(false));
        assert!(!f.is_stale());
    }
}
