//! Scenario 2, the control plane: RegisterTask, GetTask and PauseTask from
//! 1, 16 and 64 concurrent callers (the generated Rust client), each for a
//! fixed time: calls per second and call latency.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use recur::pb::v1::{
    GetTaskRequest, PauseTaskRequest, RegisterTaskRequest, task_service_client::TaskServiceClient,
};
use serde_json::json;
use tonic::transport::Channel;

use crate::{
    cli::Plan,
    procfs::{self, CpuMeter},
    report::{Report, Row, Target, fmt_count},
    server::ServerProcess,
    stats::Percentiles,
    tasks::{self, Work},
};

/// Tasks GetTask and PauseTask pick from.
const POOL: usize = 1_000;

/// Upper bound of calls per caller per case, so a fast machine cannot make a
/// case unbounded in memory.
const MAX_CALLS_PER_CALLER: usize = 200_000;

/// Callers share this many connections at most (HTTP/2 multiplexes the
/// rest), as clients of a real service would.
const MAX_CONNECTIONS: usize = 8;

/// How far ahead the control-plane tasks' first slot is: none runs during
/// the scenario, so only the calls are measured.
const NOT_BEFORE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

#[derive(Debug, Clone, Copy)]
enum Op {
    Register,
    Get,
    Pause,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Register => "RegisterTask",
            Op::Get => "GetTask",
            Op::Pause => "PauseTask",
        }
    }
}

/// Runs every op at every caller count against one server.
pub async fn run(plan: &Plan, report: &mut Report) {
    eprintln!("control plane");
    let server = ServerProcess::start(2_000_000).await;
    let pool_start = Utc::now() + NOT_BEFORE;
    let setup = tasks::register_clients(&server).await;
    tasks::register_all(
        &setup,
        POOL,
        &Work::Noop,
        crate::cli::Phase::Herd,
        pool_start,
    )
    .await;
    drop(setup);
    // Ids of registered tasks are unique across cases.
    let next_id = Arc::new(AtomicUsize::new(0));
    for op in [Op::Register, Op::Get, Op::Pause] {
        for &callers in &plan.callers {
            let connections = callers.clamp(1, MAX_CONNECTIONS);
            let mut clients = Vec::with_capacity(connections);
            for _ in 0..connections {
                clients.push(server.client().await);
            }
            let cpu = CpuMeter::start(server.pid);
            let started = Instant::now();
            let mut handles = Vec::with_capacity(callers);
            for caller in 0..callers {
                let client = clients[caller % connections].clone();
                let next_id = next_id.clone();
                let call_time = plan.call_time;
                handles.push(tokio::spawn(async move {
                    call_loop(client, op, caller, call_time, next_id).await
                }));
            }
            let mut latencies_us = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            for handle in handles {
                let calls = handle.await.expect("a control-plane caller panicked");
                latencies_us.extend(calls.latencies_us);
                errors += calls.errors;
                first_error = first_error.or(calls.first_error);
            }
            let elapsed = started.elapsed().as_secs_f64();
            let cpu_percent = cpu.percent();
            let ok = latencies_us.len() as f64;
            let per_second = ok / elapsed;
            let latency = Percentiles::of_micros(&mut latencies_us);
            let mut notes = Vec::new();
            if errors > 0 {
                notes.push(format!(
                    "{} errors, first: {}",
                    fmt_count(errors),
                    first_error.unwrap_or_default()
                ));
            }
            report.add(Row {
                scenario: "control".to_string(),
                subject: "recur".to_string(),
                case: format!("{} x{callers}", op.name()),
                measure: "call latency".to_string(),
                latency,
                count: format!("{}/s", fmt_count(per_second.round() as u64)),
                missed_doubled: String::new(),
                cpu_percent,
                peak_rss: procfs::peak_rss_bytes(server.pid),
                bytes_per_task: None,
                notes,
                json: json!({
                    "op": op.name(),
                    "callers": callers,
                    "connections": connections,
                    "seconds": elapsed,
                    "ok_calls": ok,
                    "errors": errors,
                    "ops_per_s": per_second,
                    "latency": latency.map(Percentiles::to_json),
                    "server_cpu_percent_of_one_core": cpu_percent,
                }),
            });
            if matches!(op, Op::Register) && callers == 64 {
                report.target(Target::at_least(
                    "RegisterTask x64: >= 20,000 calls/s".to_string(),
                    Some(per_second),
                    20_000.0,
                    "/s",
                ));
                report.target(Target::at_most(
                    "RegisterTask x64: p99 <= 5 ms".to_string(),
                    latency.map(|l| l.p99),
                    5.0,
                    "ms",
                ));
            }
        }
    }
}

/// What one caller did.
struct Calls {
    latencies_us: Vec<i64>,
    errors: u64,
    first_error: Option<String>,
}

/// Calls `op` back to back for `call_time` (at most `MAX_CALLS_PER_CALLER` times).
async fn call_loop(
    mut client: TaskServiceClient<Channel>,
    op: Op,
    caller: usize,
    call_time: Duration,
    next_id: Arc<AtomicUsize>,
) -> Calls {
    let mut calls = Calls {
        latencies_us: Vec::new(),
        errors: 0,
        first_error: None,
    };
    let start_at = Utc::now() + NOT_BEFORE;
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < call_time && n < MAX_CALLS_PER_CALLER {
        // Spread Get and Pause over the pool so callers do not all contend
        // on one task.
        let pool_id = tasks::task_id((caller * 7_919 + n * 31) % POOL);
        let t0 = Instant::now();
        let outcome = match op {
            Op::Register => {
                let index = next_id.fetch_add(1, Ordering::Relaxed);
                client
                    .register_task(RegisterTaskRequest {
                        task_id: format!("c{index}"),
                        spec: Some(tasks::spec(
                            &Work::Noop,
                            index,
                            Duration::from_secs(60),
                            start_at,
                        )),
                        request_id: String::new(),
                    })
                    .await
                    .map(drop)
            }
            Op::Get => client
                .get_task(GetTaskRequest { task_id: pool_id })
                .await
                .map(drop),
            Op::Pause => client
                .pause_task(PauseTaskRequest {
                    task_id: pool_id,
                    reason: "bench".to_string(),
                })
                .await
                .map(drop),
        };
        let took = t0.elapsed().as_micros() as i64;
        match outcome {
            Ok(()) => calls.latencies_us.push(took),
            Err(status) => {
                calls.errors += 1;
                calls.first_error.get_or_insert_with(|| status.to_string());
            }
        }
        n += 1;
    }
    calls
}
