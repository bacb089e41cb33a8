//! A fixed-bucket histogram of durations that the firing and result paths
//! can feed without a lock: one relaxed `fetch_add` on the bucket, one on
//! the count and one on the sum. prometheus-client's own `Histogram` takes
//! a write lock per observation, and the runs of a herd observe from both
//! worker threads at once (benches/README.md, "Metrics", has both costs).
//! Only `/metrics` reads it, as a snapshot whose parts may be a few
//! observations apart, which Prometheus tolerates (it never reads a
//! histogram atomically from any client library).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Upper bounds of the buckets in seconds: resolving 0.1 ms (a store step
/// on Redis) to 10 s (a slow run or a long stall), about three per decade.
pub(crate) const BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The same bounds in nanoseconds, compared on the hot path without floats.
const BOUNDS_NANOS: [u64; 16] = [
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
    5_000_000_000,
    10_000_000_000,
];

/// Observations by bucket (not cumulative; the last one is +Inf), their
/// count and their sum.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    count: AtomicU64,
    /// Nanoseconds: 584 years of observed time before it wraps.
    sum_nanos: AtomicU64,
}

/// What `/metrics` prints of a [`Histogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Sum of the observations, in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
    /// `(upper bound, observations in this bucket alone)`, +Inf last:
    /// prometheus-client's encoder makes them cumulative as it writes.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// Counts one observation of `value`.
    pub fn observe(&self, value: Duration) {
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        // 16 bounds: a partition point is four comparisons.
        let bucket = BOUNDS_NANOS.partition_point(|bound| *bound < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The buckets, count and sum as they are now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            // The buckets' total rather than `count`: read at another
            // instant, count could disagree with the +Inf bucket, which
            // Prometheus's histogram_quantile takes as the total.
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree() {
        for (seconds, nanos) in BOUNDS.iter().zip(BOUNDS_NANOS) {
            assert_eq!((seconds * 1e9).round() as u64, nanos);
        }
    }

    #[test]
    fn an_observation_lands_in_the_first_bucket_that_holds_it() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100)); // exactly on the first bound
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(11)); // beyond the last bound
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets[0], (0.0001, 1));
        assert_eq!(s.buckets[1], (0.00025, 1));
        assert_eq!(s.buckets[4], (0.0025, 0));
        assert_eq!(s.buckets[5], (0.005, 1));
        assert_eq!(s.buckets[15], (10.0, 0));
        assert_eq!(s.buckets[16].1, 1);
        assert!(s.buckets[16].0.is_infinite());
        assert!((s.sum - 11.003201).abs() < 1e-9, "{}", s.sum);
    }
}
