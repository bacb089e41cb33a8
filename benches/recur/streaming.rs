//! Scenario 3, streaming: K subscribers follow every result while 1,000
//! no-op tasks (random phases) finish 1,000 runs per second. Measures
//! delivery delay (receive time minus `finished_at`), loss for subscribers
//! that keep up, the memory of K idle streams, and the firing figures at
//! the same time.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use recur::pb::v1::{StreamResultsRequest, task_service_client::TaskServiceClient};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

use crate::{
    cli::{Phase, Plan},
    collect::Window,
    firing::{self, Timing},
    procfs,
    report::{Report, Row, Target, fmt_count},
    server::ServerProcess,
    stats::Percentiles,
    store::CaseStore,
    tasks::{Work, instant, micros_between, task_index},
};

/// Subscribers per connection: well under the server's 256 HTTP/2 streams
/// per connection.
const SUBSCRIBERS_PER_CONNECTION: usize = 100;

/// How long idle streams sit before their memory is read, so the server
/// has set up every one of them.
const IDLE_SETTLE: Duration = Duration::from_secs(1);

/// How long subscribers may trail the collector at the end.
const CATCH_UP: Duration = Duration::from_secs(3);

/// What one subscriber saw of the window's results.
struct Seen {
    /// Receive time minus `finished_at`, per result.
    delays_us: Vec<i64>,
    /// Whether the server ended the stream because the reader fell behind.
    lagged: bool,
    /// Why the stream ended, when it was not the bench stopping it.
    ended: Option<String>,
}

/// Runs the scenario for each subscriber count of the plan.
pub async fn run(plan: &Plan, report: &mut Report) {
    let tasks = plan.streaming_tasks;
    for &subscribers in &plan.subscribers {
        eprintln!("streaming: {subscribers} subscribers, {tasks} runs/s");
        let server = ServerProcess::start(tasks + 1_000, &CaseStore::Memory).await;
        let rss_before = procfs::rss_bytes(server.pid);
        // The window is known only once the streams are open (opening 1,000
        // takes a while); subscribers ignore results until it is set.
        let window = Arc::new(OnceLock::new());
        let stop = CancellationToken::new();
        let mut received = Vec::with_capacity(subscribers);
        let mut handles = Vec::with_capacity(subscribers);
        let mut client = None;
        for i in 0..subscribers {
            if i % SUBSCRIBERS_PER_CONNECTION == 0 {
                client = Some(server.client().await);
            }
            let client = client.clone().expect("a connection was opened above");
            let count = Arc::new(AtomicU64::new(0));
            received.push(count.clone());
            let stream = open(client).await;
            handles.push(tokio::spawn(subscribe(
                stream,
                window.clone(),
                count,
                stop.clone(),
            )));
        }
        tokio::time::sleep(IDLE_SETTLE).await;
        let idle_streams_bytes = procfs::rss_bytes(server.pid)
            .zip(rss_before)
            .map(|(now, before)| now.saturating_sub(before));
        let timing = Timing::plan(tasks, plan.warmup, plan.window);
        window
            .set(timing.window)
            .expect("the window is set once per subscriber count");

        let firing = firing::measure(
            &server,
            &CaseStore::Memory,
            tasks,
            Phase::Random,
            &Work::Noop,
            timing,
        )
        .await;
        let expected = firing.tally.fired + firing.tally.skipped;
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        while tokio::time::Instant::now() < deadline
            && received
                .iter()
                .any(|c| c.load(Ordering::Relaxed) < expected)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        let mut seen = Vec::with_capacity(subscribers);
        for handle in handles {
            seen.push(handle.await.expect("a subscriber panicked"));
        }
        drop(server);

        let lagged = seen.iter().filter(|s| s.lagged).count();
        let ended: Vec<String> = seen
            .iter()
            .filter_map(|s| s.ended.clone())
            .take(1)
            .collect();
        let kept_up: Vec<&Seen> = seen
            .iter()
            .filter(|s| !s.lagged && s.ended.is_none())
            .collect();
        let lost: u64 = kept_up
            .iter()
            .map(|s| expected.saturating_sub(s.delays_us.len() as u64))
            .sum();
        let mut delays: Vec<i64> = kept_up
            .iter()
            .flat_map(|s| s.delays_us.iter().copied())
            .collect();
        let delay = Percentiles::of_micros(&mut delays);
        let case = format!(
            "{} subscriber{}",
            fmt_count(subscribers as u64),
            if subscribers == 1 { "" } else { "s" }
        );
        let mut notes = vec![format!(
            "{} idle streams: +{:.1} MiB",
            fmt_count(subscribers as u64),
            idle_streams_bytes.unwrap_or(0) as f64 / (1024.0 * 1024.0)
        )];
        if lagged > 0 {
            notes.push(format!("{lagged} fell behind (RESOURCE_EXHAUSTED)"));
        }
        notes.extend(ended.iter().map(|e| format!("a stream ended: {e}")));
        report.add(Row {
            scenario: "streaming".to_string(),
            subject: "recur".to_string(),
            case: case.clone(),
            measure: "delivery delay".to_string(),
            latency: delay,
            count: format!(
                "{} kept up, {} results/s each",
                kept_up.len(),
                fmt_count(tasks as u64)
            ),
            missed_doubled: format!("lost {}", fmt_count(lost)),
            cpu_percent: firing.cpu_percent,
            peak_rss: firing.peak_rss,
            bytes_per_task: None,
            notes,
            json: json!({
                "subscribers": subscribers,
                "runs_per_s": tasks,
                "kept_up": kept_up.len(),
                "lagged": lagged,
                "lost_by_those_keeping_up": lost,
                "results_expected_per_subscriber": expected,
                "delivery_delay": delay.map(Percentiles::to_json),
                "idle_streams_rss_bytes": idle_streams_bytes,
            }),
        });
        report.add(firing::firing_row(
            "streaming",
            "recur",
            &format!("{case}: firing {} random", fmt_count(tasks as u64)),
            &firing,
        ));
        if subscribers == 100 {
            report.target(Target::at_most(
                "streaming 100 subscribers x 1,000 results/s: delivery p99 <= 20 ms".to_string(),
                delay.map(|d| d.p99),
                20.0,
                "ms",
            ));
        }
        if subscribers == 1_000 {
            report.target(Target::at_most(
                "1,000 idle streams <= 20 MB".to_string(),
                idle_streams_bytes.map(|b| b as f64 / 1e6),
                20.0,
                "MB",
            ));
        }
        if subscribers == 100 || subscribers == 1_000 {
            report.target(Target::at_most(
                format!("streaming {case}: zero loss for subscribers keeping up"),
                Some(lost as f64),
                0.0,
                "lost",
            ));
        }
    }
}

type Results = tonic::Streaming<recur::pb::v1::TaskResult>;

async fn open(mut client: TaskServiceClient<Channel>) -> Results {
    client
        .stream_results(StreamResultsRequest::default())
        .await
        .expect("opening StreamResults for a subscriber")
        .into_inner()
}

/// Reads until stopped; a lagging subscriber is not resumed (it did not
/// keep up, which is what the scenario counts).
async fn subscribe(
    mut stream: Results,
    window: Arc<OnceLock<Window>>,
    received: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Seen {
    let mut seen = Seen {
        delays_us: Vec::new(),
        lagged: false,
        ended: None,
    };
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            message = stream.message() => message,
        };
        let result = match message {
            Ok(Some(result)) => result,
            Ok(None) => {
                seen.ended = Some("closed by the server".to_string());
                break;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                seen.lagged = true;
                break;
            }
            Err(status) => {
                seen.ended = Some(status.to_string());
                break;
            }
        };
        let now = Utc::now();
        if task_index(&result.task_id).is_none() {
            continue;
        }
        let Some(window) = window.get() else {
            continue;
        };
        let scheduled_at = instant(result.scheduled_at.as_ref());
        if window.start <= scheduled_at && scheduled_at < window.end {
            let finished_at = instant(result.finished_at.as_ref());
            seen.delays_us.push(micros_between(finished_at, now));
            received.fetch_add(1, Ordering::Relaxed);
        }
    }
    seen
}
