//! The thundering herd: N tasks whose slots all fall on the same instant.
//! Measures how late runs start (handler start - nominal slot), how long the
//! whole herd takes, registration throughput, and resident memory.
//!
//! Run: `cargo bench --bench herd -- 10000 100000` (release build). Numbers
//! are recorded in docs/benchmarks.md.

#[path = "support/rss.rs"]
mod rss;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::Utc;
use recur::{
    HandlerContext, HandlerError, TaskHandler,
    action::{
        Actions,
        http::{HttpRunner, HttpSettings},
    },
    scheduler::{
        Scheduler, SchedulerSettings,
        clock::Clock,
        schedule::{Limits, Schedule, ScheduleInput},
    },
    store::memory::{MemoryStore, Retention},
    task::{Action, CustomAction, OverlapPolicy, RetryPolicy, TaskId, TaskSpec},
};
use tokio_util::sync::CancellationToken;

struct Probe {
    done: AtomicUsize,
    lateness_us: Mutex<Vec<i64>>,
}

struct ProbeHandler(Arc<Probe>);

#[recur::async_trait]
impl TaskHandler for ProbeHandler {
    async fn run(&self, ctx: HandlerContext) -> Result<Bytes, HandlerError> {
        let late = (Utc::now() - ctx.scheduled_at)
            .num_microseconds()
            .unwrap_or(i64::MAX);
        self.0.lateness_us.lock().unwrap().push(late);
        self.0.done.fetch_add(1, Ordering::SeqCst);
        Ok(Bytes::new())
    }
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn herd(n: usize) {
    let rss_before = rss::rss_mib();
    let probe = Arc::new(Probe {
        done: AtomicUsize::new(0),
        lateness_us: Mutex::new(Vec::with_capacity(n)),
    });
    let mut handlers: HashMap<String, Arc<dyn TaskHandler>> = HashMap::new();
    handlers.insert("probe".into(), Arc::new(ProbeHandler(probe.clone())));
    let http = HttpRunner::new(HttpSettings {
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        total_timeout: Duration::from_secs(1),
        max_redirects: 0,
        output_cap: 1024,
    })
    .expect("http client");
    let store = Arc::new(MemoryStore::new(Retention {
        per_task: 10,
        total: 1_000_000,
        max_bytes: usize::MAX,
    }));
    let scheduler = Scheduler::new(
        store,
        Actions::new(http, None, handlers, 1024),
        Clock::System,
        SchedulerSettings {
            max_tasks: n + 1,
            terminal_retention: Duration::from_secs(3600),
            subscriber_bound: 131_072,
            max_runs_in_flight: 4096,
        },
        CancellationToken::new(),
    );
    scheduler.start().await.expect("start");

    // Every task's first slot: the same instant, far enough out to register all.
    let lead = Duration::from_secs_f64(2.0 + n as f64 / 20_000.0);
    let slot = Utc::now() + chrono::Duration::from_std(lead).unwrap();
    let register_started = Instant::now();
    for i in 0..n {
        let schedule = Schedule::from_input(
            ScheduleInput {
                every: Some(Duration::from_secs(3600)),
                start_at: Some(slot),
                ..Default::default()
            },
            &Limits {
                min_interval: Duration::from_secs(1),
            },
        )
        .expect("schedule");
        let spec = TaskSpec {
            schedule,
            action: Action::Custom(CustomAction {
                kind: "probe".into(),
                payload: Bytes::new(),
            }),
            timeout: Duration::from_secs(30),
            overlap: OverlapPolicy::Skip,
            retry: RetryPolicy::default(),
            labels: Default::default(),
        };
        scheduler
            .register(
                Some(TaskId::parse(&format!("herd-{i}")).unwrap()),
                spec,
                None,
            )
            .await
            .expect("register");
    }
    let registration = register_started.elapsed();
    assert!(
        Utc::now() < slot,
        "registration overran the slot; raise the lead"
    );
    let rss_registered = rss::rss_mib();

    // Wait for the herd (bounded).
    let wait_started = Instant::now();
    while probe.done.load(Ordering::SeqCst) < n {
        assert!(
            wait_started.elapsed() < lead + Duration::from_secs(300),
            "herd did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_done = (Utc::now() - slot).num_milliseconds();
    let mut late = probe.lateness_us.lock().unwrap().clone();
    late.sort_unstable();
    let rss_after = rss::rss_mib();
    println!(
        "herd n={n}: register {:.0}/s ({:.2}s); start lateness p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; all {} runs done {} ms after the slot; RSS {:.0} MiB before, {:.0} MiB registered, {:.0} MiB after runs",
        n as f64 / registration.as_secs_f64(),
        registration.as_secs_f64(),
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        percentile(&late, 1.0),
        n,
        all_done,
        rss_before,
        rss_registered,
        rss_after,
    );
    scheduler.stop(Duration::from_secs(5)).await;
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for n in sizes {
        runtime.block_on(herd(n));
    }
}
