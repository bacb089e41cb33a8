//! Command-line flags of the bench: which scenarios at which sizes on which
//! task store, the measure windows, where the JSON goes, and the hidden
//! modes in which the same binary runs a measured process (`--serve`,
//! `--tcs-peer`).

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
    /// Redis store only: a restarted server arms every stored task.
    Recovery,
    /// Redis only: concurrent small commands through a pool checkout each
    /// against one shared multiplexed connection.
    Pool,
    /// Redis only: three servers on one store sharing the firing, and the
    /// failover when one is killed.
    Replicas,
    /// What one histogram observation costs on the firing path:
    /// prometheus-client's (recur's) against the metrics crate's, on one
    /// thread and on two at once.
    Metrics,
}

/// Where the measured server keeps its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// `Config::default()`: the in-process store.
    Memory,
    /// `Config::redis_url` set: Redis is the system of record, under a
    /// fresh key prefix per case.
    Redis,
}

impl StoreKind {
    /// Name used in the table's subject column and the JSON.
    pub fn subject(self) -> &'static str {
        match self {
            StoreKind::Memory => "recur",
            StoreKind::Redis => "recur, redis store",
        }
    }
}

/// One case of the firing scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FiringCase {
    /// Tasks registered.
    pub tasks: usize,
    /// How their slots are laid out within `every`.
    pub phase: Phase,
    /// Their cadence.
    pub every: Duration,
}

impl FiringCase {
    /// "10,000 random", or "100,000 random every 10 s" off the 1 s cadence.
    pub fn name(&self) -> String {
        let mut name = format!(
            "{} {}",
            crate::report::fmt_count(self.tasks as u64),
            self.phase.name()
        );
        if self.every != ONE_SECOND {
            name.push_str(&format!(" every {} s", self.every.as_secs_f64()));
        }
        name
    }
}

/// The cadence of every scenario unless `--every` says otherwise.
pub const ONE_SECOND: Duration = Duration::from_secs(1);

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
    /// Cadences of the `firing` tasks in seconds (e.g. `--every 1,10`);
    /// default 1. Random phases spread over the cadence; the warm-up and
    /// the window are at least one cadence long.
    #[arg(long, value_delimiter = ',')]
    pub every: Vec<f64>,
    /// Task stores of `firing` and `control` (`recovery` and `pool` need
    /// `redis`; `streaming`, `e2e` and `peers` run on memory only);
    /// default memory, with `--quick` both.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub store: Vec<StoreKind>,
    /// The Redis of the `redis` store, `recovery` and `pool`. Each case
    /// uses a fresh key prefix and deletes its keys when it ends; the
    /// server's CPU is read from /proc when it runs on this machine.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Leave each case's Redis keys in place and print their prefix (to
    /// profile a server started by hand on them).
    #[arg(long)]
    pub keep_redis_keys: bool,
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
    /// Redis store of the served recur: its key prefix (with `--redis-url`);
    /// none serves the memory store.
    #[arg(long, hide = true)]
    pub key_prefix: Option<String>,
    /// Node id of the served recur (replicas tell theirs apart by it).
    #[arg(long, hide = true)]
    pub node_id: Option<String>,
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
    /// Task stores of the firing and control scenarios.
    pub stores: Vec<StoreKind>,
    /// Cases of the firing scenario on the memory store.
    pub firing_memory: Vec<FiringCase>,
    /// Cases of the firing scenario on the Redis store.
    pub firing_redis: Vec<FiringCase>,
    /// Phases of the peers scenario.
    pub phases: Vec<Phase>,
    /// Concurrent callers of the control-plane and pool scenarios.
    pub callers: Vec<usize>,
    /// How long each control-plane and pool case calls.
    pub call_time: Duration,
    /// Subscriber counts of the streaming scenario.
    pub subscribers: Vec<usize>,
    /// Tasks (runs per second) of the streaming scenario.
    pub streaming_tasks: usize,
    /// HTTP tasks of the end-to-end scenario.
    pub e2e_tasks: usize,
    /// Stored tasks of the recovery scenario.
    pub recovery_tasks: usize,
    /// Restarts the recovery scenario times.
    pub recovery_restarts: usize,
    /// Tasks of the replicas scenario.
    pub replica_tasks: usize,
    /// Observations per thread of the metrics scenario.
    pub metrics_observations: usize,
    /// Task counts of the peers scenario.
    pub peer_tasks: Vec<usize>,
    /// Peers to compare with.
    pub peers: Vec<Peer>,
    /// Where the Python peers' virtualenv lives.
    pub venv: PathBuf,
    /// The Redis of the Redis store.
    pub redis_url: String,
    /// Whether cases leave their Redis keys behind.
    pub keep_redis_keys: bool,
    /// Warm-up after the first slot (at least one cadence).
    pub warmup: Duration,
    /// Measure window (at least one cadence).
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
        let stores = if !args.store.is_empty() {
            args.store.clone()
        } else if quick {
            // CI has Redis on 127.0.0.1:6379: the smoke run covers both.
            vec![StoreKind::Memory, StoreKind::Redis]
        } else {
            vec![StoreKind::Memory]
        };
        let memory = stores.contains(&StoreKind::Memory);
        let redis = stores.contains(&StoreKind::Redis);
        let scenarios = if !args.scenario.is_empty() {
            args.scenario.clone()
        } else {
            let mut all = vec![Scenario::Firing, Scenario::Control, Scenario::Metrics];
            if memory {
                all.extend([Scenario::Streaming, Scenario::E2e]);
                // The peers need a Python install; quick mode is for CI.
                if !quick {
                    all.push(Scenario::Peers);
                }
            }
            if redis {
                all.extend([Scenario::Recovery, Scenario::Pool, Scenario::Replicas]);
            }
            all
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
        let phases = if args.phase.is_empty() {
            vec![Phase::Random, Phase::Herd]
        } else {
            args.phase.clone()
        };
        let everies: Vec<Duration> = args
            .every
            .iter()
            .map(|&s| Duration::from_secs_f64(s))
            .collect();
        let firing_cases = |defaults: &[(usize, Phase, u64)]| -> Vec<FiringCase> {
            if args.tasks.is_empty() && args.phase.is_empty() && everies.is_empty() {
                return defaults
                    .iter()
                    .map(|&(tasks, phase, every)| FiringCase {
                        tasks,
                        phase,
                        every: Duration::from_secs(every),
                    })
                    .collect();
            }
            let mut sizes: Vec<usize> = defaults.iter().map(|c| c.0).collect();
            sizes.dedup();
            let sizes = if args.tasks.is_empty() {
                sizes
            } else {
                args.tasks.clone()
            };
            let everies = if everies.is_empty() {
                vec![ONE_SECOND]
            } else {
                everies.clone()
            };
            let mut cases = Vec::new();
            for &tasks in &sizes {
                for &phase in &phases {
                    for &every in &everies {
                        cases.push(FiringCase {
                            tasks,
                            phase,
                            every,
                        });
                    }
                }
            }
            cases
        };
        use Phase::{Herd, Random};
        let firing_memory = firing_cases(if quick {
            &[(200, Random, 1), (200, Herd, 1)]
        } else {
            &[
                (1_000, Random, 1),
                (1_000, Herd, 1),
                (10_000, Random, 1),
                (10_000, Herd, 1),
                (100_000, Random, 1),
                (100_000, Herd, 1),
            ]
        });
        // The rows; quick covers a cadence other than 1 s.
        let firing_redis = firing_cases(if quick {
            &[(200, Random, 2), (200, Herd, 1)]
        } else {
            &[
                (10_000, Random, 1),
                (10_000, Herd, 1),
                (100_000, Random, 10),
            ]
        });
        Plan {
            scenarios,
            stores,
            firing_memory,
            firing_redis,
            phases,
            callers: pick(&args.callers, &[1, 16, 64], &[1, 4]),
            call_time: secs(args.call_secs, 3.0, 0.3),
            subscribers: pick(&args.subscribers, &[1, 10, 100, 1_000], &[2]),
            streaming_tasks: single(&args.tasks, 1_000, 100),
            e2e_tasks: single(&args.tasks, 1_000, 50),
            recovery_tasks: single(&args.tasks, 100_000, 200),
            recovery_restarts: if quick { 1 } else { 3 },
            replica_tasks: single(&args.tasks, 10_000, 300),
            metrics_observations: if quick { 100_000 } else { 5_000_000 },
            peer_tasks: pick(&args.tasks, &[1_000, 10_000], &[200]),
            peers: if args.peer.is_empty() {
                vec![Peer::Asyncio, Peer::Apscheduler, Peer::TokioCronScheduler]
            } else {
                args.peer.clone()
            },
            venv: args.venv.clone(),
            redis_url: args.redis_url.clone(),
            keep_redis_keys: args.keep_redis_keys,
            warmup: secs(args.warmup, 3.0, 1.0),
            window: secs(args.window, 10.0, 1.0),
        }
    }

    /// Firing cases on `store`.
    pub fn firing_cases(&self, store: StoreKind) -> &[FiringCase] {
        match store {
            StoreKind::Memory => &self.firing_memory,
            StoreKind::Redis => &self.firing_redis,
        }
    }
}
