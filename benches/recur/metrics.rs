//! Scenario 9, metrics: what recording one duration into a histogram costs
//! on the firing and result paths, for the two crates the `/metrics`
//! histograms could be kept with:
//!
//! - *prometheus-client* (what recur uses): its `Histogram`, a short
//!   uncontended lock per observation;
//! - *metrics + metrics-exporter-prometheus*: a histogram handle from the
//!   exporter's recorder (registered once, as a hot path would), which
//!   appends every sample to a lock-free buffer drained at scrape time.
//!
//! (A histogram of atomics of recur's own, measured the same way at
//! 576f32d, cost the same as prometheus-client's and was dropped for it:
//! benches/README.md, "Metrics".)
//!
//! Each on one thread, then on two at once (a herd's runs end on both
//! worker threads), observing durations spread over the buckets. Reported:
//! nanoseconds per observation as each thread pays it (wall time / its
//! observations).

use std::{
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use prometheus_client::metrics::histogram::Histogram as PcHistogram;
use serde_json::json;

use crate::{
    cli::Plan,
    report::{Report, Row},
};

/// The implementations compared.
#[derive(Debug, Clone, Copy)]
enum Kind {
    PrometheusClient,
    MetricsExporter,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::PrometheusClient => "prometheus-client Histogram",
            Kind::MetricsExporter => "metrics-exporter-prometheus histogram",
        }
    }
}

/// recur's bucket bounds in seconds (`stats::BUCKETS`), given to both.
const BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A duration for observation `i`: 1 µs to about 4 s, so every bucket sees use.
fn sample(i: usize) -> Duration {
    Duration::from_micros(1 << (i % 22))
}

pub fn run(plan: &Plan, report: &mut Report) {
    let n = plan.metrics_observations;
    for kind in [Kind::PrometheusClient, Kind::MetricsExporter] {
        for threads in [1, 2] {
            let ns = measure(kind, threads, n);
            println!(
                "metrics: {} on {threads} thread(s): {ns:.1} ns per observation",
                kind.name()
            );
            report.add(Row {
                scenario: "metrics".into(),
                subject: kind.name().into(),
                case: format!("{threads} thread{}", if threads == 1 { "" } else { "s" }),
                measure: "ns per observation".into(),
                latency: None,
                count: format!("{ns:.1} ns"),
                missed_doubled: String::new(),
                cpu_percent: None,
                peak_rss: None,
                bytes_per_task: None,
                notes: vec![format!("{n} observations per thread")],
                json: json!({
                    "implementation": kind.name(),
                    "threads": threads,
                    "observations_per_thread": n,
                    "ns_per_observation": ns,
                }),
            });
        }
    }
}

/// Nanoseconds per observation, as one of `threads` threads pays it.
fn measure(kind: Kind, threads: usize, n: usize) -> f64 {
    let observe: Arc<dyn Fn(Duration) + Send + Sync> = match kind {
        Kind::PrometheusClient => {
            let h = PcHistogram::new(BOUNDS);
            Arc::new(move |d: Duration| h.observe(d.as_secs_f64()))
        }
        Kind::MetricsExporter => {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&BOUNDS)
                .expect("buckets")
                .build_recorder();
            let key = metrics::Key::from_name("run_start_lateness_seconds");
            let metadata = metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);
            let h = metrics::Recorder::register_histogram(&recorder, &key, &metadata);
            // The recorder keeps the samples until a scrape drains them;
            // it stays alive (and unscraped) for the whole case, as a
            // server between two scrapes.
            let keep = Arc::new(recorder);
            Arc::new(move |d: Duration| {
                let _ = &keep;
                h.record(d.as_secs_f64())
            })
        }
    };
    let start = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let observe = observe.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let began = Instant::now();
                for i in 0..n {
                    observe(sample(i + t));
                }
                began.elapsed()
            })
        })
        .collect();
    let slowest = workers
        .into_iter()
        .map(|w| w.join().expect("worker"))
        .max()
        .unwrap_or_default();
    slowest.as_nanos() as f64 / n as f64
}
