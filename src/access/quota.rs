//! Quotas per namespace, from the access file's `quotas:` section:
//!
//! ```yaml
//! quotas:
//!   default:                 # every namespace without its own entry
//!     max_tasks: 1000        # tasks in the store (across replicas)
//!     max_streams: 16        # result streams open at once
//!     calls_per_second: 50   # token bucket, per process
//!     burst: 100             # the bucket's size (default: calls_per_second)
//!     min_interval: 10s      # shortest schedule (ms, s, m, h)
//!   namespaces:
//!     team-a.:
//!       max_tasks: 100       # fields left out come from default
//! ```
//!
//! Quotas bind callers confined to a namespace; a token without one is an
//! operator's and only the server-wide limits apply to it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// One namespace's quotas; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quota {
    /// Most tasks in the namespace.
    pub max_tasks: Option<usize>,
    /// Most result streams open at once.
    pub max_streams: Option<usize>,
    /// Calls per second (steady rate of the token bucket).
    pub calls_per_second: Option<f64>,
    /// Calls allowed at once after a quiet spell (the bucket's size).
    pub burst: Option<f64>,
    /// Shortest time between two fires of a task.
    pub min_interval: Option<Duration>,
}

impl Quota {
    /// `self`, with the fields it leaves out taken from `default`.
    fn over(self, default: Quota) -> Quota {
        Quota {
            max_tasks: self.max_tasks.or(default.max_tasks),
            max_streams: self.max_streams.or(default.max_streams),
            calls_per_second: self.calls_per_second.or(default.calls_per_second),
            burst: self.burst.or(default.burst),
            min_interval: self.min_interval.or(default.min_interval),
        }
    }
}

/// The quotas section.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    default: Quota,
    namespaces: HashMap<String, Quota>,
}

impl Quotas {
    /// The quotas binding `namespace`.
    pub fn of(&self, namespace: &str) -> Quota {
        match self.namespaces.get(namespace) {
            Some(own) => own.over(self.default),
            None => self.default,
        }
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQuotas {
    #[serde(default)]
    default: Option<RawQuota>,
    #[serde(default)]
    namespaces: HashMap<String, RawQuota>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    #[serde(default)]
    max_tasks: Option<usize>,
    #[serde(default)]
    max_streams: Option<usize>,
    #[serde(default)]
    calls_per_second: Option<f64>,
    #[serde(default)]
    burst: Option<f64>,
    #[serde(default)]
    min_interval: Option<String>,
}

impl RawQuotas {
    pub(super) fn check(self) -> Result<Quotas, String> {
        let default = match self.default {
            Some(raw) => raw.check("quotas.default")?,
            None => Quota::default(),
        };
        let mut namespaces = HashMap::new();
        for (ns, raw) in self.namespaces {
            let at = format!("quotas.namespaces[{ns:?}]");
            super::file::check_namespace(&ns).map_err(|r| format!("{at}: {r}"))?;
            namespaces.insert(ns, raw.check(&at)?);
        }
        Ok(Quotas {
            default,
            namespaces,
        })
    }
}

impl RawQuota {
    fn check(self, at: &str) -> Result<Quota, String> {
        for (name, rate) in [
            ("calls_per_second", self.calls_per_second),
            ("burst", self.burst),
        ] {
            if let Some(rate) = rate
                && !(rate.is_finite() && rate >= MIN_RATE)
            {
                return Err(format!(
                    "{at}.{name}: must be at least {MIN_RATE}, got {rate}"
                ));
            }
        }
        let min_interval = match &self.min_interval {
            Some(text) => {
                Some(parse_duration(text).map_err(|r| format!("{at}.min_interval: {r}"))?)
            }
            None => None,
        };
        Ok(Quota {
            max_tasks: self.max_tasks,
            max_streams: self.max_streams,
            calls_per_second: self.calls_per_second,
            burst: self.burst,
            min_interval,
        })
    }
}

/// Smallest `calls_per_second` and `burst`: one call in 1000 s.
const MIN_RATE: f64 = 0.001;

/// `500ms`, `10s`, `1.5m`, `2h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))
        .ok_or_else(|| format!("{text:?} needs a unit: ms, s, m or h"))?;
    let seconds = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|n| Duration::try_from_secs_f64(n * seconds).ok())
        .ok_or_else(|| format!("{text:?} is not a duration"))
}

/// A token bucket per namespace, in this process: `calls_per_second` is
/// documented as per process (replicas each grant it).
#[derive(Debug, Default)]
pub struct RateLimits {
    /// Tokens left and when they were counted, per namespace. Held for a
    /// few arithmetic operations, never across an await.
    buckets: Mutex<HashMap<Arc<str>, (f64, Instant)>>,
}

impl RateLimits {
    /// Takes one token for `namespace` under `quota`; when none is left,
    /// how long until one is.
    pub fn take(&self, namespace: &Arc<str>, quota: &Quota, now: Instant) -> Result<(), Duration> {
        let Some(rate) = quota.calls_per_second else {
            return Ok(());
        };
        let size = quota.burst.unwrap_or(rate).max(1.0);
        let mut buckets = match self.buckets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (tokens, at) = buckets.entry(namespace.clone()).or_insert((size, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(size);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            // Bounded by 1 / MIN_RATE: the rate was checked when read.
            Err(Duration::try_from_secs_f64((1.0 - *tokens) / rate).unwrap_or(Duration::MAX))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(yaml: &str) -> Result<Quotas, String> {
        let raw: RawQuotas = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        raw.check()
    }

    #[test]
    fn a_namespace_takes_what_it_leaves_out_from_the_default() {
        let q = quotas(
            "default: {max_tasks: 10, calls_per_second: 5, min_interval: 10s}\n\
             namespaces:\n  team-a.: {max_tasks: 2, min_interval: 500ms}\n",
        )
        .expect("valid");
        let a = q.of("team-a.");
        assert_eq!(a.max_tasks, Some(2));
        assert_eq!(a.calls_per_second, Some(5.0));
        assert_eq!(a.min_interval, Some(Duration::from_millis(500)));
        assert_eq!(q.of("team-b.").max_tasks, Some(10));
        assert_eq!(q.of("team-b.").min_interval, Some(Duration::from_secs(10)));
    }

    #[test]
    fn bad_quotas_are_refused_naming_them() {
        for (yaml, expected) in [
            (
                "default: {calls_per_second: 0}",
                "quotas.default.calls_per_second",
            ),
            ("default: {min_interval: 10}", "quotas.default.min_interval"),
            ("default: {min_interval: 3d}", "the unit must be"),
            (
                "namespaces: {\"a b\": {max_tasks: 1}}",
                "quotas.namespaces[\"a b\"]",
            ),
            ("default: {max_taks: 1}", "max_taks"),
            (
                "default: {calls_per_second: 1e-20}",
                "must be at least 0.001",
            ),
            ("namespaces: {team-a: {max_tasks: 1}}", "must end with"),
        ] {
            let error = quotas(yaml).expect_err(yaml);
            assert!(
                error.contains(expected),
                "{error:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn the_bucket_allows_its_burst_then_its_rate() {
        let limits = RateLimits::default();
        let quota = Quota {
            calls_per_second: Some(2.0),
            burst: Some(3.0),
            ..Quota::default()
        };
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a."), Arc::from("b."));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limits.take(&a, &quota, t0), Ok(()));
        }
        let wait = limits.take(&a, &quota, t0).expect_err("empty");
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(
            limits.take(&b, &quota, t0),
            Ok(()),
            "another namespace is unaffected"
        );
        assert_eq!(
            limits.take(&a, &quota, t0 + Duration::from_millis(500)),
            Ok(())
        );
        assert!(
            limits
                .take(&a, &quota, t0 + Duration::from_millis(500))
                .is_err()
        );
    }
}
