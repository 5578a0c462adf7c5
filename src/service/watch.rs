//! `VerifyService.Watch`: each watcher is a task that reads the index's
//! numbered changes (`crate::watch`) after its position and sends them, or
//! a heartbeat when there were none for `--watch-heartbeat`.
//!
//! The task waits on a signal from the index, so a change is on its way
//! within microseconds of being applied. What is buffered per watcher is
//! bounded: a few messages in the channel, and the ring itself; a watcher
//! that leaves a message unread for [`SLOW_HEARTBEATS`] heartbeat intervals
//! is dropped, and one that falls
//! further behind than the ring is told to reset. At shutdown every stream
//! ends at once, so watchers never hold up the drain. A stale replica sends
//! no heartbeats: its watchers' caches then go stale too, and fall back to
//! Verify, which fails closed.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::{
    pb,
    service::convert,
    verify::Verifier,
    watch::{Position, Read, TokenChange},
};

/// Changes per message at most.
const BATCH: usize = 1_000;
/// Messages queued per watcher before it counts as not reading.
const QUEUE: usize = 8;
/// How many heartbeat intervals a watcher may leave a message unread before
/// it is dropped (10 s at the default heartbeat).
pub const SLOW_HEARTBEATS: u32 = 10;

/// The stream a Watch call answers with.
pub type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

/// Starts watchers.
pub struct Watchers {
    verifier: Arc<Verifier>,
    heartbeat: Duration,
    /// Becomes true at shutdown.
    stop: watch::Receiver<bool>,
}

impl Watchers {
    /// Watchers over `verifier`'s index, with heartbeats every `heartbeat`,
    /// ended when `stop` turns true.
    pub fn new(verifier: Arc<Verifier>, heartbeat: Duration, stop: watch::Receiver<bool>) -> Watchers {
        Watchers { verifier, heartbeat, stop }
    }

    /// A new watcher from `resume_token`.
    pub fn start(&self, resume_token: &str) -> WatchStream {
        let (tx, rx) = mpsc::channel(QUEUE);
        let changes = self.verifier.index().changes();
        let (from, reset) = match changes.resume(resume_token) {
            Some(position) => (position, false),
            None => (changes.now(), true),
        };
        let task = Task { verifier: self.verifier.clone(), heartbeat: self.heartbeat, tx };
        tokio::spawn(task.run(from, reset, self.stop.clone()));
        ReceiverStream::new(rx)
    }
}

/// One watcher.
struct Task {
    verifier: Arc<Verifier>,
    heartbeat: Duration,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
}

impl Task {
    async fn run(self, mut at: Position, mut reset: bool, mut stop: watch::Receiver<bool>) {
        let changes = self.verifier.index().changes();
        let mut newest = changes.subscribe();
        let mut first = true;
        loop {
            // Marked seen before reading: a change applied from here on
            // wakes the wait below.
            newest.borrow_and_update();
            loop {
                let (batch, after) = match changes.read(at, BATCH) {
                    Read::Changes(batch, after) => (batch, after),
                    // Fell out of the ring (or never in it): start afresh.
                    Read::Reset(now) => {
                        reset = true;
                        (Vec::new(), now)
                    }
                };
                if batch.is_empty() && !first && !reset {
                    break;
                }
                let full = batch.len() == BATCH;
                at = after;
                if !self.send(at, reset, &batch).await {
                    return;
                }
                (first, reset) = (false, false);
                if !full {
                    break;
                }
            }
            let heartbeat = Instant::now() + self.heartbeat;
            tokio::select! {
                // The index outlives this task, so the sender never goes.
                _ = newest.changed() => {}
                () = tokio::time::sleep_until(heartbeat) => {
                    // A stale replica cannot vouch for being current.
                    if !self.verifier.is_stale() && !self.send(at, false, &[]).await {
                        return;
                    }
                }
                () = stopped(&mut stop) => return,
                () = self.tx.closed() => return,
            }
        }
    }

    /// Sends one message; false when the watcher is gone or not reading.
    async fn send(&self, at: Position, reset: bool, changes: &[TokenChange]) -> bool {
        let message =
            pb::WatchResponse { resume_token: at.token(), reset, changes: changes.iter().map(change).collect() };
        let patience = self.heartbeat * SLOW_HEARTBEATS;
        matches!(tokio::time::timeout(patience, self.tx.send(Ok(message))).await, Ok(Ok(())))
    }
}

/// Resolves once `stop` turns true (the guard `wait_for` returns is not
/// `Send`, so it is dropped here).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

fn change(c: &TokenChange) -> pb::TokenChange {
    let status = if c.revoked { pb::TokenStatus::Revoked } else { pb::TokenStatus::Active };
    pb::TokenChange {
        token_id: c.id.to_string(),
        status: status.into(),
        expire_time: c.expire_time.map(convert::timestamp),
    }
}
