//! The cooldown for abusive peers (`--abuse-cooldown`).
//!
//! hyper's HTTP/2 server answers a flood on one connection (HTTP/2 rapid
//! reset, CVE-2023-44487; header and CONTINUATION floods) with GOAWAY
//! ENHANCE_YOUR_CALM and closes it. That bounds what one connection costs,
//! not what an attacker who reconnects at once costs: thousands of new
//! connections a second, each with its TCP and HTTP/2 set-up. So tokend
//! counts those GOAWAYs per peer address, and an address that earns
//! [`STRIKES`] of them within [`WINDOW`] is cooled down: the listening
//! sockets' filter (`filter`) drops its SYNs in the kernel, and any of its
//! connections that still reach accept are closed there, for the cooldown.
//! Its connections already open are served as before. Nothing a
//! well-behaved client does earns a strike, and one or two stray floods do
//! not start a cooldown.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpListener;

use super::filter;

/// GOAWAY ENHANCE_YOUR_CALM answers that start a cooldown…
pub const STRIKES: u32 = 10;
/// …when they fall within this long.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Most addresses remembered; past it, expired ones are forgotten first and
/// new ones are not recorded.
const MAX_PEERS: usize = 4096;

/// One address's record.
#[derive(Debug, Clone, Copy)]
struct Record {
    window_start: Instant,
    strikes: u32,
    cool_until: Option<Instant>,
}

/// Strikes and cooldowns by peer address.
#[derive(Debug)]
pub struct Cooldown {
    duration: Duration,
    peers: Mutex<HashMap<IpAddr, Record>>,
    /// Addresses in the table: accept skips the lock when it is empty.
    len: AtomicUsize,
    /// Connections closed with GOAWAY ENHANCE_YOUR_CALM.
    abusive: Counter,
    /// New connections closed at once during a cooldown.
    cooled: Counter,
    /// The listening sockets whose filter lists the peers cooling down.
    listeners: Mutex<Vec<Weak<TcpListener>>>,
}

impl Cooldown {
    /// A cooldown of `duration` (zero: strikes are counted, nobody is
    /// cooled down).
    pub fn new(duration: Duration, abusive: Counter, cooled: Counter) -> Cooldown {
        Cooldown {
            duration,
            peers: Mutex::default(),
            len: AtomicUsize::new(0),
            abusive,
            cooled,
            listeners: Mutex::default(),
        }
    }

    /// Keeps `listener`'s socket filter in step with the cooldowns, for as
    /// long as the listener lives.
    pub fn guard(&self, listener: &Arc<TcpListener>) {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(listener));
        self.refresh();
    }

    /// Puts the peers cooling down now into every listener's filter.
    fn refresh(&self) {
        let now = Instant::now();
        let cooling: Vec<IpAddr> = {
            let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let cooling = peers.iter().filter(|(_, r)| r.cool_until.is_some_and(|until| now < until));
            cooling.map(|(ip, _)| *ip).take(filter::MAX_ADDRESSES).collect()
        };
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        listeners.retain(|weak| match weak.upgrade() {
            Some(listener) => {
                if let Err(e) = filter::install(&listener, &cooling) {
                    // Still closed at accept: slower, not unsafe.
                    tracing::warn!(error = %e, "cannot update the listening socket's filter");
                }
                true
            }
            None => false,
        });
    }

    /// Whether a new connection from `ip` must be closed at once.
    pub fn refuses(&self, ip: IpAddr) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let now = Instant::now();
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let cooling = peers.get(&ip.to_canonical()).and_then(|r| r.cool_until).is_some_and(|until| now < until);
        if cooling {
            self.cooled.inc();
        }
        cooling
    }

    /// Records that a connection from `ip` was closed with GOAWAY
    /// ENHANCE_YOUR_CALM.
    pub fn strike(self: &Arc<Self>, ip: IpAddr) {
        self.abusive.inc();
        let ip = ip.to_canonical();
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(&ip) {
            peers.retain(|_, r| now.duration_since(r.window_start) < WINDOW || r.cool_until.is_some_and(|u| now < u));
            if peers.len() >= MAX_PEERS {
                return;
            }
        }
        let record = peers.entry(ip).or_insert(Record { window_start: now, strikes: 0, cool_until: None });
        if now.duration_since(record.window_start) >= WINDOW {
            *record = Record { window_start: now, strikes: 0, cool_until: record.cool_until };
        }
        record.strikes += 1;
        let cooling = record.cool_until.is_some_and(|until| now < until);
        let starts = record.strikes >= STRIKES && !cooling && !self.duration.is_zero();
        if starts {
            record.cool_until = Some(now + self.duration);
            tracing::warn!(
                peer = %ip, strikes = record.strikes, window = ?WINDOW, cooldown = ?self.duration,
                "refusing new connections from an abusive peer for --abuse-cooldown \
                 (its connections were answered GOAWAY ENHANCE_YOUR_CALM)"
            );
        }
        self.len.store(peers.len(), Ordering::Relaxed);
        drop(peers);
        if starts {
            self.refresh();
            // And again once it is over, so the filter lets the peer back in.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (cooldown, after) = (Arc::downgrade(self), self.duration + Duration::from_millis(10));
                runtime.spawn(async move {
                    tokio::time::sleep(after).await;
                    if let Some(cooldown) = cooldown.upgrade() {
                        cooldown.refresh();
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strikes_within_the_window_start_a_cooldown_for_that_address_only() {
        let cooldown = Arc::new(Cooldown::new(Duration::from_secs(60), Counter::default(), Counter::default()));
        let (abuser, neighbour): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(!cooldown.refuses(abuser));
        for _ in 0..STRIKES - 1 {
            cooldown.strike(abuser);
        }
        assert!(!cooldown.refuses(abuser), "fewer strikes than the threshold");
        cooldown.strike(abuser);
        assert!(cooldown.refuses(abuser));
        // The IPv4-mapped form is the same peer.
        assert!(cooldown.refuses("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!cooldown.refuses(neighbour));
        assert_eq!((cooldown.abusive.get(), cooldown.cooled.get()), (u64::from(STRIKES), 2));
    }

    #[test]
    fn a_zero_cooldown_counts_but_never_refuses() {
        let cooldown = Arc::new(Cooldown::new(Duration::ZERO, Counter::default(), Counter::default()));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..STRIKES * 2 {
            cooldown.strike(ip);
        }
        assert!(!cooldown.refuses(ip));
        assert_eq!(cooldown.abusive.get(), u64::from(STRIKES * 2));
    }
}
