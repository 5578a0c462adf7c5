//! A fixed-bucket histogram that records with atomic adds only.
//!
//! prometheus-client's `Histogram` takes a mutex on every observation.
//! Verify records one observation per call from every worker thread, so
//! that mutex is contended exactly when the server is busiest, and a worker
//! that parks on it delays every call queued behind it. Here an
//! observation is a short bucket search and two relaxed atomic adds; a
//! scrape reads the counters without stopping writers (a scrape may see an
//! observation's count before its sum, which Prometheus tolerates).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

/// Upper bounds, in seconds, of the latency buckets: 10 µs to 2.5 s
/// (Verify handlers take microseconds, durable writes milliseconds).
pub const BUCKETS: [f64; 16] =
    [1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5];

/// [`BUCKETS`] in nanoseconds, so `observe` compares integers.
const BOUNDS_NANOS: [u64; 16] = [
    10_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
];

#[derive(Debug, Default)]
struct Counts {
    /// Observations per bucket (not cumulative), plus one for +Inf.
    buckets: [AtomicU64; 17],
    sum_nanos: AtomicU64,
}

/// A latency histogram over [`BUCKETS`]; clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct AtomicHistogram(Arc<Counts>);

impl AtomicHistogram {
    /// Records one duration.
    #[inline]
    pub fn observe(&self, elapsed: std::time::Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Per-bucket counts: the encoder makes them cumulative itself.
        let mut buckets = [(0.0, 0); 17];
        for (i, (slot, count)) in buckets.iter_mut().zip(&self.0.buckets).enumerate() {
            *slot = (BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), count.load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bounds_match_the_buckets() {
        for (bound, secs) in BOUNDS_NANOS.iter().zip(BUCKETS) {
            assert_eq!(*bound, Duration::from_secs_f64(secs).as_nanos() as u64);
        }
    }

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let h = AtomicHistogram::default();
        h.observe(Duration::from_micros(10)); // on the 10 µs bound: le="0.00001"
        h.observe(Duration::from_micros(11));
        h.observe(Duration::from_secs(3)); // +Inf
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("t", "test", h);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("t_bucket{le=\"0.00001\"} 1\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"0.00005\"} 2\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"2.5\"} 2\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("t_count 3\n"), "{text}");
        assert!(text.contains("t_sum 3.000021\n"), "{text}");
    }
}
