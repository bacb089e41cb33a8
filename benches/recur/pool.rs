//! Scenario 7, pool (Redis only): how the store should reach Redis, chosen
//! by measurement. Concurrent callers each send small commands (HGET of one
//! field) back to back, in the bench process, through:
//!
//! - *deadpool, checkout per command*: a `deadpool_redis::Pool` of 16
//!   connections, checked out for each command, which is what recur's
//!   store did until the choice below was made (`RedisPool::get` per step).
//!   A checkout is exclusive, so at most pool-size commands are in flight,
//!   and deadpool-redis recycles every checkout with `UNWATCH` + `PING`
//!   (`Manager::recycle`): a round trip of its own before each command;
//! - *deadpool, a connection per caller*: the same with as many
//!   connections as callers, so checkouts never wait: what is left is the
//!   recycle's round trip;
//! - *one shared multiplexed connection*: one
//!   `redis::aio::MultiplexedConnection` cloned per caller; clones pipeline
//!   their commands on one socket, nothing is checked out;
//! - *recur's pool*: `recur::RedisPool` as the server opens it (the chosen
//!   design: `Config::default().redis_pool_size` shared multiplexed
//!   connections, named, reconnected on failure), `get` per command.
//!
//! Per mode and caller count: commands per second, latency p50/p99, and
//! the Redis server's CPU.

use std::time::{Duration, Instant};

use deadpool_redis::{
    Manager, Pool, Runtime,
    redis::{self, aio::MultiplexedConnection},
};
use serde_json::json;

use crate::{
    cli::{Plan, StoreKind},
    procfs::CpuMeter,
    report::{Report, Row, fmt_count},
    stats::Percentiles,
    store::{self, CaseStore},
};

/// Upper bound of commands per caller per case, so a fast machine cannot
/// make a case unbounded in memory.
const MAX_CALLS_PER_CALLER: usize = 1_000_000;

/// The hash field every command reads (a small value, like a task's `rev`).
const FIELD: &str = "rev";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    DeadpoolShared,
    DeadpoolPerCaller,
    Multiplexed,
    Recur,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::DeadpoolShared => "deadpool, checkout per command",
            Mode::DeadpoolPerCaller => "deadpool, a connection per caller",
            Mode::Multiplexed => "one shared multiplexed connection",
            Mode::Recur => "recur's pool (shared, multiplexed)",
        }
    }
}

/// How a caller reaches Redis.
#[derive(Clone)]
enum Via {
    Pool(Pool),
    Shared(MultiplexedConnection),
    Recur(recur::RedisPool),
}

/// Runs every mode at every caller count of the plan.
pub async fn run(plan: &Plan, report: &mut Report) {
    eprintln!("pool: HGET through deadpool, a shared multiplexed connection and recur's pool");
    let store = CaseStore::open(StoreKind::Redis, &plan.redis_url, plan.keep_redis_keys).await;
    let CaseStore::Redis(prefix) = &store else {
        unreachable!("opened as Redis");
    };
    let key = format!("{}pool", prefix.prefix());
    let mut setup = store::connect(&plan.redis_url).await;
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(FIELD)
        .arg("17")
        .query_async(&mut setup)
        .await
        .expect("writing the pool scenario's hash");
    // What recur used before it chose (deadpool-redis, 16 connections).
    let pool_size = 16;
    for mode in [
        Mode::DeadpoolShared,
        Mode::DeadpoolPerCaller,
        Mode::Multiplexed,
        Mode::Recur,
    ] {
        for &callers in &plan.callers {
            let via = match mode {
                Mode::DeadpoolShared => Via::Pool(pool(&plan.redis_url, pool_size)),
                Mode::DeadpoolPerCaller => Via::Pool(pool(&plan.redis_url, callers)),
                Mode::Multiplexed => Via::Shared(store::connect(&plan.redis_url).await),
                Mode::Recur => Via::Recur(recur_pool(&plan.redis_url).await),
            };
            // Connections are opened before the clock starts.
            warm(&via, callers, &key).await;
            let redis_cpu = store.redis_pid().map(CpuMeter::start);
            let started = Instant::now();
            let handles: Vec<_> = (0..callers)
                .map(|_| {
                    let (via, key, call_time) = (via.clone(), key.clone(), plan.call_time);
                    tokio::spawn(async move { call_loop(via, &key, call_time).await })
                })
                .collect();
            let mut latencies_us = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            for handle in handles {
                let calls = handle.await.expect("a pool caller panicked");
                latencies_us.extend(calls.latencies_us);
                errors += calls.errors;
                first_error = first_error.or(calls.first_error);
            }
            let elapsed = started.elapsed().as_secs_f64();
            let redis_cpu_percent = redis_cpu.and_then(|m| m.percent());
            let per_second = latencies_us.len() as f64 / elapsed;
            let latency = Percentiles::of_micros(&mut latencies_us);
            let mut notes = Vec::new();
            if let Some(redis) = redis_cpu_percent {
                notes.push(format!("redis-server CPU {redis:.0}%"));
            }
            match &via {
                Via::Pool(pool) => notes.push(format!("pool of {}", pool.status().max_size)),
                Via::Recur(_) => notes.push(format!(
                    "{} shared connections",
                    recur::Config::default().redis_pool_size
                )),
                Via::Shared(_) => {}
            }
            if errors > 0 {
                notes.push(format!(
                    "{} errors, first: {}",
                    fmt_count(errors),
                    first_error.unwrap_or_default()
                ));
            }
            report.add(Row {
                scenario: "pool".to_string(),
                subject: mode.name().to_string(),
                case: format!("HGET x{callers}"),
                measure: "command latency".to_string(),
                latency,
                count: format!("{}/s", fmt_count(per_second.round() as u64)),
                missed_doubled: String::new(),
                cpu_percent: None,
                peak_rss: None,
                bytes_per_task: None,
                notes,
                json: json!({
                    "mode": mode.name(),
                    "callers": callers,
                    "seconds": elapsed,
                    "ops_per_s": per_second,
                    "errors": errors,
                    "latency": latency.map(Percentiles::to_json),
                    "redis_cpu_percent_of_one_core": redis_cpu_percent,
                }),
            });
            match via {
                Via::Pool(pool) => pool.close(),
                Via::Recur(pool) => pool.close().await,
                Via::Shared(_) => {}
            }
        }
    }
    drop(setup);
    store.finish().await;
}

/// A deadpool-redis pool of `size` connections, built as recur builds its
/// own (`src/redis_pool.rs`, less the connection names and timeouts).
fn pool(url: &str, size: usize) -> Pool {
    let manager = Manager::new(url).unwrap_or_else(|e| panic!("{url} is not a Redis URL: {e}"));
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .build()
        .expect("building a deadpool-redis pool")
}

/// recur's pool with the server's default settings.
async fn recur_pool(url: &str) -> recur::RedisPool {
    let config = recur::Config::default();
    recur::RedisPool::open(recur::redis_pool::PoolSettings {
        url: url.to_string(),
        client_name: "recur-bench-pool".to_string(),
        size: config.redis_pool_size,
        connect_timeout: config.redis_connect_timeout,
        response_timeout: config.redis_response_timeout,
        startup_window: Duration::from_secs(5),
    })
    .await
    .unwrap_or_else(|e| panic!("opening recur's pool on {url}: {e}"))
}

/// One command per caller at once, so a pool has opened its connections
/// before the measurement starts.
async fn warm(via: &Via, callers: usize, key: &str) {
    let calls = (0..callers).map(|_| {
        let via = via.clone();
        async move { hget(&via, key).await }
    });
    for outcome in futures::future::join_all(calls).await {
        outcome.unwrap_or_else(|e| panic!("warming the pool scenario's connections: {e}"));
    }
}

async fn hget(via: &Via, key: &str) -> Result<(), String> {
    let mut cmd = redis::cmd("HGET");
    cmd.arg(key).arg(FIELD);
    match via {
        Via::Pool(pool) => {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            cmd.query_async::<Option<String>>(&mut *conn)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
        Via::Shared(conn) => cmd
            .query_async::<Option<String>>(&mut conn.clone())
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Via::Recur(pool) => {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            cmd.query_async::<Option<String>>(&mut conn)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    }
}

/// What one caller did.
struct Calls {
    latencies_us: Vec<i64>,
    errors: u64,
    first_error: Option<String>,
}

/// HGET back to back for `call_time`.
async fn call_loop(via: Via, key: &str, call_time: Duration) -> Calls {
    let mut calls = Calls {
        latencies_us: Vec::new(),
        errors: 0,
        first_error: None,
    };
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < call_time && n < MAX_CALLS_PER_CALLER {
        let t0 = Instant::now();
        match hget(&via, key).await {
            Ok(()) => calls.latencies_us.push(t0.elapsed().as_micros() as i64),
            Err(e) => {
                calls.errors += 1;
                calls.first_error.get_or_insert(e);
            }
        }
        n += 1;
    }
    calls
}
