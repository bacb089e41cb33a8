//! Percentiles of recorded samples, the one way every scenario and peer
//! summarises them (nearest rank, so p99.9 of 10 samples is the max).

use serde_json::{Value, json};

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    /// Samples summarised.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Percentiles {
    /// Summarises samples given in microseconds; None when there are none.
    pub fn of_micros(samples: &mut [i64]) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = |p: f64| {
            let index = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[index] as f64 / 1000.0
        };
        Some(Percentiles {
            count: samples.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            p999: rank(0.999),
            max: samples[samples.len() - 1] as f64 / 1000.0,
        })
    }

    /// Reads the summary a peer printed (`{"count", "p50_ms", ...}`).
    pub fn from_json(v: &Value) -> Option<Percentiles> {
        Some(Percentiles {
            count: v.get("count")?.as_u64()? as usize,
            p50: v.get("p50_ms")?.as_f64()?,
            p99: v.get("p99_ms")?.as_f64()?,
            p999: v.get("p999_ms")?.as_f64()?,
            max: v.get("max_ms")?.as_f64()?,
        })
    }

    /// The same shape as `from_json` reads.
    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "p50_ms": self.p50,
            "p99_ms": self.p99,
            "p999_ms": self.p999,
            "max_ms": self.max,
        })
    }
}
