//! Scenario `replicas` (Redis store only): three recur servers on one key
//! prefix, one service (README, "Replicas").
//!
//! - Firing: the 10,000-task cases (random phases, then a herd) shared by
//!   the three, measured as the firing scenario measures one server:
//!   lateness, fires expected against done, doubled (must be 0), the CPU of
//!   each replica and of Redis. Registration is spread over the three and
//!   the results are followed on the first, whose log reader sees every
//!   replica's.
//! - Propagation: a task registered on one replica and fired by another,
//!   one at a time: from the RegisterTask reply to the run's start on the
//!   other (its first slot is the moment of the call), i.e. how long a
//!   control call takes to reach the replica that fires.
//! - Failover: 10,000 tasks every second at random phases on the three;
//!   one is killed with kill -9. Measured: how long until its shards are
//!   owned by the others (its lease lapses first: 5 s by default), and how
//!   long until each task it fired has started a run again elsewhere (the
//!   longest is the failover time); what the gap cost (slots caught up, its
//!   runs reported ABANDONED), and that no slot started twice.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::{DateTime, Utc};
use recur::pb::v1::{Outcome, StreamResultsRequest, TaskResult};
use serde_json::json;

use crate::{
    cli::{Phase, Plan, StoreKind},
    firing::{self, Timing},
    report::{Report, Row, Target, fmt_count},
    server::ServerProcess,
    stats::Percentiles,
    store::CaseStore,
    tasks::{self, Work},
};

/// Replicas of each case.
const REPLICAS: usize = 3;

/// Shards of the store (the servers' default `--store-shards`).
const SHARDS: u32 = 16;

/// The servers' lease (their default `--lease-secs`).
const LEASE: Duration = Duration::from_secs(5);

/// How long the failover case follows results after the kill.
const AFTER_KILL: Duration = Duration::from_secs(15);

/// How long the replicas may take to share the shards at start.
const BALANCE_LIMIT: Duration = Duration::from_secs(30);

/// Every part, each on a fresh prefix with three fresh servers.
pub async fn run(plan: &Plan, report: &mut Report) {
    for phase in [Phase::Random, Phase::Herd] {
        firing_case(plan, report, phase).await;
    }
    propagation_case(plan, report).await;
    failover_case(plan, report).await;
}

/// Tasks registered one by one in the propagation case.
const PROPAGATION_TASKS: usize = 200;

async fn propagation_case(plan: &Plan, report: &mut Report) {
    let count = if plan.replica_tasks < 1_000 {
        20
    } else {
        PROPAGATION_TASKS
    };
    eprintln!("replicas: propagation, {count} registrations");
    let store = CaseStore::open(StoreKind::Redis, &plan.redis_url, plan.keep_redis_keys).await;
    let servers = start_replicas(&store, count).await;
    let owners = store.lease_owners(SHARDS).await;
    let mut called = servers[0].client().await;
    let mut stream = follow_all(&servers[0]).await;
    // Tasks whose shard another replica than the one called owns.
    let ids: Vec<String> = (0..)
        .map(tasks::task_id)
        .filter(|id| {
            let shard = recur::store::redis::shard_of(id, SHARDS) as usize;
            !owners[shard].starts_with("replica0/")
        })
        .take(count)
        .collect();
    let mut waits_us: Vec<i64> = Vec::with_capacity(count);
    for (i, id) in ids.iter().enumerate() {
        // Far enough ahead that the call lands before it on a slow or debug
        // build: a start_at already past when the server reads it is not a
        // slot (the first one is then an hour later), and this case would
        // wait for nothing.
        let start_at = Utc::now() + chrono::Duration::milliseconds(START_AHEAD_MS);
        let request = recur::pb::v1::RegisterTaskRequest {
            task_id: id.clone(),
            spec: Some(tasks::spec(
                &Work::Noop,
                i,
                Duration::from_secs(3600),
                start_at,
            )),
            request_id: String::new(),
            ..Default::default()
        };
        called.register_task(request).await.expect("RegisterTask");
        let replied = Utc::now();
        // Its first run's result, on the stream.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let message = tokio::time::timeout_at(deadline, stream.message()).await;
            let Ok(Ok(Some(result))) = message else {
                eprintln!("  no result for {id} within 10 s");
                break;
            };
            if result.task_id == *id {
                if let Some(started) = result.started_at.as_ref() {
                    let started = tasks::instant(Some(started));
                    // From the reply or the slot, whichever came last.
                    let from = replied.max(start_at);
                    waits_us.push(tasks::micros_between(from, started).max(0));
                }
                break;
            }
        }
    }
    drop(stream);
    for server in servers {
        server.stop().await;
    }
    store.finish().await;
    let measured = waits_us.len();
    let waits = Percentiles::of_micros(&mut waits_us);
    report.add(Row {
        scenario: "replicas".to_string(),
        subject: "recur x3, redis store".to_string(),
        case: format!("register on one, fired by its shard's owner, x{count}"),
        measure: "from reply to start".to_string(),
        latency: waits,
        count: format!("{measured}/{count} started"),
        missed_doubled: String::new(),
        cpu_percent: None,
        peak_rss: None,
        bytes_per_task: None,
        notes: vec![
            format!("registered one at a time on one replica, each fired by another; its first slot {START_AHEAD_MS} ms after the call, measured from the reply or the slot, whichever is later"),
        ],
        json: json!({
            "registrations": count,
            "started": measured,
            "reply_to_start": waits.map(Percentiles::to_json),
        }),
    });
    report.target(Target::at_most(
        "replicas: a control call takes effect on every replica within 100 ms (p99, register to start)".to_string(),
        waits.map(|w| w.p99).filter(|_| measured == count),
        100.0,
        "ms",
    ));
}

/// Three servers on `store`, once each owns a share of the shards.
/// How far ahead of the call the propagation case puts a task's first slot.
const START_AHEAD_MS: i64 = 50;

async fn start_replicas(store: &CaseStore, tasks: usize) -> Vec<ServerProcess> {
    let mut servers = Vec::with_capacity(REPLICAS);
    for _ in 0..REPLICAS {
        let name = format!("replica{}", servers.len());
        servers.push(ServerProcess::start_named(tasks + 1_000, store, Some(&name)).await);
    }
    let deadline = tokio::time::Instant::now() + BALANCE_LIMIT;
    loop {
        let owners = store.lease_owners(SHARDS).await;
        let distinct: HashSet<&String> = owners.iter().filter(|o| !o.is_empty()).collect();
        if owners.iter().all(|o| !o.is_empty()) && distinct.len() == REPLICAS {
            return servers;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replicas did not share the shards within {BALANCE_LIMIT:?}: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn firing_case(plan: &Plan, report: &mut Report, phase: Phase) {
    let tasks = plan.replica_tasks;
    let case = format!("{} {} x{REPLICAS}", fmt_count(tasks as u64), phase.name());
    eprintln!("replicas: firing {case}");
    let store = CaseStore::open(StoreKind::Redis, &plan.redis_url, plan.keep_redis_keys).await;
    let servers = start_replicas(&store, tasks).await;
    let timing = Timing::at(
        Utc::now() + firing::lead(tasks, StoreKind::Redis),
        plan.warmup.max(Duration::from_secs(1)),
        plan.window.max(Duration::from_secs(1)),
    );
    let refs: Vec<&ServerProcess> = servers.iter().collect();
    let measured = firing::measure_on(&refs, &store, tasks, phase, &Work::Noop, timing).await;
    for server in servers {
        server.stop().await;
    }
    store.finish().await;
    let row = firing::firing_row(
        "replicas",
        "recur x3, redis store",
        &format!("{} {}", fmt_count(tasks as u64), phase.name()),
        &measured,
    );
    report.add(row);
    report.target(Target::at_most(
        format!("replicas {case}: zero missed or doubled"),
        Some((measured.missed() + measured.tally.doubled) as f64),
        0.0,
        "missed+doubled",
    ));
}

/// What the failover stream saw of one result.
struct Seen {
    task: u32,
    run: u64,
    scheduled_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    outcome: Outcome,
    skipped_slots: u64,
}

async fn failover_case(plan: &Plan, report: &mut Report) {
    let tasks = plan.replica_tasks;
    eprintln!(
        "replicas: failover, {} random x{REPLICAS}, one killed",
        fmt_count(tasks as u64)
    );
    let store = CaseStore::open(StoreKind::Redis, &plan.redis_url, plan.keep_redis_keys).await;
    let mut servers = start_replicas(&store, tasks).await;
    let base = Utc::now() + firing::lead(tasks, StoreKind::Redis);
    let mut clients = Vec::new();
    for server in &servers[..2] {
        clients.extend(tasks::register_clients(server).await);
    }
    tasks::register_all(
        &clients,
        tasks,
        &Work::Noop,
        Phase::Random,
        Duration::from_secs(1),
        base,
    )
    .await;
    drop(clients);
    firing::sleep_until(base + chrono::Duration::from_std(plan.warmup).unwrap_or_default()).await;

    // Followed on a replica that stays.
    let mut stream = follow_all(&servers[0]).await;
    let owners_before = store.lease_owners(SHARDS).await;
    let victim = servers.pop().expect("three servers");
    let killed_at = Utc::now();
    victim.kill().await;

    let mut seen: Vec<Seen> = Vec::new();
    let mut handed_over: Option<Duration> = None;
    let mut victim_owner: Option<String> = None;
    let end = tokio::time::Instant::now() + AFTER_KILL;
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = poll.tick(), if handed_over.is_none() => {
                let owners = store.lease_owners(SHARDS).await;
                let now: HashSet<&String> = owners.iter().collect();
                if owners.iter().all(|o| !o.is_empty()) && now.len() == REPLICAS - 1 {
                    handed_over = (Utc::now() - killed_at).to_std().ok();
                    victim_owner = owners_before.iter().find(|o| !now.contains(o)).cloned();
                }
            }
            message = stream.message() => match message {
                Ok(Some(result)) => {
                    if let Some(seen_result) = seen_of(&result) {
                        seen.push(seen_result);
                    }
                }
                Ok(None) | Err(_) => break,
            },
        }
    }
    drop(stream);
    for server in servers {
        server.stop().await;
    }
    store.finish().await;

    let victims: HashSet<u32> = (0..tasks)
        .filter(|&i| {
            let shard = recur::store::redis::shard_of(&tasks::task_id(i), SHARDS) as usize;
            victim_owner.as_ref() == owners_before.get(shard)
        })
        .map(|i| i as u32)
        .collect();
    let mut first_after: HashMap<u32, DateTime<Utc>> = HashMap::new();
    let mut slots: HashMap<(u32, DateTime<Utc>), u64> = HashMap::new();
    let (mut doubled, mut caught_up, mut abandoned) = (0u64, 0u64, 0u64);
    for s in &seen {
        match s.outcome {
            Outcome::Skipped => caught_up += s.skipped_slots,
            Outcome::Abandoned => abandoned += 1,
            _ => {}
        }
        if let Some(started) = s.started_at {
            if let Some(previous) = slots.insert((s.task, s.scheduled_at), s.run)
                && previous != s.run
            {
                doubled += 1;
            }
            if victims.contains(&s.task) && started > killed_at {
                first_after
                    .entry(s.task)
                    .and_modify(|t| *t = (*t).min(started))
                    .or_insert(started);
            }
        }
    }
    let mut waits_us: Vec<i64> = first_after
        .values()
        .map(|t| (*t - killed_at).num_microseconds().unwrap_or(i64::MAX))
        .collect();
    let resumed = waits_us.len();
    let waits = Percentiles::of_micros(&mut waits_us);
    let failover_ms = waits.map(|w| w.max);
    let bound_ms = (LEASE.as_secs_f64() * 1.2 + 1.0) * 1000.0;
    let mut notes = vec![
        format!(
            "shards owned by the others {:.2} s after the kill",
            handed_over.map_or(f64::NAN, |d| d.as_secs_f64())
        ),
        format!("{} slots caught up (SKIPPED)", fmt_count(caught_up)),
        format!("{abandoned} runs reported ABANDONED"),
        format!("lease {} s", LEASE.as_secs()),
    ];
    if resumed < victims.len() {
        notes.push(format!(
            "{} of the killed replica's tasks had not run again",
            victims.len() - resumed
        ));
    }
    report.add(Row {
        scenario: "replicas".to_string(),
        subject: "recur x3, redis store".to_string(),
        case: format!("kill -9 of 1 of 3, {} random", fmt_count(tasks as u64)),
        measure: "from kill to next start".to_string(),
        latency: waits,
        count: format!(
            "resumed {}/{}",
            fmt_count(resumed as u64),
            fmt_count(victims.len() as u64)
        ),
        missed_doubled: format!("- / {doubled}"),
        cpu_percent: None,
        peak_rss: None,
        bytes_per_task: None,
        notes,
        json: json!({
            "tasks": tasks,
            "victim_tasks": victims.len(),
            "resumed": resumed,
            "failover_ms": failover_ms,
            "wait_after_kill": waits.map(Percentiles::to_json),
            "shards_handed_over_s": handed_over.map(|d| d.as_secs_f64()),
            "caught_up_slots": caught_up,
            "abandoned": abandoned,
            "doubled": doubled,
            "lease_s": LEASE.as_secs_f64(),
        }),
    });
    report.target(Target::at_most(
        format!(
            "replicas failover: every task of the killed replica runs again within lease x 1.2 + 1 s ({bound_ms:.0} ms)"
        ),
        failover_ms.filter(|_| resumed == victims.len()),
        bound_ms,
        "ms",
    ));
    report.target(Target::at_most(
        "replicas failover: zero doubled".to_string(),
        Some(doubled as f64),
        0.0,
        "doubled",
    ));
}

/// A live stream of every result, on `server`.
async fn follow_all(server: &ServerProcess) -> tonic::Streaming<TaskResult> {
    server
        .client()
        .await
        .stream_results(StreamResultsRequest {
            task_ids: Vec::new(),
            after_cursor: String::new(),
            history_only: false,
        })
        .await
        .expect("StreamResults on a replica")
        .into_inner()
}

fn seen_of(result: &TaskResult) -> Option<Seen> {
    Some(Seen {
        task: tasks::task_index(&result.task_id)?,
        run: result.run,
        scheduled_at: tasks::instant(result.scheduled_at.as_ref()),
        started_at: result.started_at.as_ref().map(|t| tasks::instant(Some(t))),
        outcome: result.outcome(),
        skipped_slots: result.skipped_slots,
    })
}
