//! Reports cached verifications to tokend, so `last_used_time` stays true.
//!
//! A hit notes its token at most once per `record_use_interval` (one atomic
//! compare on the entry, a short lock when it does note); a task sends the
//! notes every interval with `VerifyService.RecordUse`, at most 1,000
//! hashes per call. Reports are best effort: a batch tokend does not take
//! is dropped, never retried without bound.

use std::{
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
    time::Duration,
};

use tonic::transport::Channel;

use crate::{
    cache::Entry,
    format::TokenHash,
    pb::{RecordUseRequest, verify_service_client::VerifyServiceClient},
};

/// Most hashes one RecordUse call carries (tokend's limit).
const BATCH: usize = 1_000;

/// Uses noted since the last report.
pub(crate) struct Usage {
    pending: Mutex<Vec<TokenHash>>,
    /// Nanoseconds between reports of one token; 0: never report.
    interval: u64,
    /// Most notes held between reports (the cache's capacity: one per entry).
    limit: usize,
}

impl Usage {
    pub fn new(interval: Duration, limit: usize) -> Usage {
        Usage { pending: Mutex::default(), interval: interval.as_nanos().min(u128::from(u64::MAX)) as u64, limit }
    }

    /// Notes a cached use of `entry` (hashed `hash`) at tick `now`, unless
    /// tokend heard of it within the interval.
    #[inline]
    pub fn note(&self, hash: TokenHash, entry: &Entry, now: u64) {
        let last = entry.reported.load(Relaxed);
        if self.interval == 0 || now.saturating_sub(last) < self.interval {
            return;
        }
        if entry.reported.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() < self.limit {
                pending.push(hash);
            }
        }
    }

    fn take(&self) -> Vec<TokenHash> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sends the notes every interval until the verifier is dropped.
    pub async fn report(self: Arc<Usage>, mut client: VerifyServiceClient<Channel>, rpc_timeout: Duration) {
        if self.interval == 0 {
            return;
        }
        let mut ticks = tokio::time::interval(Duration::from_nanos(self.interval));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let pending = self.take();
            for batch in pending.chunks(BATCH) {
                let token_hashes = batch.iter().map(|h| h.0.to_vec()).collect();
                let call = client.record_use(RecordUseRequest { token_hashes });
                match tokio::time::timeout(rpc_timeout, call).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) => {
                        tracing::debug!(code = ?status.code(), uses = batch.len(), "tokend did not record uses")
                    }
                    Err(_) => tracing::debug!(uses = batch.len(), "RecordUse timed out"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::VerifyResponse;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_token_is_noted_at_most_once_per_interval() {
        let usage = Usage::new(Duration::from_secs(5), 10);
        // Cached at tick 0: tokend's own Verify saw that use.
        let entry = Entry::new(VerifyResponse::default(), u64::MAX, 0);
        let hash = TokenHash([7; 32]);
        for now in [SECOND, 4 * SECOND] {
            usage.note(hash, &entry, now);
        }
        assert!(usage.take().is_empty(), "tokend heard of it within the interval");
        for now in [5 * SECOND, 6 * SECOND, 9 * SECOND, 10 * SECOND] {
            usage.note(hash, &entry, now);
        }
        assert_eq!(usage.take().len(), 2, "once at 5 s, once at 10 s");
    }

    #[test]
    fn notes_are_bounded_and_an_interval_of_zero_reports_nothing() {
        let usage = Usage::new(Duration::from_secs(1), 3);
        for n in 0..10u8 {
            usage.note(TokenHash([n; 32]), &Entry::new(VerifyResponse::default(), u64::MAX, 0), 2 * SECOND);
        }
        assert_eq!(usage.take().len(), 3);
        let off = Usage::new(Duration::ZERO, 3);
        off.note(TokenHash([1; 32]), &Entry::new(VerifyResponse::default(), u64::MAX, 0), 100 * SECOND);
        assert!(off.take().is_empty());
    }
}
