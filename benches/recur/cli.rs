//! Command-line flags of the bench: which scenarios at which sizes, the
//! measure windows, where the JSON goes, and the hidden modes in which the
//! same binary runs a measured process (`--serve`, `--tcs-peer`).

use std::{path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

/// One part of the suite; see benches/README.md for what each measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N no-op tasks every 1 s: lateness, fires, server CPU and memory.
    Firing,
    /// RegisterTask, GetTask, PauseTask with concurrent callers.
    Control,
    /// Subscribers following all results while 1,000 runs finish per second.
    Streaming,
    /// 1,000 HTTP tasks every 1 s against a local HTTP server.
    E2e,
    /// The firing scenario for the Python and Rust peers, next to recur.
    Peers,
}

/// How the tasks' slots are laid out within the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// Every task's `start_at` spread uniformly over the second.
    Random,
    /// Every task on the same instant.
    Herd,
}

impl Phase {
    /// Name used in the table, the JSON and the peers' arguments.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Random => "random",
            Phase::Herd => "herd",
        }
    }
}

/// A peer scheduler of the side-by-side scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    /// An aiohttp app with one asyncio task per job sleeping to its next target.
    Asyncio,
    /// APScheduler 3.x `AsyncIOScheduler` with an `IntervalTrigger`.
    Apscheduler,
    /// tokio-cron-scheduler, a repeated job per task.
    TokioCronScheduler,
}

impl Peer {
    /// Name used in the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Asyncio => "asyncio idiom (aiohttp app)",
            Peer::Apscheduler => "APScheduler 3 AsyncIOScheduler",
            Peer::TokioCronScheduler => "tokio-cron-scheduler",
        }
    }
}

/// `cargo bench --bench recur -- [flags]`. With no flag: the full suite.
#[derive(Debug, Parser)]
#[command(name = "recur-bench", about = "recur's benchmark suite")]
pub struct Args {
    /// Every recur scenario at tiny sizes (under a minute); peers skipped.
    #[arg(long)]
    pub quick: bool,
    /// Only these scenarios (repeat or comma-separate); default all.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenario: Vec<Scenario>,
    /// Task counts for `firing` and `peers` (e.g. `--tasks 1000,10000`), or
    /// the HTTP task count of `e2e`, or the task count of `streaming`.
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<usize>,
    /// Phases for `firing` and `peers`; default both.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub phase: Vec<Phase>,
    /// Concurrent callers for `control`; default 1,16,64.
    #[arg(long, value_delimiter = ',')]
    pub callers: Vec<usize>,
    /// Subscriber counts for `streaming`; default 1,10,100,1000.
    #[arg(long, value_delimiter = ',')]
    pub subscribers: Vec<usize>,
    /// Peers for `peers`; default all three.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub peer: Vec<Peer>,
    /// Seconds of warm-up after the first slot before measuring.
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Seconds of the measure window.
    #[arg(long)]
    pub window: Option<f64>,
    /// Seconds each control-plane case calls for.
    #[arg(long)]
    pub call_secs: Option<f64>,
    /// Where the results go as JSON.
    #[arg(long, default_value = "target/bench-recur.json")]
    pub json: PathBuf,
    /// Where the Python peers' virtualenv lives (created when missing).
    #[arg(long, default_value = "target/bench-venv")]
    pub venv: PathBuf,

    // ---- hidden: the modes in which this binary is a measured process ----
    /// Serve recur on 127.0.0.1:0 with a no-op kind; print the address.
    #[arg(long, hide = true)]
    pub serve: bool,
    /// Task cap of the served recur.
    #[arg(long, hide = true, default_value_t = 1_000_000)]
    pub max_tasks: usize,
    /// Run tokio-cron-scheduler as a peer (with --peer-tasks, --phase, --base).
    #[arg(long, hide = true)]
    pub tcs_peer: bool,
    /// Task count of a peer process.
    #[arg(long, hide = true, default_value_t = 0)]
    pub peer_tasks: usize,
    /// Unix time (seconds) of a peer's first slot.
    #[arg(long, hide = true, default_value_t = 0.0)]
    pub base: f64,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

/// Sizes and windows of one run of the suite, after `--quick` and the flags.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Scenarios to run, in order.
    pub scenarios: Vec<Scenario>,
    /// Task counts of the firing scenario.
    pub firing_tasks: Vec<usize>,
    /// Phases of the firing and peers scenarios.
    pub phases: Vec<Phase>,
    /// Concurrent callers of the control-plane scenario.
    pub callers: Vec<usize>,
    /// How long each control-plane case calls.
    pub call_time: Duration,
    /// Subscriber counts of the streaming scenario.
    pub subscribers: Vec<usize>,
    /// Tasks (runs per second) of the streaming scenario.
    pub streaming_tasks: usize,
    /// HTTP tasks of the end-to-end scenario.
    pub e2e_tasks: usize,
    /// Task counts of the peers scenario.
    pub peer_tasks: Vec<usize>,
    /// Peers to compare with.
    pub peers: Vec<Peer>,
    /// Where the Python peers' virtualenv lives.
    pub venv: PathBuf,
    /// Warm-up after the first slot.
    pub warmup: Duration,
    /// Measure window.
    pub window: Duration,
}

impl Plan {
    /// The plan the flags ask for: the full suite, or `--quick`'s tiny one.
    pub fn from_args(args: &Args) -> Plan {
        let quick = args.quick;
        let pick = |given: &[usize], full: &[usize], tiny: &[usize]| -> Vec<usize> {
            if !given.is_empty() {
                given.to_vec()
            } else if quick {
                tiny.to_vec()
            } else {
                full.to_vec()
            }
        };
        let scenarios = if !args.scenario.is_empty() {
            args.scenario.clone()
        } else if quick {
            // The peers need a Python install; quick mode is for CI.
            vec![
                Scenario::Firing,
                Scenario::Control,
                Scenario::Streaming,
                Scenario::E2e,
            ]
        } else {
            vec![
                Scenario::Firing,
                Scenario::Control,
                Scenario::Streaming,
                Scenario::E2e,
                Scenario::Peers,
            ]
        };
        let secs = |given: Option<f64>, full: f64, tiny: f64| {
            Duration::from_secs_f64(given.unwrap_or(if quick { tiny } else { full }))
        };
        let single = |given: &[usize], full: usize, tiny: usize| {
            given
                .first()
                .copied()
                .unwrap_or(if quick { tiny } else { full })
        };
        Plan {
            scenarios,
            firing_tasks: pick(&args.tasks, &[1_000, 10_000, 100_000], &[200]),
            phases: if args.phase.is_empty() {
                vec![Phase::Random, Phase::Herd]
            } else {
                args.phase.clone()
            },
            callers: pick(&args.callers, &[1, 16, 64], &[1, 4]),
            call_time: secs(args.call_secs, 3.0, 0.3),
            subscribers: pick(&args.subscribers, &[1, 10, 100, 1_000], &[2]),
            streaming_tasks: single(&args.tasks, 1_000, 100),
            e2e_tasks: single(&args.tasks, 1_000, 50),
            peer_tasks: pick(&args.tasks, &[1_000, 10_000], &[200]),
            peers: if args.peer.is_empty() {
                vec![Peer::Asyncio, Peer::Apscheduler, Peer::TokioCronScheduler]
            } else {
                args.peer.clone()
            },
            venv: args.venv.clone(),
            warmup: secs(args.warmup, 3.0, 1.0),
            window: secs(args.window, 10.0, 1.0),
        }
    }
}
