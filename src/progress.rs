//! Progress of long start-up work, for the log.
//!
//! Loading ten million tokens takes tens of seconds, all of it NOT_SERVING;
//! the operator watching a replica come up needs to see that it moves, how
//! fast, and when it will be done. [`Progress`] counts items and, every
//! [`INTERVAL`] or so, hands back a [`Report`] to log: items so far, the
//! rate, and the time left when the total is known (a store's estimate).

use std::time::{Duration, Instant};

/// How often a report is due.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// The clock is read once per this many items: counting stays a few
/// nanoseconds per token.
const CHECK_EVERY: u64 = 1 << 16;

/// Counts items and says when a report is due.
#[derive(Debug)]
pub struct Progress {
    expected: Option<u64>,
    interval: Duration,
    started: Instant,
    last: Instant,
    done: u64,
}

/// Where the work stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    /// Items so far.
    pub done: u64,
    /// Items per second since the start.
    pub per_second: u64,
    /// Time left at that rate, when the total is known and not reached.
    pub left: Option<Duration>,
}

impl Progress {
    /// Progress towards `expected` items (if known), reported every
    /// `interval`.
    pub fn new(expected: Option<u64>, interval: Duration) -> Progress {
        let now = Instant::now();
        Progress { expected, interval, started: now, last: now, done: 0 }
    }

    /// Counts one item; returns a report when one is due.
    #[inline]
    pub fn step(&mut self) -> Option<Report> {
        self.done += 1;
        if !self.done.is_multiple_of(CHECK_EVERY) {
            return None;
        }
        let now = Instant::now();
        if now.duration_since(self.last) < self.interval {
            return None;
        }
        self.last = now;
        Some(self.report(now))
    }

    fn report(&self, now: Instant) -> Report {
        let seconds = now.duration_since(self.started).as_secs_f64().max(1e-9);
        let rate = self.done as f64 / seconds;
        let left = self
            .expected
            .filter(|expected| *expected > self.done && rate > 0.0)
            .map(|expected| Duration::from_secs_f64((expected - self.done) as f64 / rate));
        Report { done: self.done, per_second: rate as u64, left }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_due_after_the_interval_and_estimates_the_rest() {
        let mut progress = Progress::new(Some(4 * CHECK_EVERY), Duration::ZERO);
        let reports: Vec<Report> = (0..3 * CHECK_EVERY).filter_map(|_| progress.step()).collect();
        assert_eq!(reports.iter().map(|r| r.done).collect::<Vec<_>>(), [CHECK_EVERY, 2 * CHECK_EVERY, 3 * CHECK_EVERY]);
        let last = reports[2];
        assert!(last.per_second > 0);
        // A quarter is left, at the rate so far: a third of the time taken.
        let left = last.left.unwrap().as_secs_f64();
        let taken = 3.0 * CHECK_EVERY as f64 / last.per_second as f64;
        assert!((left - taken / 3.0).abs() <= taken / 3.0 * 0.01 + 1e-6, "{left} vs {taken}");
    }

    #[test]
    fn no_report_before_the_interval_and_no_estimate_without_a_total() {
        let mut quiet = Progress::new(Some(10), Duration::from_secs(3600));
        assert!((0..2 * CHECK_EVERY).all(|_| quiet.step().is_none()));
        let mut unknown = Progress::new(None, Duration::ZERO);
        let report = (0..CHECK_EVERY).filter_map(|_| unknown.step()).next().unwrap();
        assert_eq!(report.left, None);
        // Past an estimate that was too low: no time left to tell.
        let mut under = Progress::new(Some(1), Duration::ZERO);
        assert_eq!((0..CHECK_EVERY).filter_map(|_| under.step()).next().unwrap().left, None);
    }
}
