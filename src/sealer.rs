//! The thread that seals the audit events a shared store keeps unsealed.
//!
//! With PostgreSQL a write appends its audit event unsealed, in its own
//! transaction (`Store::seals_audit_later`): numbering and chaining it there
//! would hold the chain's one head row across the commit and make every
//! writer of every replica wait for the one before (measured: durable
//! Issue at 64 clients fell from ~3,800/s to ~800/s). This thread seals
//! what is pending — its own replica's events and any other's — in batches,
//! woken after each write and at least every [`INTERVAL`]; a read of the
//! trail seals first, so it sees every acknowledged change.

use std::{
    sync::{
        Arc, Mutex,
        mpsc::{self, RecvTimeoutError, SyncSender},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::{
    audit::LogFile,
    store::{SEAL_BATCH, Store, StoreError},
};

/// Longest a pending event waits when no write wakes the sealer (events
/// left by a replica that crashed before sealing them).
pub const INTERVAL: Duration = Duration::from_secs(1);

/// How long a pass waits after a wake-up, gathering the events of the
/// writes that follow: one sealing transaction (a commit flush) per
/// [`GATHER`] rather than one per write, which would double the commit
/// flushes of a busy replica.
pub const GATHER: Duration = Duration::from_millis(50);

enum Message {
    Wake,
    Stop,
}

/// The sealing thread's handle.
pub struct Sealer {
    wake: SyncSender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Sealer {
    /// Starts sealing `store`'s pending events, writing each sealed event
    /// to `log` as well.
    pub fn start(store: Arc<dyn Store>, log: Option<Arc<LogFile>>) -> Sealer {
        // One queued wake-up is enough: a pass seals everything pending.
        let (wake, woken) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("tokend-sealer".into())
            .spawn(move || {
                loop {
                    let last = match woken.recv_timeout(INTERVAL) {
                        Ok(Message::Wake) => {
                            std::thread::sleep(GATHER);
                            false
                        }
                        Err(RecvTimeoutError::Timeout) => false,
                        Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => true,
                    };
                    if let Err(e) = seal_all(store.as_ref(), log.as_deref()) {
                        // They stay pending, durable; the next pass retries.
                        tracing::warn!(error = %e, "cannot seal audit events");
                    }
                    if last {
                        return;
                    }
                }
            })
            .expect("cannot spawn the audit sealer thread");
        Sealer { wake, thread: Mutex::new(Some(thread)) }
    }

    /// Asks for a pass soon (after a write).
    pub fn wake(&self) {
        let _ = self.wake.try_send(Message::Wake);
    }

    /// A last pass, then the thread ends. Blocking.
    pub fn close(&self) {
        let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let _ = self.wake.send(Message::Stop);
        let _ = thread.join();
    }
}

impl Drop for Sealer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Seals everything pending in `store`; returns how many events. Blocking.
pub fn seal_all(store: &dyn Store, log: Option<&LogFile>) -> Result<usize, StoreError> {
    let mut sealed = 0;
    loop {
        let events = store.seal_pending()?;
        if let Some(log) = log {
            log.append(&events);
        }
        sealed += events.len();
        if events.len() < SEAL_BATCH {
            return Ok(sealed);
        }
    }
}
