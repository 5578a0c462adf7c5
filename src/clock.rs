//! Wall-clock time as tokend sees it, and a manual clock for tests.
//!
//! Expiry is decided against [`Clock::now`], so tests move time forward
//! explicitly instead of sleeping. The system clock is an enum variant rather
//! than a trait object so the Verify hot path pays no dynamic dispatch.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A point in time: nanoseconds since the Unix epoch (good until 2262, well
/// past the 100-year TTL limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub i64);

impl Time {
    /// Nanoseconds since the Unix epoch.
    pub fn as_nanos(self) -> i64 {
        self.0
    }

    /// Milliseconds since the Unix epoch (what a UUIDv7 carries).
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0 / 1_000_000).unwrap_or(0)
    }

    /// `self + d`, saturating at the end of representable time.
    pub fn saturating_add(self, d: Duration) -> Time {
        let nanos = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Time(self.0.saturating_add(nanos))
    }

    /// Seconds and nanoseconds since the epoch, as a protobuf Timestamp
    /// holds them.
    pub fn to_parts(self) -> (i64, i32) {
        (self.0.div_euclid(1_000_000_000), self.0.rem_euclid(1_000_000_000) as i32)
    }

    /// `self - other`, or zero if `other` is later.
    pub fn saturating_since(self, other: Time) -> Duration {
        Duration::from_nanos(u64::try_from(self.0.saturating_sub(other.0)).unwrap_or(0))
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff[fff[fff]]]Z`, as protobuf's JSON mapping
/// writes a Timestamp: the fraction in 0, 3, 6 or 9 digits (days-to-civil
/// after H. Hinnant).
pub fn rfc3339(seconds: i64, nanos: i32) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let fraction = match nanos {
        0 => String::new(),
        n if n % 1_000_000 == 0 => format!(".{:03}", n / 1_000_000),
        n if n % 1_000 == 0 => format!(".{:06}", n / 1_000),
        n => format!(".{n:09}"),
    };
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The source of "now".
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The operating system's real-time clock.
    #[default]
    System,
    /// A clock that moves only when told to (tests).
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock starting at `start`.
    pub fn manual(start: Time) -> Clock {
        Clock::Manual(Arc::new(AtomicI64::new(start.0)))
    }

    /// The current time.
    #[inline]
    pub fn now(&self) -> Time {
        match self {
            Clock::System => {
                let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                Time(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            }
            Clock::Manual(t) => Time(t.load(Ordering::Acquire)),
        }
    }

    /// Moves a manual clock forward by `d`. No effect on the system clock.
    pub fn advance(&self, d: Duration) {
        if let Clock::Manual(t) = self {
            let nanos = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
            t.fetch_add(nanos, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = Clock::manual(Time(1_000));
        assert_eq!(c.now(), Time(1_000));
        c.advance(Duration::from_nanos(5));
        assert_eq!(c.now(), Time(1_005));
    }

    #[test]
    fn time_arithmetic_saturates() {
        assert_eq!(Time(i64::MAX - 1).saturating_add(Duration::from_secs(1)), Time(i64::MAX));
        assert_eq!(Time(5).saturating_since(Time(10)), Duration::ZERO);
        assert_eq!(Time(10).saturating_since(Time(4)), Duration::from_nanos(6));
    }

    #[test]
    fn rfc3339_writes_protobufs_json_timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_305_600, 0), "2026-11-22T00:00:00Z");
        assert_eq!(rfc3339(951_782_400, 500_000_000), "2000-02-29T00:00:00.500Z");
        assert_eq!(rfc3339(-1, 1_000), "1969-12-31T23:59:59.000001Z");
        assert_eq!(rfc3339(4_102_444_799, 123_456_789), "2099-12-31T23:59:59.123456789Z");
        assert_eq!(Time(-1).to_parts(), (-1, 999_999_999));
    }
}
