//! Scenario 1, firing: N no-op tasks every second (or `--every`), slots at
//! random phases or all on one instant (herd), on each store of the plan.
//! Also the measuring core that streaming and end-to-end reuse: register,
//! warm up, measure a window, settle, account.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::{
    cli::{FiringCase, ONE_SECOND, Phase, Plan, StoreKind},
    collect::{Collector, Tally, Window},
    procfs::{self, CpuMeter},
    report::{Report, Row, Target, fmt_count},
    server::ServerProcess,
    stats::Percentiles,
    store::CaseStore,
    tasks::{self, Work},
};

/// Lead before the first slot: start-up plus registration at a pessimistic
/// rate for the store (gRPC on 2 cores shared with the server: 8,000
/// tasks/s in memory; 4,000/s to Redis, where RegisterTask measured
/// 20,000-28,000/s from 64 callers in December 2026, after registrations
/// stopped queueing behind one another; 1,500-2,000/s before). Registration that overruns the first
/// slot competes with firing and is noted in the row; a short overrun only
/// moves early slots to the next slot of their grid, which the warm-up
/// absorbs.
pub fn lead(tasks: usize, store: StoreKind) -> Duration {
    let per_second = match store {
        StoreKind::Memory => 8_000.0,
        StoreKind::Redis => 4_000.0,
    };
    Duration::from_secs_f64(1.5 + tasks as f64 / per_second)
}

/// How long to wait after the window for its last runs to be reported:
/// every task's next slot after it, plus time to work off a backlog.
fn settle_limit(tasks: usize, every: Duration) -> Duration {
    every + Duration::from_secs_f64(4.0 + tasks as f64 / 10_000.0)
}

/// When the tasks start, how often they run, and which slots are measured.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// First slot of the herd; random phases add up to one cadence.
    pub base: DateTime<Utc>,
    /// The tasks' cadence.
    pub every: Duration,
    /// The measured slots.
    pub window: Window,
}

impl Timing {
    /// Every second, base after the memory store's registration lead, then
    /// `warmup`, then `window`.
    pub fn plan(tasks: usize, warmup: Duration, window: Duration) -> Timing {
        Timing::at(Utc::now() + lead(tasks, StoreKind::Memory), warmup, window)
    }

    /// Every second, first slot at `base`, then `warmup`, then `window`.
    pub fn at(base: DateTime<Utc>, warmup: Duration, window: Duration) -> Timing {
        Timing::every(base, ONE_SECOND, warmup, window)
    }

    /// Every `every`, first slot at `base`, then `warmup`, then `window`.
    pub fn every(
        base: DateTime<Utc>,
        every: Duration,
        warmup: Duration,
        window: Duration,
    ) -> Timing {
        let start = base + warmup;
        Timing {
            base,
            every,
            window: Window {
                start,
                end: start + window,
            },
        }
    }
}

/// What one firing measurement found.
#[derive(Debug)]
pub struct Firing {
    /// Benchmark tasks registered.
    pub tasks: usize,
    /// Their cadence.
    pub every: Duration,
    /// How long registering them took.
    pub registration: Duration,
    /// Whether registration ended after the first slot.
    pub registration_overran: bool,
    /// Lateness of the window's runs.
    pub lateness: Option<Percentiles>,
    /// Slots in the window.
    pub expected: u64,
    /// What the collector saw.
    pub tally: Tally,
    /// Server CPU over the window, percent of one core (all replicas').
    pub cpu_percent: Option<f64>,
    /// Each replica's share of it, when there are several.
    pub replica_cpu_percent: Vec<Option<f64>>,
    /// CPU of the Redis the server stores in, over the same window, when
    /// it runs on this machine.
    pub redis_cpu_percent: Option<f64>,
    /// Redis commands over the window (name, calls, µs), busiest first.
    pub redis_commands: Vec<(String, u64, u64)>,
    /// Server peak RSS (VmHWM) at the end.
    pub peak_rss: Option<u64>,
    /// Server RSS growth from registering, per task.
    pub bytes_per_task: Option<f64>,
}

impl Firing {
    /// Slots that should have run and were not seen to.
    pub fn missed(&self) -> u64 {
        self.expected.saturating_sub(self.tally.fired)
    }

    /// "fires 10,000/10,000" and the missed/doubled column.
    pub fn fires_text(&self) -> (String, String) {
        (
            format!(
                "fires {}/{}",
                fmt_count(self.tally.fired),
                fmt_count(self.expected)
            ),
            format!(
                "{} / {}",
                fmt_count(self.missed()),
                fmt_count(self.tally.doubled)
            ),
        )
    }

    /// Everything as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "tasks": self.tasks,
            "registration_s": self.registration.as_secs_f64(),
            "registration_per_s": self.tasks as f64 / self.registration.as_secs_f64().max(1e-9),
            "registration_overran_first_slot": self.registration_overran,
            "lateness": self.lateness.map(Percentiles::to_json),
            "fires_expected": self.expected,
            "fires_done": self.tally.fired,
            "missed": self.missed(),
            "doubled": self.tally.doubled,
            "duplicate_deliveries": self.tally.duplicate_deliveries,
            "skipped": self.tally.skipped,
            "unsuccessful": self.tally.unsuccessful,
            "collector_lag_resumes": self.tally.lag_resumes,
            "collector_gaps": self.tally.gaps,
            "collector_unsettled_tasks": self.tally.unsettled,
            "every_s": self.every.as_secs_f64(),
            "server_cpu_percent_of_one_core": self.cpu_percent,
            "replica_cpu_percent_of_one_core": self.replica_cpu_percent,
            "redis_cpu_percent_of_one_core": self.redis_cpu_percent,
            "redis_commands_in_window": self
                .redis_commands
                .iter()
                .map(|(name, calls, usec)| json!({"command": name, "calls": calls, "usec": usec}))
                .collect::<Vec<_>>(),
            "server_peak_rss_bytes": self.peak_rss,
            "server_bytes_per_task": self.bytes_per_task,
        })
    }

    /// Notes for the table: anything that qualifies the numbers.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.replica_cpu_percent.len() > 1 {
            let each: Vec<String> = self
                .replica_cpu_percent
                .iter()
                .map(|cpu| cpu.map_or_else(|| "?".to_string(), |c| format!("{c:.0}%")))
                .collect();
            notes.push(format!("replicas' CPU {}", each.join(" + ")));
        }
        if let Some(redis) = self.redis_cpu_percent {
            notes.push(format!("redis-server CPU {redis:.0}%"));
        }
        // Per slot handled in the window: a run, or a skip (which is fired
        // and recorded too, without the start). The commands the server
        // sends itself: scripts (their time includes the commands they
        // run), reads of tasks, and PING (deadpool's check of each checkout
        // while recur used deadpool-redis; none since).
        let slots = self.tally.fired + self.tally.skipped;
        if !self.redis_commands.is_empty() && slots > 0 {
            let slots = slots as f64;
            let sent: Vec<String> = ["evalsha", "hmget", "ping"]
                .iter()
                .filter_map(|&sent| self.redis_commands.iter().find(|(n, _, _)| n == sent))
                .map(|(name, calls, usec)| {
                    format!(
                        "{name} {:.2} ({:.0} µs)",
                        *calls as f64 / slots,
                        *usec as f64 / slots
                    )
                })
                .collect();
            notes.push(format!("redis per slot: {}", sent.join(", ")));
        }
        if self.registration_overran {
            notes.push(format!(
                "registration {:.1}s overran the first slot",
                self.registration.as_secs_f64()
            ));
        }
        if self.tally.skipped > 0 {
            notes.push(format!("{} skipped", fmt_count(self.tally.skipped)));
        }
        if self.tally.unsuccessful > 0 {
            notes.push(format!(
                "{} not succeeded",
                fmt_count(self.tally.unsuccessful)
            ));
        }
        if self.tally.duplicate_deliveries > 0 {
            notes.push(format!(
                "{} delivered twice",
                fmt_count(self.tally.duplicate_deliveries)
            ));
        }
        if self.tally.lag_resumes > 0 {
            notes.push(format!("collector resumed {}x", self.tally.lag_resumes));
        }
        if self.tally.unsettled > 0 {
            notes.push(format!(
                "{} tasks unsettled when the collector stopped waiting",
                fmt_count(self.tally.unsettled as u64)
            ));
        }
        if self.tally.gaps > 0 {
            notes.push(format!(
                "collector lost its cursor {}x: missed may be unobserved",
                self.tally.gaps
            ));
        }
        notes
    }
}

/// Registers `tasks` tasks doing `work` on `server` with the given phase and
/// timing, and measures the window. The caller may have opened more
/// streams before (streaming); they run alongside.
pub async fn measure(
    server: &ServerProcess,
    store: &CaseStore,
    tasks: usize,
    phase: Phase,
    work: &Work,
    timing: Timing,
) -> Firing {
    measure_on(&[server], store, tasks, phase, work, timing).await
}

/// [`measure`] on replicas sharing one store: registration is spread over
/// them, the results are followed on the first (each replica's log reader
/// sees every replica's), and the CPU is each one's, summed in the row.
/// Memory per task is taken of a single server only.
pub async fn measure_on(
    servers: &[&ServerProcess],
    store: &CaseStore,
    tasks: usize,
    phase: Phase,
    work: &Work,
    timing: Timing,
) -> Firing {
    let first = servers[0];
    let rss_idle = procfs::rss_bytes(first.pid);
    let collector = Collector::start(first.client().await, tasks, timing.window).await;
    let mut clients = Vec::new();
    for server in servers {
        clients.extend(tasks::register_clients(server).await);
    }
    let registration =
        tasks::register_all(&clients, tasks, work, phase, timing.every, timing.base).await;
    let registration_overran = Utc::now() >= timing.base;
    let rss_registered = procfs::rss_bytes(first.pid);
    drop(clients);

    sleep_until(timing.window.start).await;
    let commands_before = store.redis_commandstats().await;
    let cpus: Vec<CpuMeter> = servers.iter().map(|s| CpuMeter::start(s.pid)).collect();
    let redis_cpu = first.redis_pid.map(CpuMeter::start);
    sleep_until(timing.window.end).await;
    let replica_cpu_percent: Vec<Option<f64>> = cpus.iter().map(CpuMeter::percent).collect();
    let cpu_percent = replica_cpu_percent.iter().copied().sum::<Option<f64>>();
    let redis_cpu_percent = redis_cpu.and_then(|m| m.percent());
    let redis_commands = match (commands_before, store.redis_commandstats().await) {
        (Some(before), Some(after)) => after.since(&before),
        _ => Vec::new(),
    };
    let tally = collector
        .finish(tasks, settle_limit(tasks, timing.every))
        .await;
    let peak_rss = servers
        .iter()
        .filter_map(|s| procfs::peak_rss_bytes(s.pid))
        .max();

    let expected = (0..tasks)
        .map(|i| {
            let first = timing.base + tasks::phase_offset(phase, i, timing.every);
            tasks::slots_in(first, timing.every, timing.window.start, timing.window.end)
        })
        .sum();
    let mut lateness_us = tally.lateness_us.clone();
    Firing {
        tasks,
        every: timing.every,
        registration,
        registration_overran,
        lateness: Percentiles::of_micros(&mut lateness_us),
        expected,
        tally,
        cpu_percent,
        replica_cpu_percent: if servers.len() > 1 {
            replica_cpu_percent
        } else {
            Vec::new()
        },
        redis_cpu_percent,
        redis_commands,
        peak_rss,
        bytes_per_task: match (rss_idle, rss_registered) {
            (Some(idle), Some(registered))
                if tasks > 0 && !registration_overran && servers.len() == 1 =>
            {
                Some(registered.saturating_sub(idle) as f64 / tasks as f64)
            }
            _ => None,
        },
    }
}

/// Sleeps until the wall clock reaches `t` (at once if it has).
pub async fn sleep_until(t: DateTime<Utc>) {
    if let Ok(wait) = (t - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

/// Scenario 1 at every case of the plan on every store, a fresh server
/// (and a fresh Redis prefix) each.
pub async fn run(plan: &Plan, report: &mut Report) {
    for &kind in &plan.stores {
        for &case in plan.firing_cases(kind) {
            let name = case.name();
            eprintln!("firing: {name} ({})", kind.subject());
            let store = CaseStore::open(kind, &plan.redis_url, plan.keep_redis_keys).await;
            let server = ServerProcess::start(case.tasks + 1_000, &store).await;
            // Every task fires at least once before the window and once in it.
            let timing = Timing::every(
                Utc::now() + lead(case.tasks, kind),
                case.every,
                plan.warmup.max(case.every),
                plan.window.max(case.every),
            );
            let redis_before = store.redis_used_memory().await;
            let firing =
                measure(&server, &store, case.tasks, case.phase, &Work::Noop, timing).await;
            let redis_after = store.redis_used_memory().await;
            server.stop().await;
            store.finish().await;
            let mut row = firing_row("firing", kind.subject(), &name, &firing);
            if let (Some(before), Some(after)) = (redis_before, redis_after) {
                let growth = after as f64 - before as f64;
                row.notes.push(format!(
                    "redis used_memory {:+.1} MiB",
                    growth / (1024.0 * 1024.0)
                ));
                row.json["redis_used_memory_growth_bytes"] = json!(growth);
            }
            report.add(row);
            if kind == StoreKind::Memory && case.every == ONE_SECOND {
                report.set_reference(case.tasks, case.phase, &firing);
            }
            check_targets(report, kind, &case, &firing);
        }
    }
}

/// A table row for a firing measurement.
pub fn firing_row(scenario: &str, subject: &str, case: &str, firing: &Firing) -> Row {
    let (count, missed_doubled) = firing.fires_text();
    Row {
        scenario: scenario.to_string(),
        subject: subject.to_string(),
        case: case.to_string(),
        measure: "start lateness".to_string(),
        latency: firing.lateness,
        count,
        missed_doubled,
        cpu_percent: firing.cpu_percent,
        peak_rss: firing.peak_rss,
        bytes_per_task: firing.bytes_per_task,
        notes: firing.notes(),
        json: firing.to_json(),
    }
}

/// The project's targets for the firing scenario (benches/README.md).
fn check_targets(report: &mut Report, store: StoreKind, case: &FiringCase, firing: &Firing) {
    let p99 = firing.lateness.map(|l| l.p99);
    let every_ms = case.every.as_millis();
    let (tasks, phase) = (case.tasks, case.phase);
    let name = match store {
        StoreKind::Memory => case.name(),
        StoreKind::Redis => format!("{} (redis store)", case.name()),
    };
    let limit_ms = match (store, tasks, phase, every_ms) {
        (StoreKind::Memory, 10_000, Phase::Random, 1_000) => Some(2.5),
        (StoreKind::Memory, 10_000, Phase::Herd, 1_000) => Some(10.0),
        (StoreKind::Memory, 100_000, Phase::Random, 1_000) => Some(5.0),
        (StoreKind::Memory, 100_000, Phase::Herd, 1_000) => Some(50.0),
        // Issue 6: the Redis store.
        (StoreKind::Redis, 10_000, Phase::Random, 1_000) => Some(5.0),
        (StoreKind::Redis, 10_000, Phase::Herd, 1_000) => Some(50.0),
        (StoreKind::Redis, 100_000, Phase::Random, 10_000) => Some(10.0),
        _ => None,
    };
    if let Some(limit) = limit_ms {
        report.target(Target::at_most(
            format!("firing {name}: lateness p99 <= {limit} ms"),
            p99,
            limit,
            "ms",
        ));
    }
    if store == StoreKind::Memory && every_ms == 1_000 && tasks == 100_000 {
        if phase == Phase::Random {
            report.target(Target::at_most(
                "firing 100,000 random: server CPU <= 50% of one core".to_string(),
                firing.cpu_percent,
                50.0,
                "%",
            ));
        }
        report.target(Target::at_most(
            format!("firing {name}: peak RSS <= 200 MB"),
            firing.peak_rss.map(|b| b as f64 / 1e6),
            200.0,
            "MB",
        ));
    }
    report.target(Target::at_most(
        format!("firing {name}: zero missed or doubled"),
        Some((firing.missed() + firing.tally.doubled) as f64),
        0.0,
        "missed+doubled",
    ));
}
