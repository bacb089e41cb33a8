//! What `/metrics` shows, in the OpenMetrics text format (which Prometheus
//! scrapes), encoded by prometheus-client from values read at scrape time:
//! the engine's counters and histograms ([`crate::stats`]), the result
//! streams, the Redis pool, and a scan of the store for tasks by state (and,
//! with `per_task`, a few series per task). Nothing here runs on the firing
//! or result paths; those only bump the atomics in `stats`.
//!
//! Labels never carry task ids unless `per_task` is set: a series per task
//! is what makes a Prometheus server fall over at 100,000 tasks.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use chrono::{DateTime, Utc};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge, histogram::Histogram},
    registry::Registry,
};
use tokio::time::Instant;

use crate::{
    redis_pool::{PoolGauges, RedisPool},
    results::stream::StreamGauge,
    scheduler::{Scheduler, schedule::Cadence},
    stats::{NOTHING_ARMED, OUTCOMES, SkipReason, Stats, StoreOp},
    store::{StoreError, TaskFilter},
    task::{TaskRecord, TaskState},
};

/// How old the scan of the store may be before a scrape makes a new one.
/// Counting tasks by state reads every task; on a Redis store of 100,000
/// tasks that is a second of Redis's time, not to be spent on every scrape
/// of every replica.
pub(crate) const SCAN_EVERY: Duration = Duration::from_secs(10);

/// Tasks read per page of the scan.
const SCAN_PAGE: usize = 1000;

/// The states in the order they are shown, with their labels.
const STATES: [(TaskState, &str); 4] = [
    (TaskState::Active, "active"),
    (TaskState::Paused, "paused"),
    (TaskState::Cancelled, "cancelled"),
    (TaskState::Completed, "completed"),
];

/// Renders `/metrics` for one server.
pub(crate) struct Exporter {
    scheduler: Scheduler,
    pool: Option<RedisPool>,
    streams: StreamGauge,
    /// Adds the per-task series.
    per_task: bool,
    /// The last scan and when it was made. An async mutex on purpose:
    /// scrapes that arrive during a scan wait for it and share it instead
    /// of scanning the store again.
    scan: tokio::sync::Mutex<Option<(Instant, Arc<Scan>)>>,
}

/// What a scan of the store found.
#[derive(Debug, Default)]
struct Scan {
    /// Tasks by state, in the order of [`STATES`].
    by_state: [u64; STATES.len()],
    /// One row per task, only with `per_task`.
    tasks: Vec<TaskRow>,
}

/// The per-task series of one task.
#[derive(Debug)]
struct TaskRow {
    id: String,
    state: &'static str,
    runs: u64,
    failures: u64,
    skipped: u64,
    consecutive_failures: u64,
    last_success: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    next_run: Option<DateTime<Utc>>,
    /// The schedule's interval, or for cron the gap between its next two
    /// slots: what "has not succeeded within two intervals" compares with.
    interval: Option<Duration>,
}

impl Exporter {
    pub(crate) fn new(
        scheduler: Scheduler,
        pool: Option<RedisPool>,
        streams: StreamGauge,
        per_task: bool,
    ) -> Exporter {
        Exporter {
            scheduler,
            pool,
            streams,
            per_task,
            scan: tokio::sync::Mutex::new(None),
        }
    }

    /// The page a scrape gets. A store that cannot be read leaves the
    /// task series out (and says so in `recur_store_scan_ok`) rather than
    /// failing the scrape: the engine's series matter most in an outage.
    pub(crate) async fn render(&self) -> String {
        let scan = self.scan().await;
        let snapshot = Snapshot {
            stats: self.scheduler.stats().clone(),
            streams_open: self.streams.get() as u64,
            stream_lag_ends: self.streams.lag_ends(),
            pool: self.pool.as_ref().map(RedisPool::gauges),
            scan,
        };
        let mut registry = Registry::with_prefix("recur");
        registry.register_collector(Box::new(snapshot));
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would be ours.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "encoding /metrics failed");
        }
        out
    }

    /// The scan, made again when older than [`SCAN_EVERY`]; None when the
    /// store could not be read.
    async fn scan(&self) -> Option<Arc<Scan>> {
        let mut last = self.scan.lock().await;
        if let Some((at, scan)) = last.as_ref()
            && at.elapsed() < SCAN_EVERY
        {
            return Some(scan.clone());
        }
        match self.scan_store().await {
            Ok(scan) => {
                let scan = Arc::new(scan);
                *last = Some((Instant::now(), scan.clone()));
                Some(scan)
            }
            Err(error) => {
                tracing::warn!(%error, "metrics: cannot read the tasks from the store");
                None
            }
        }
    }

    async fn scan_store(&self) -> Result<Scan, StoreError> {
        let store = self.scheduler.store();
        let filter = TaskFilter::default();
        let mut scan = Scan::default();
        let mut after = None;
        loop {
            let page = store.list_tasks(after.as_ref(), SCAN_PAGE, &filter).await?;
            for task in &page {
                let state = STATES
                    .iter()
                    .position(|(s, _)| *s == task.state)
                    .unwrap_or_default();
                scan.by_state[state] += 1;
                if self.per_task {
                    scan.tasks.push(TaskRow::of(task, STATES[state].1));
                }
            }
            match page.last() {
                Some(last) if page.len() == SCAN_PAGE => after = Some(last.id.clone()),
                _ => return Ok(scan),
            }
        }
    }
}

impl TaskRow {
    fn of(task: &TaskRecord, state: &'static str) -> TaskRow {
        let schedule = &task.spec.schedule;
        let interval = match &schedule.cadence {
            Cadence::Every(every) => Some(*every),
            Cadence::Cron(_) => task.next_run_at.and_then(|next| {
                let after = schedule.next_slot_after(task.created_at, next)?;
                (after - next).to_std().ok()
            }),
        };
        TaskRow {
            id: task.id.to_string(),
            state,
            runs: task.run_count,
            failures: task.health.failure_count,
            skipped: task.skipped_count,
            consecutive_failures: task.health.consecutive_failures,
            last_success: task.health.last_success_at,
            created: task.created_at,
            next_run: task.next_run_at,
            interval,
        }
    }
}

/// Everything one scrape shows, read at its start.
#[derive(Debug)]
struct Snapshot {
    stats: Arc<Stats>,
    streams_open: u64,
    stream_lag_ends: u64,
    pool: Option<PoolGauges>,
    scan: Option<Arc<Scan>>,
}

fn seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

/// A counter family: one series per label set.
fn counter<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (S, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge family: one series per label set.
fn gauge<S: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (S, V)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram family: one histogram per label set.
fn histogram<'h, S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (S, &'h Histogram)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in series {
        h.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One series without labels.
fn one<V>(value: V) -> [([(&'static str, &'static str); 0], V); 1] {
    [([], value)]
}

fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        let stats = &self.stats;

        counter(
            e,
            "fires",
            "Slots fired: each started a run or was skipped (manual triggers not included).",
            one(load(&stats.fired)),
        )?;
        counter(
            e,
            "runs",
            "Runs recorded by this process, by final outcome (scheduled and manual).",
            OUTCOMES
                .iter()
                .zip(&stats.runs_by_outcome)
                .map(|((_, label), n)| ([("outcome", *label)], load(n))),
        )?;
        counter(
            e,
            "skipped_slots",
            "Slots that started no run: overlap (a run was in flight), catch_up (missed while the server was behind). A run dropped before it started is runs_total{outcome=\"skipped\"}.",
            SkipReason::ALL
                .iter()
                .zip(&stats.skipped_by_reason)
                .map(|(reason, n)| ([("reason", reason.label())], load(n))),
        )?;
        counter(
            e,
            "results_lost",
            "Results the store refused after every retry: lost, and logged as such.",
            one(load(&stats.results_lost)),
        )?;
        histogram(
            e,
            "run_start_lateness_seconds",
            "From when a scheduled run was due (slot plus jitter) to its first attempt.",
            one(&stats.start_lateness),
        )?;
        histogram(
            e,
            "run_duration_seconds",
            "From a run's first attempt to its end, retries included.",
            one(&stats.run_duration),
        )?;
        gauge(
            e,
            "runs_in_flight",
            "Runs whose action is going now.",
            one(load(&stats.runs_in_flight)),
        )?;
        gauge(
            e,
            "runs_waiting",
            "Runs dispatched and waiting for a slot under --max-runs-in-flight.",
            one(load(&stats.runs_waiting)),
        )?;
        let next_due = stats.next_due_ms.load(Ordering::Relaxed);
        if next_due != NOTHING_ARMED {
            gauge(
                e,
                "next_fire_timestamp_seconds",
                "When the soonest task armed in this process is due (Unix time).",
                one(next_due as f64 / 1000.0),
            )?;
        }
        gauge(
            e,
            "result_streams_open",
            "StreamResults calls open now.",
            one(self.streams_open),
        )?;
        counter(
            e,
            "result_stream_lag_ends",
            "Result streams ended because the reader fell behind (RESOURCE_EXHAUSTED with a resume cursor).",
            one(self.stream_lag_ends),
        )?;

        // Every operation, used or not (a memory store never takes a
        // lease): a series that exists from the start rates correctly.
        let ops = || {
            StoreOp::ALL
                .iter()
                .map(|op| (*op as usize, [("op", op.label())]))
        };
        histogram(
            e,
            "store_operation_seconds",
            "Latency of each store operation (by the Store method's name), errors included.",
            ops().map(|(i, labels)| (labels, &stats.store_ops[i])),
        )?;
        counter(
            e,
            "store_operation_errors",
            "Store operations that failed because of the store (unreachable, or a record it could not read); not its answers by design (a conflict, an id taken).",
            ops().map(|(i, labels)| (labels, load(&stats.store_errors[i]))),
        )?;

        if let Some(pool) = &self.pool {
            gauge(
                e,
                "redis_pool_connections",
                "Connections of the Redis pool open now (multiplexed: shared, never checked out).",
                one(pool.open as u64),
            )?;
            gauge(
                e,
                "redis_pool_max_connections",
                "Connections the Redis pool keeps at most.",
                one(pool.size as u64),
            )?;
            gauge(
                e,
                "redis_commands_in_flight",
                "Commands and pipelines sent on the pool and not answered yet.",
                one(pool.in_flight),
            )?;
            counter(
                e,
                "redis_errors",
                "Redis failures on the pool: reply (an error reply), connection (a command lost with its connection), connect (a failed reconnect).",
                [
                    ([("kind", "reply")], pool.reply_errors),
                    ([("kind", "connection")], pool.connection_errors),
                    ([("kind", "connect")], pool.connect_errors),
                ],
            )?;
        }

        gauge(
            e,
            "store_scan_ok",
            "1 when the last scan of the store for the task series succeeded.",
            one(u64::from(self.scan.is_some())),
        )?;
        let Some(scan) = &self.scan else {
            return Ok(());
        };
        gauge(
            e,
            "tasks",
            "Tasks in the store by state (counted at most every 10 s; every replica counts the whole store).",
            STATES
                .iter()
                .zip(scan.by_state)
                .map(|((_, label), n)| ([("state", *label)], n)),
        )?;
        if !scan.tasks.is_empty() {
            per_task(e, &scan.tasks)?;
        }
        Ok(())
    }
}

/// The `--metrics-per-task` series.
fn per_task(e: &mut DescriptorEncoder, tasks: &[TaskRow]) -> Result<(), std::fmt::Error> {
    fn id(t: &TaskRow) -> [(&'static str, &str); 1] {
        [("task_id", t.id.as_str())]
    }
    let each = |value: fn(&TaskRow) -> u64| tasks.iter().map(move |t| (id(t), value(t)));
    let each_time = |value: fn(&TaskRow) -> Option<f64>| {
        tasks.iter().filter_map(move |t| Some((id(t), value(t)?)))
    };
    counter(
        e,
        "task_runs",
        "Runs handed out for the task (scheduled and manual).",
        each(|t| t.runs),
    )?;
    counter(
        e,
        "task_failures",
        "The task's runs that ended FAILED or TIMED_OUT.",
        each(|t| t.failures),
    )?;
    counter(
        e,
        "task_skipped_slots",
        "The task's slots that started no run.",
        each(|t| t.skipped),
    )?;
    gauge(
        e,
        "task_consecutive_failures",
        "FAILED or TIMED_OUT runs of the task since its last SUCCEEDED one.",
        each(|t| t.consecutive_failures),
    )?;
    gauge(
        e,
        "task_last_success_timestamp_seconds",
        "When the task's last SUCCEEDED run finished (absent until one has).",
        each_time(|t| t.last_success.map(seconds)),
    )?;
    gauge(
        e,
        "task_created_timestamp_seconds",
        "When the task was registered.",
        each_time(|t| Some(seconds(t.created))),
    )?;
    gauge(
        e,
        "task_next_run_timestamp_seconds",
        "The task's next slot (absent while paused or ended).",
        each_time(|t| t.next_run.map(seconds)),
    )?;
    gauge(
        e,
        "task_interval_seconds",
        "The task's interval; for cron, the gap between its next two slots.",
        each_time(|t| t.interval.map(|d| d.as_secs_f64())),
    )?;
    gauge(
        e,
        "task_state",
        "1 for the task's current state.",
        tasks
            .iter()
            .map(|t| ([("task_id", t.id.as_str()), ("state", t.state)], 1_u64)),
    )
}
