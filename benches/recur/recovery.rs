//! Scenario 6, recovery (Redis store only): N tasks stored by one server,
//! then a fresh server process on the same prefix, timed from its spawn.
//!
//! What "recovered" means here, from the code: the bench's `--serve` child
//! binds its listener and prints its address *before* calling
//! `recur::Server::run`; `run` opens the Redis pool (PING), opens the store
//! (format and epoch keys), and `Scheduler::start` pages through every
//! stored task (`list_tasks`, 1,000 a page) arming each in the timer queue
//! before the router is served. A gRPC call made meanwhile is queued on the
//! bound socket and answered only once serving starts, so the first answer
//! means every stored task has been read and armed. The scenario records:
//!
//! - *listening*: spawn until the child printed its address (exec,
//!   runtime, bind; the store not yet opened);
//! - *serving*: spawn until the first answer to GetTask of the last task
//!   (retried until answered): every task armed;
//! - *listed*: spawn until ListTasks (pages of 1,000) has returned all N,
//!   each ACTIVE with a next run.
//!
//! With the server's RSS at serving and after listing, its CPU from spawn
//! to serving, and the Redis server's CPU over the same span.

use std::time::{Duration, Instant};

use chrono::Utc;
use recur::pb::v1::{
    GetTaskRequest, ListTasksRequest, TaskState, task_service_client::TaskServiceClient,
};
use serde_json::json;
use tonic::transport::Channel;

use crate::{
    cli::{Phase, Plan, StoreKind},
    procfs::{self, CpuMeter},
    report::{Report, Row, Target, fmt_count},
    server::ServerProcess,
    store::CaseStore,
    tasks::{self, Work},
};

/// Cadence of the stored tasks: none fires while the scenario runs.
const EVERY: Duration = Duration::from_secs(3600);

/// How far ahead their first slot is (random phases over the hour after).
const NOT_BEFORE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// ListTasks page size: the API's maximum.
const PAGE: u32 = 1_000;

/// How long the first call is retried before the restart counts as failed.
const ANSWER_LIMIT: Duration = Duration::from_secs(120);

/// The bound: every stored task scheduled within this of the start.
const TARGET: Duration = Duration::from_secs(3);

/// What one restart showed.
struct Restart {
    listening: Duration,
    serving: Option<Duration>,
    listed: Option<Duration>,
    listed_count: usize,
    server_cpu_s: Option<f64>,
    redis_cpu_percent: Option<f64>,
    rss_serving: Option<u64>,
    rss_listed: Option<u64>,
    peak_rss: Option<u64>,
    error: Option<String>,
}

/// Runs the scenario at the plan's size.
pub async fn run(plan: &Plan, report: &mut Report) {
    let tasks = plan.recovery_tasks;
    eprintln!("recovery: {tasks} stored tasks");
    let store = CaseStore::open(StoreKind::Redis, &plan.redis_url, plan.keep_redis_keys).await;
    let max_tasks = tasks + 1_000;

    let first = ServerProcess::start(max_tasks, &store).await;
    let clients = tasks::register_clients(&first).await;
    let registration = tasks::register_all(
        &clients,
        tasks,
        &Work::Noop,
        Phase::Random,
        EVERY,
        Utc::now() + NOT_BEFORE,
    )
    .await;
    drop(clients);
    let rss_registering = procfs::rss_bytes(first.pid);
    first.stop().await;
    let redis_memory = store.redis_used_memory().await;
    eprintln!(
        "  registered in {:.1} s ({:.0}/s)",
        registration.as_secs_f64(),
        tasks as f64 / registration.as_secs_f64().max(1e-9)
    );

    let mut restarts = Vec::with_capacity(plan.recovery_restarts);
    for _ in 0..plan.recovery_restarts.max(1) {
        let restart = restart(&store, max_tasks, tasks).await;
        eprintln!(
            "  listening {:.3} s, serving {}, listed {} of {tasks}",
            restart.listening.as_secs_f64(),
            secs(restart.serving),
            restart.listed_count
        );
        restarts.push(restart);
    }
    store.finish().await;

    let mib = |b: Option<u64>| {
        b.map_or_else(
            || "-".to_string(),
            |b| format!("{:.0}", b as f64 / (1024.0 * 1024.0)),
        )
    };
    for (i, r) in restarts.iter().enumerate() {
        let mut notes = vec![
            format!("listening {:.3} s", r.listening.as_secs_f64()),
            format!(
                "ListTasks {}/{} at {}",
                fmt_count(r.listed_count as u64),
                fmt_count(tasks as u64),
                secs(r.listed)
            ),
            format!(
                "RSS at serving {} MiB, after ListTasks {} MiB (the registering server: {} MiB)",
                mib(r.rss_serving),
                mib(r.rss_listed),
                mib(rss_registering)
            ),
        ];
        if let Some(redis) = r.redis_cpu_percent {
            notes.push(format!("redis-server CPU {redis:.0}% until serving"));
        }
        if let Some(error) = &r.error {
            notes.push(error.clone());
        }
        let serving_s = r.serving.map(|d| d.as_secs_f64());
        report.add(Row {
            scenario: "recovery".to_string(),
            subject: StoreKind::Redis.subject().to_string(),
            case: format!(
                "{} stored tasks, restart {}/{}",
                fmt_count(tasks as u64),
                i + 1,
                restarts.len()
            ),
            measure: "spawn to serving".to_string(),
            latency: None,
            count: format!("serving after {}", secs(r.serving)),
            missed_doubled: String::new(),
            cpu_percent: r
                .server_cpu_s
                .zip(serving_s)
                .map(|(cpu, wall)| 100.0 * cpu / wall.max(1e-9)),
            peak_rss: r.peak_rss,
            bytes_per_task: None,
            notes,
            json: json!({
                "tasks": tasks,
                "registration_s": registration.as_secs_f64(),
                "registering_server_rss_bytes": rss_registering,
                "redis_used_memory_bytes_after_registration": redis_memory,
                "listening_s": r.listening.as_secs_f64(),
                "serving_s": serving_s,
                "listed_s": r.listed.map(|d| d.as_secs_f64()),
                "listed_count": r.listed_count,
                "server_cpu_s_until_serving": r.server_cpu_s,
                "redis_cpu_percent_until_serving": r.redis_cpu_percent,
                "rss_serving_bytes": r.rss_serving,
                "rss_listed_bytes": r.rss_listed,
                "peak_rss_bytes": r.peak_rss,
                "error": r.error,
            }),
        });
    }
    let worst = restarts
        .iter()
        .map(|r| r.serving.map(|d| d.as_secs_f64()))
        .try_fold(0.0f64, |worst, s| s.map(|s| worst.max(s)));
    let case = format!("recovery {} (redis store)", fmt_count(tasks as u64));
    report.target(Target::at_most(
        format!(
            "{case}: serving, every task armed, within {} s of spawn",
            TARGET.as_secs()
        ),
        worst,
        TARGET.as_secs_f64(),
        "s",
    ));
    report.target(Target::at_least(
        format!("{case}: ListTasks shows every stored task"),
        restarts
            .iter()
            .map(|r| r.listed_count as f64)
            .reduce(f64::min),
        tasks as f64,
        "tasks",
    ));
}

/// Spawns a server on the stored tasks and times it; stops it again.
async fn restart(store: &CaseStore, max_tasks: usize, tasks: usize) -> Restart {
    let redis_cpu = store.redis_pid().map(CpuMeter::start);
    let spawned = Instant::now();
    let server = ServerProcess::start(max_tasks, store).await;
    let listening = spawned.elapsed();
    let mut client = server.client().await;
    let mut restart = Restart {
        listening,
        serving: None,
        listed: None,
        listed_count: 0,
        server_cpu_s: None,
        redis_cpu_percent: None,
        rss_serving: None,
        rss_listed: None,
        peak_rss: None,
        error: None,
    };
    match first_answer(&mut client, &tasks::task_id(tasks.saturating_sub(1))).await {
        Ok(()) => {
            restart.serving = Some(spawned.elapsed());
            // A new process: all the CPU it has used is start-up.
            restart.server_cpu_s = procfs::cpu_seconds(server.pid);
            restart.redis_cpu_percent = redis_cpu.and_then(|m| m.percent());
            restart.rss_serving = procfs::rss_bytes(server.pid);
            match list_all(&mut client).await {
                Ok(count) => {
                    restart.listed_count = count;
                    restart.listed = Some(spawned.elapsed());
                }
                Err(e) => restart.error = Some(format!("ListTasks failed: {e}")),
            }
            restart.rss_listed = procfs::rss_bytes(server.pid);
        }
        Err(e) => restart.error = Some(e),
    }
    restart.peak_rss = procfs::peak_rss_bytes(server.pid);
    drop(client);
    server.stop().await;
    restart
}

/// GetTask of `task_id` until it answers (the server queues calls until it
/// serves), checking the task came back armed.
async fn first_answer(
    client: &mut TaskServiceClient<Channel>,
    task_id: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + ANSWER_LIMIT;
    loop {
        let request = GetTaskRequest {
            task_id: task_id.to_string(),
            ..Default::default()
        };
        match client.get_task(request).await {
            Ok(task) => {
                let task = task.into_inner();
                return if task.state() == TaskState::Active && task.next_run_at.is_some() {
                    Ok(())
                } else {
                    Err(format!(
                        "{task_id} came back {:?} without a next run",
                        task.state()
                    ))
                };
            }
            Err(status) if Instant::now() < deadline => {
                eprintln!("  first call failed, retrying: {status}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(status) => return Err(format!("no answer within {ANSWER_LIMIT:?}: {status}")),
        }
    }
}

/// Pages through ListTasks; counts the tasks that are ACTIVE with a next run.
async fn list_all(client: &mut TaskServiceClient<Channel>) -> Result<usize, tonic::Status> {
    let mut count = 0;
    let mut page_token = String::new();
    loop {
        let page = client
            .list_tasks(ListTasksRequest {
                page_size: PAGE,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        count += page
            .tasks
            .iter()
            .filter(|t| t.state() == TaskState::Active && t.next_run_at.is_some())
            .count();
        if page.next_page_token.is_empty() {
            return Ok(count);
        }
        page_token = page.next_page_token;
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
}
