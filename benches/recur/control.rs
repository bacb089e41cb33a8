//! Scenario 2, the control plane: RegisterTask, GetTask and PauseTask from
//! 1, 16 and 64 concurrent callers (the generated Rust client), each for a
//! fixed time, on each store of the plan: calls per second and call
//! latency.

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
    cli::{ONE_SECOND, Phase, Plan, StoreKind},
    procfs::{self, CpuMeter},
    report::{Report, Row, Target, fmt_count},
    server::ServerProcess,
    stats::Percentiles,
    store::CaseStore,
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

/// Runs every op at every caller count against one server per store.
pub async fn run(plan: &Plan, report: &mut Report) {
    for &kind in &plan.stores {
        eprintln!("control plane ({})", kind.subject());
        let store = CaseStore::open(kind, &plan.redis_url, plan.keep_redis_keys).await;
        let server = ServerProcess::start(2_000_000, &store).await;
        run_on(plan, kind, &server, report).await;
        server.stop().await;
        store.finish().await;
        // RegisterTask again with every call written to the audit trail, on
        // a store of its own: the tasks above would otherwise be armed and
        // fired by this server while it is measured.
        if plan.callers.contains(&64) {
            let store = CaseStore::open(kind, &plan.redis_url, plan.keep_redis_keys).await;
            let dir = tempfile::tempdir().expect("a directory for the audit log");
            let server =
                ServerProcess::start_audited(2_000_000, &store, &dir.path().join("audit.jsonl"))
                    .await;
            let next_id = Arc::new(AtomicUsize::new(0));
            let (per_second, latency) = measure(
                plan,
                kind,
                &server,
                Op::Register,
                64,
                None,
                &next_id,
                report,
            )
            .await;
            register_rows(
                plan,
                kind,
                &server,
                " with --audit-log",
                (per_second, latency),
                &next_id,
                report,
            )
            .await;
            server.stop().await;
            store.finish().await;
        }
    }
}

/// The calls per second asked of RegisterTask at 64 callers, per store.
fn register_target(kind: StoreKind) -> f64 {
    match kind {
        StoreKind::Memory => 20_000.0,
        // Issue 6.
        StoreKind::Redis => 10_000.0,
    }
}

async fn run_on(plan: &Plan, kind: StoreKind, server: &ServerProcess, report: &mut Report) {
    let pool_start = Utc::now() + NOT_BEFORE;
    let setup = tasks::register_clients(server).await;
    tasks::register_all(
        &setup,
        POOL,
        &Work::Noop,
        Phase::Herd,
        ONE_SECOND,
        pool_start,
    )
    .await;
    drop(setup);
    // Ids of registered tasks are unique across cases.
    let next_id = Arc::new(AtomicUsize::new(0));
    for op in [Op::Register, Op::Get, Op::Pause] {
        for &callers in &plan.callers {
            let (per_second, latency) =
                measure(plan, kind, server, op, callers, None, &next_id, report).await;
            if matches!(op, Op::Register) && callers == 64 {
                register_rows(
                    plan,
                    kind,
                    server,
                    "",
                    (per_second, latency),
                    &next_id,
                    report,
                )
                .await;
            }
        }
    }
}

/// The RegisterTask x64 rows of `server`, named with `suffix`: the
/// back-to-back measurement already made, then the same 64 callers asking
/// for a tenth more than the target rate (so that the rate served is at
/// least the target, ramp and tail included): the latency a client sees
/// while the server serves that rate, apart from the queueing of a
/// saturated server.
async fn register_rows(
    plan: &Plan,
    kind: StoreKind,
    server: &ServerProcess,
    suffix: &str,
    (per_second, latency): (f64, Option<Percentiles>),
    next_id: &Arc<AtomicUsize>,
    report: &mut Report,
) {
    let on = match kind {
        StoreKind::Memory => "",
        StoreKind::Redis => " (redis store)",
    };
    let floor = register_target(kind);
    let name = format!("RegisterTask x64{on}{suffix}");
    rate_and_p99(
        report,
        &name,
        "",
        " (back to back, at saturation)",
        floor,
        per_second,
        latency,
    );
    let asked = floor * 1.1;
    let (served, paced) = measure(
        plan,
        kind,
        server,
        Op::Register,
        64,
        Some(asked),
        next_id,
        report,
    )
    .await;
    let name = format!("{name} at {}/s", fmt_count(asked as u64));
    rate_and_p99(report, &name, " served", "", floor, served, paced);
}

/// The two targets of a RegisterTask x64 row: at least `floor` calls a
/// second and p99 at most 5 ms; the suffixes tell the rows apart.
fn rate_and_p99(
    report: &mut Report,
    name: &str,
    rate_suffix: &str,
    p99_suffix: &str,
    floor: f64,
    per_second: f64,
    latency: Option<Percentiles>,
) {
    report.target(Target::at_least(
        format!(
            "{name}: >= {} calls/s{rate_suffix}",
            fmt_count(floor as u64)
        ),
        Some(per_second),
        floor,
        "/s",
    ));
    report.target(Target::at_most(
        format!("{name}: p99 <= 5 ms{p99_suffix}"),
        latency.map(|l| l.p99),
        5.0,
        "ms",
    ));
}

/// Runs one case: `callers` calling `op`, back to back or, with `rate`,
/// paced to that many calls per second in all. Adds its row; returns the
/// calls per second and the latency.
#[allow(clippy::too_many_arguments)]
async fn measure(
    plan: &Plan,
    kind: StoreKind,
    server: &ServerProcess,
    op: Op,
    callers: usize,
    rate: Option<f64>,
    next_id: &Arc<AtomicUsize>,
    report: &mut Report,
) -> (f64, Option<Percentiles>) {
    let connections = callers.clamp(1, MAX_CONNECTIONS);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(server.client().await);
    }
    // Each caller's share of the rate, as a fixed interval between the
    // instants its calls are due.
    let every = rate.map(|rate| Duration::from_secs_f64(callers as f64 / rate));
    let cpu = CpuMeter::start(server.pid);
    let redis_cpu = server.redis_pid.map(CpuMeter::start);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(callers);
    for caller in 0..callers {
        let client = clients[caller % connections].clone();
        let next_id = next_id.clone();
        let call_time = plan.call_time;
        // Paced callers start spread over one interval, not all at once.
        let offset = every.map(|every| every.mul_f64(caller as f64 / callers as f64));
        handles.push(tokio::spawn(async move {
            call_loop(client, op, caller, call_time, next_id, every.zip(offset)).await
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
    let redis_cpu_percent = redis_cpu.and_then(|m| m.percent());
    let ok = latencies_us.len() as f64;
    let per_second = ok / elapsed;
    let latency = Percentiles::of_micros(&mut latencies_us);
    let mut notes = Vec::new();
    if let Some(redis) = redis_cpu_percent {
        notes.push(format!("redis-server CPU {redis:.0}%"));
    }
    if let Some(rate) = rate {
        notes.push(format!(
            "paced at {}/s; a call held up by the one before counts from its due instant",
            fmt_count(rate as u64)
        ));
    }
    if errors > 0 {
        notes.push(format!(
            "{} errors, first: {}",
            fmt_count(errors),
            first_error.unwrap_or_default()
        ));
    }
    let case = match rate {
        None => format!("{} x{callers}", op.name()),
        Some(rate) => format!("{} x{callers} at {}/s", op.name(), fmt_count(rate as u64)),
    };
    report.add(Row {
        scenario: "control".to_string(),
        subject: kind.subject().to_string(),
        case,
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
            "paced_calls_per_s": rate,
            "seconds": elapsed,
            "ok_calls": ok,
            "errors": errors,
            "ops_per_s": per_second,
            "latency": latency.map(Percentiles::to_json),
            "server_cpu_percent_of_one_core": cpu_percent,
            "redis_cpu_percent_of_one_core": redis_cpu_percent,
        }),
    });
    (per_second, latency)
}

/// What one caller did.
struct Calls {
    latencies_us: Vec<i64>,
    errors: u64,
    first_error: Option<String>,
}

/// Calls `op` for `call_time` (at most `MAX_CALLS_PER_CALLER` times): back
/// to back, or with `paced` (interval, first offset) each call when it is
/// due; a call held up by a late one before it has its latency counted
/// from its due instant, so that wait counts too (no coordinated omission).
async fn call_loop(
    mut client: TaskServiceClient<Channel>,
    op: Op,
    caller: usize,
    call_time: Duration,
    next_id: Arc<AtomicUsize>,
    paced: Option<(Duration, Duration)>,
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
        let t0 = match paced {
            None => Instant::now(),
            Some((every, offset)) => {
                let due = started + offset + every.mul_f64(n as f64);
                if Instant::now() >= due {
                    // Held up by the calls before: the wait counts.
                    due
                } else {
                    // On time: counted from when the call goes out, not
                    // from its due instant, which tokio's timer (1 ms
                    // ticks) overshoots by up to a millisecond.
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                }
            }
        };
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
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
            Op::Get => client
                .get_task(GetTaskRequest {
                    task_id: pool_id,
                    ..Default::default()
                })
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
