//! `cargo bench --bench recur`: recur's benchmark suite. It starts the real
//! server as its own process (this binary re-executed with `--serve`,
//! embedding the library with a no-op kind, on the memory or the Redis
//! store), drives it over gRPC on 127.0.0.1, takes CPU and memory from the
//! OS (Redis' too, when it runs on this machine), and reads lateness from
//! the results the server streams. Prints one Markdown table and writes
//! the details as JSON. benches/README.md explains every scenario and flag
//! and records a full run.
//!
//! Files (beside this one in benches/recur/):
//! - `cli.rs`: flags, `--quick`, the sizes of a run.
//! - `server.rs`: the `--serve` mode and the handle that starts and kills it.
//! - `store.rs`: the store of a case: memory, or a Redis key prefix of its own.
//! - `procfs.rs`: CPU and memory of a process from /proc.
//! - `tasks.rs`: the tasks as gRPC requests, phases, parallel registration.
//! - `collect.rs`: follows StreamResults and accounts for the window's runs.
//! - `firing.rs`, `control.rs`, `streaming.rs`, `e2e.rs`, `peers.rs`,
//!   `recovery.rs`, `pool.rs`, `replicas.rs`: the scenarios.
//! - `tcs_peer.rs`: the `--tcs-peer` mode (tokio-cron-scheduler).
//! - `stats.rs`, `report.rs`: percentiles, the table, the targets, the JSON.
//!
//! The Python peers are in benches/peers/.

/// The `recur` binary's allocator (src/bin/recur.rs), so the `--serve`
/// child measures the server as shipped (the `--tcs-peer` child, this
/// binary too, gets it as well).
#[cfg(all(feature = "cli", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod cli;
mod collect;
mod control;
mod e2e;
mod firing;
mod metrics;
mod peers;
mod pool;
mod procfs;
mod recovery;
mod replicas;
mod report;
mod server;
mod stats;
mod store;
mod streaming;
mod tasks;
mod tcs_peer;

use std::time::Instant;

use clap::Parser;
use serde_json::json;

use crate::{
    cli::{Args, Plan, Scenario},
    report::Report,
};

fn main() {
    let args = Args::parse();
    if args.serve {
        let redis = args
            .key_prefix
            .clone()
            .map(|prefix| (args.redis_url.clone(), prefix));
        server::serve(args.max_tasks, redis, args.node_id.clone());
        return;
    }
    if args.tcs_peer {
        let (warmup, window) = (args.warmup.unwrap_or(3.0), args.window.unwrap_or(10.0));
        tcs_peer::run(args.peer_tasks, args.base, warmup, window);
        // Ends the scheduler's own tasks along with the process.
        std::process::exit(0);
    }
    let plan = Plan::from_args(&args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the bench runtime");
    let started = Instant::now();
    let report = runtime.block_on(run(&plan));
    let elapsed = started.elapsed().as_secs_f64();

    let (cores, cpu_model) = procfs::machine();
    println!();
    println!(
        "recur bench{}: {cores} cores ({cpu_model}), {}, window {} s after {} s warm-up, {elapsed:.0} s in all",
        if args.quick { " --quick" } else { "" },
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        plan.window.as_secs_f64(),
        plan.warmup.as_secs_f64(),
    );
    println!();
    report.print();
    let meta = json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "quick": args.quick,
        "cores": cores,
        "cpu_model": cpu_model,
        "warmup_s": plan.warmup.as_secs_f64(),
        "window_s": plan.window.as_secs_f64(),
        "elapsed_s": elapsed,
        "profile": if cfg!(debug_assertions) { "debug" } else { "optimised" },
    });
    match report.write_json(&args.json, meta) {
        Ok(()) => eprintln!("details written to {}", args.json.display()),
        Err(e) => eprintln!("could not write {}: {e}", args.json.display()),
    }
}

async fn run(plan: &Plan) -> Report {
    let mut report = Report::default();
    for scenario in &plan.scenarios {
        match scenario {
            Scenario::Firing => firing::run(plan, &mut report).await,
            Scenario::Control => control::run(plan, &mut report).await,
            Scenario::Streaming => streaming::run(plan, &mut report).await,
            Scenario::E2e => e2e::run(plan, &mut report).await,
            Scenario::Peers => peers::run(plan, &mut report).await,
            Scenario::Recovery => recovery::run(plan, &mut report).await,
            Scenario::Pool => pool::run(plan, &mut report).await,
            Scenario::Replicas => replicas::run(plan, &mut report).await,
            Scenario::Metrics => metrics::run(plan, &mut report),
        }
    }
    report
}
