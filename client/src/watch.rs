//! Follows tokend's `Watch` stream into the cache.
//!
//! A small state machine in the manner of kube-runtime's watcher:
//!
//! * **Following** a stream: every message goes to [`Cache::apply`]
//!   (changes, resets, and the proof of freshness heartbeats give) and its
//!   position is kept.
//! * The stream ends (tokend shutting down), fails, or is silent for longer
//!   than `max_staleness` (a dead connection the transport has not noticed):
//!   **reconnect**, resuming from the last position — tokend answers a reset
//!   when it cannot resume (a restart, another replica) and the cache drops
//!   everything.
//! * Reconnecting fails: **back off** (50 ms doubling to 2 s); the cache goes
//!   stale meanwhile and every check goes to the RPC.

use std::{sync::Arc, time::Duration};

use tokio::sync::oneshot;
use tonic::{Status, transport::Channel};

use crate::{
    cache::Cache,
    pb::{WatchRequest, verify_service_client::VerifyServiceClient},
};

/// How a stream ended.
enum Ended {
    /// tokend closed it (shutdown): reconnect at once.
    Closed,
    /// No message within the silence limit.
    Silent,
    /// The call or the stream failed.
    Failed(Status),
}

/// Follows the stream until the verifier is dropped; sends on `first` once
/// the first message is applied.
pub(crate) async fn follow(
    cache: Arc<Cache>,
    mut client: VerifyServiceClient<Channel>,
    silence: Duration,
    first: oneshot::Sender<()>,
) {
    let mut first = Some(first);
    let mut resume = String::new();
    let mut failures = 0u32;
    loop {
        let (ended, heard) = stream(&cache, &mut client, &mut resume, silence, &mut first).await;
        if heard {
            failures = 0;
        }
        match ended {
            Ended::Closed => tracing::debug!("tokend ended the watch stream; reconnecting"),
            Ended::Silent => tracing::warn!(?silence, "tokend's watch stream fell silent; reconnecting"),
            Ended::Failed(status) if failures == 0 => {
                tracing::warn!(code = ?status.code(), message = status.message(), "tokend's watch stream failed; reconnecting")
            }
            Ended::Failed(status) => tracing::debug!(code = ?status.code(), failures, "watch reconnect failed"),
        }
        if failures > 0 {
            tokio::time::sleep(backoff(failures)).await;
        }
        failures = failures.saturating_add(1);
    }
}

/// One stream: from the call to its end. Also says whether any message came.
async fn stream(
    cache: &Cache,
    client: &mut VerifyServiceClient<Channel>,
    resume: &mut String,
    silence: Duration,
    first: &mut Option<oneshot::Sender<()>>,
) -> (Ended, bool) {
    let request = WatchRequest { resume_token: resume.clone() };
    let mut messages = match tokio::time::timeout(silence, client.watch(request)).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return (Ended::Failed(status), false),
        Err(_) => return (Ended::Silent, false),
    };
    let mut heard = false;
    loop {
        match tokio::time::timeout(silence, messages.message()).await {
            Ok(Ok(Some(message))) => {
                cache.apply(&message);
                *resume = message.resume_token;
                heard = true;
                if let Some(first) = first.take() {
                    let _ = first.send(());
                }
            }
            Ok(Ok(None)) => return (Ended::Closed, heard),
            Ok(Err(status)) => return (Ended::Failed(status), heard),
            Err(_) => return (Ended::Silent, heard),
        }
    }
}

/// The pause before reconnect attempt `failures` (1-based).
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(50 << (failures.clamp(1, 7) - 1)).min(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        assert_eq!(backoff(1), Duration::from_millis(50));
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(6), Duration::from_millis(1_600));
        assert_eq!(backoff(7), Duration::from_secs(2));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(2));
    }
}
