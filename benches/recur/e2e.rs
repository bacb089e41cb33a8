//! Scenario 4, end to end: N HTTP tasks every second (random phases)
//! against an HTTP server in the bench process. Besides the firing figures
//! from the results, the target records when each request arrived, taking
//! the slot from the `Idempotency-Key` the server sends (the occurrence id,
//! `<task>@<slot>`).

use std::sync::{Arc, Mutex, OnceLock};

use axum::{Router, extract::State, http::HeaderMap, routing::get};
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    cli::{Phase, Plan},
    collect::Window,
    firing::{self, Timing},
    report::{Report, Row, fmt_count},
    server::ServerProcess,
    stats::Percentiles,
    store::CaseStore,
    tasks::{Work, micros_between},
};

/// What the HTTP target records.
#[derive(Default)]
struct Arrivals {
    /// Set once the window is known; requests before it are not recorded.
    window: OnceLock<Window>,
    /// Arrival minus slot, per request whose slot is in the window.
    lateness_us: Mutex<Vec<i64>>,
}

async fn hit(State(arrivals): State<Arc<Arrivals>>, headers: HeaderMap) -> &'static str {
    let now = Utc::now();
    let slot = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .and_then(|key| key.rsplit_once('@'))
        .and_then(|(_, slot)| DateTime::parse_from_rfc3339(slot).ok())
        .map(|slot| slot.with_timezone(&Utc));
    if let (Some(slot), Some(window)) = (slot, arrivals.window.get())
        && window.start <= slot
        && slot < window.end
    {
        arrivals
            .lateness_us
            .lock()
            .expect("the arrivals lock is never held across a panic")
            .push(micros_between(slot, now));
    }
    "ok"
}

/// Runs the scenario once at the plan's size.
pub async fn run(plan: &Plan, report: &mut Report) {
    let tasks = plan.e2e_tasks;
    eprintln!("end to end: {tasks} HTTP tasks");
    let arrivals = Arc::new(Arrivals::default());
    let app = Router::new()
        .route("/hit/{index}", get(hit))
        .with_state(arrivals.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the HTTP target on 127.0.0.1:0");
    let addr = listener.local_addr().expect("HTTP target address");
    let stop = CancellationToken::new();
    let target = {
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };

    let server = ServerProcess::start(tasks + 1_000, &CaseStore::Memory).await;
    let timing = Timing::plan(tasks, plan.warmup, plan.window);
    if arrivals.window.set(timing.window).is_err() {
        unreachable!("the window is set once");
    }
    let work = Work::Http(format!("http://{addr}/hit/"));
    let firing = firing::measure(
        &server,
        &CaseStore::Memory,
        tasks,
        Phase::Random,
        &work,
        timing,
    )
    .await;
    drop(server);
    stop.cancel();
    match target.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("end to end: the HTTP target failed: {e}"),
        Err(e) => eprintln!("end to end: the HTTP target task failed: {e}"),
    }

    let case = format!("{} HTTP random", fmt_count(tasks as u64));
    report.add(firing::firing_row("e2e", "recur", &case, &firing));
    let mut lateness = arrivals
        .lateness_us
        .lock()
        .expect("the arrivals lock is never held across a panic")
        .clone();
    let arrival = Percentiles::of_micros(&mut lateness);
    report.add(Row {
        scenario: "e2e".to_string(),
        subject: "recur".to_string(),
        case,
        measure: "request arrival - slot".to_string(),
        latency: arrival,
        count: format!("requests {}", fmt_count(lateness.len() as u64)),
        missed_doubled: String::new(),
        cpu_percent: None,
        peak_rss: None,
        bytes_per_task: None,
        notes: Vec::new(),
        json: json!({
            "requests_in_window": lateness.len(),
            "arrival_lateness": arrival.map(Percentiles::to_json),
        }),
    });
}
