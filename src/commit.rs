//! Group commit: writers share flushes instead of each paying for one.
//!
//! A writer applies its change to the store (fast, in memory), then waits in
//! [`Committer::sync`]. One dedicated thread takes every waiter queued so far,
//! flushes once, and answers them all. Any change applied before its writer
//! queued is covered by the flush that answers it, so an acknowledged write
//! is durable.
//!
//! Why a thread and the blocking flush: sled 0.34's `flush_async` deadlocks
//! with seven or more concurrent callers (spacejam/sled#1308), and a flush is
//! blocking disk work that must not sit on an async worker.

use std::{
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

use crate::store::{Store, StoreError};

type Waiter = oneshot::Sender<Result<(), StoreError>>;

#[derive(Default)]
struct Queue {
    waiters: Vec<Waiter>,
    closed: bool,
}

/// Told the duration of every flush (metrics).
pub type FlushObserver = Box<dyn Fn(Duration) + Send + Sync>;

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    flushes: AtomicU64,
    observe: FlushObserver,
}

/// The group-commit thread's handle.
pub struct Committer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Committer {
    /// Starts the commit thread for `store`; `observe` is told how long each
    /// flush took.
    pub fn start(store: Arc<dyn Store>, observe: FlushObserver) -> Committer {
        let shared =
            Arc::new(Shared { queue: Mutex::default(), wake: Condvar::new(), flushes: AtomicU64::new(0), observe });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("tokend-commit".into())
                .spawn(move || run(&shared, store.as_ref()))
                .expect("cannot spawn the commit thread")
        };
        Committer { shared, thread: Mutex::new(Some(thread)) }
    }

    /// Waits until everything applied to the store before this call is durable.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.enqueue()?.await.unwrap_or(Err(StoreError::Closed))
    }

    /// [`Committer::sync`] for plain threads (background work that must not
    /// occupy an async worker). Never call it on an async worker.
    pub fn sync_blocking(&self) -> Result<(), StoreError> {
        self.enqueue()?.blocking_recv().unwrap_or(Err(StoreError::Closed))
    }

    fn enqueue(&self) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.closed {
                return Err(StoreError::Closed);
            }
            q.waiters.push(tx);
        }
        self.shared.wake.notify_one();
        Ok(rx)
    }

    /// Number of flushes made so far.
    pub fn flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }

    /// Refuses further syncs, answers the queued ones with a last flush, and
    /// waits for the thread to end. Blocking.
    pub fn close(&self) {
        self.shared.queue.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.close();
    }
}

fn run(shared: &Shared, store: &dyn Store) {
    loop {
        let (batch, closed) = {
            let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            while q.waiters.is_empty() && !q.closed {
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            (std::mem::take(&mut q.waiters), q.closed)
        };
        // On close, flush once more even with nobody waiting: it is the
        // shutdown flush of everything written so far.
        let started = Instant::now();
        let result = store.flush();
        (shared.observe)(started.elapsed());
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::error!(error = %e, waiters = batch.len(), "store flush failed");
        }
        for waiter in batch {
            let _ = waiter.send(result.clone());
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{change::Change, clock::Time, id::TokenId};
    use std::sync::atomic::AtomicUsize;

    /// A store whose flush is slow, so waiters pile up behind it.
    #[derive(Default)]
    struct SlowStore {
        flushes: AtomicUsize,
    }

    impl Store for SlowStore {
        fn load(
            &self,
            _: &mut crate::store::Decoder,
            _: &mut dyn FnMut(crate::record::TokenRecord, Option<Time>),
        ) -> Result<bool, StoreError> {
            Ok(false)
        }
        fn apply(
            &self,
            _: &[Change],
            _: Option<&crate::audit::Draft>,
            _: Option<crate::store::OwnerQuota<'_>>,
        ) -> Result<Option<crate::audit::Event>, StoreError> {
            Ok(None)
        }
        fn audit_page(&self, _: &crate::audit::Filter, _: u64, _: usize) -> Result<crate::audit::Page, StoreError> {
            Ok(Default::default())
        }
        fn audit_raw(&self, _: u64, _: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
            Ok(Vec::new())
        }
        fn fetch(&self, _: TokenId) -> Result<Option<crate::record::TokenRecord>, StoreError> {
            Ok(None)
        }
        fn record_last_used(&self, _: &[(TokenId, Time)]) -> Result<(), StoreError> {
            Ok(())
        }
        fn flush(&self) -> Result<(), StoreError> {
            std::thread::sleep(Duration::from_millis(20));
            self.flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_flushes() {
        let store = Arc::new(SlowStore::default());
        let committer = Arc::new(Committer::start(store.clone(), Box::new(|_| {})));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let c = committer.clone();
                tokio::spawn(async move { c.sync().await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let flushes = store.flushes.load(Ordering::SeqCst);
        assert!(flushes >= 1);
        assert!(flushes < 16, "64 writers made {flushes} flushes");
        assert_eq!(committer.flushes() as usize, flushes);
    }

    #[tokio::test]
    async fn sync_after_close_is_refused_and_close_flushes() {
        let store = Arc::new(SlowStore::default());
        let committer = Committer::start(store.clone(), Box::new(|_| {}));
        committer.sync().await.unwrap();
        committer.close();
        assert_eq!(store.flushes.load(Ordering::SeqCst), 2, "one for the sync, one at close");
        assert!(matches!(committer.sync().await, Err(StoreError::Closed)));
    }
}
