//! Scenario 1, firing: N no-op tasks every second, slots at random phases
//! or all on one instant (herd). Also the measuring core that streaming and
//! end-to-end reuse: register, warm up, measure a window, settle, account.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::{
    cli::{Phase, Plan},
    collect::{Collector, Tally, Window},
    procfs::{self, CpuMeter},
    report::{Report, Row, Target, fmt_count},
    server::ServerProcess,
    stats::Percentiles,
    tasks::{self, Work},
};

/// Lead before the first slot: start-up plus registration at a pessimistic
/// 8,000 tasks/s (gRPC on 2 cores shared with the server). A lead that is
/// too short only moves early slots to the next second of their grid,
/// which the warm-up absorbs.
fn lead(tasks: usize) -> Duration {
    Duration::from_secs_f64(1.5 + tasks as f64 / 8_000.0)
}

/// How long to wait after the window for its last runs to be reported.
fn settle_limit(tasks: usize) -> Duration {
    Duration::from_secs_f64(5.0 + tasks as f64 / 10_000.0)
}

/// When the tasks start and which of their slots are measured.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// First slot of the herd; random phases add up to a second.
    pub base: DateTime<Utc>,
    /// The measured slots.
    pub window: Window,
}

impl Timing {
    /// Base after the registration lead, then `warmup`, then `window`.
    pub fn plan(tasks: usize, warmup: Duration, window: Duration) -> Timing {
        Timing::at(Utc::now() + lead(tasks), warmup, window)
    }

    /// First slot at `base`, then `warmup`, then `window`.
    pub fn at(base: DateTime<Utc>, warmup: Duration, window: Duration) -> Timing {
        let start = base + warmup;
        Timing {
            base,
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
    /// Server CPU over the window, percent of one core.
    pub cpu_percent: Option<f64>,
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
            "server_cpu_percent_of_one_core": self.cpu_percent,
            "server_peak_rss_bytes": self.peak_rss,
            "server_bytes_per_task": self.bytes_per_task,
        })
    }

    /// Notes for the table: anything that qualifies the numbers.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
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
    tasks: usize,
    phase: Phase,
    work: &Work,
    timing: Timing,
) -> Firing {
    let rss_idle = procfs::rss_bytes(server.pid);
    let collector = Collector::start(server.client().await, tasks, timing.window).await;
    let clients = tasks::register_clients(server).await;
    let registration = tasks::register_all(&clients, tasks, work, phase, timing.base).await;
    let registration_overran = Utc::now() >= timing.base;
    let rss_registered = procfs::rss_bytes(server.pid);
    drop(clients);

    sleep_until(timing.window.start).await;
    let cpu = CpuMeter::start(server.pid);
    sleep_until(timing.window.end).await;
    let cpu_percent = cpu.percent();
    let tally = collector.finish(tasks, settle_limit(tasks)).await;
    let peak_rss = procfs::peak_rss_bytes(server.pid);

    let expected = (0..tasks)
        .map(|i| {
            let first = timing.base + tasks::phase_offset(phase, i);
            tasks::slots_in(first, timing.window.start, timing.window.end)
        })
        .sum();
    let mut lateness_us = tally.lateness_us.clone();
    Firing {
        tasks,
        registration,
        registration_overran,
        lateness: Percentiles::of_micros(&mut lateness_us),
        expected,
        tally,
        cpu_percent,
        peak_rss,
        bytes_per_task: match (rss_idle, rss_registered) {
            (Some(idle), Some(registered)) if tasks > 0 && !registration_overran => {
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

/// Scenario 1 at every size and phase of the plan, a fresh server each.
pub async fn run(plan: &Plan, report: &mut Report) {
    for &tasks in &plan.firing_tasks {
        for &phase in &plan.phases {
            let case = format!("{} {}", fmt_count(tasks as u64), phase.name());
            eprintln!("firing: {case}");
            let server = ServerProcess::start(tasks + 1_000).await;
            let timing = Timing::plan(tasks, plan.warmup, plan.window);
            let firing = measure(&server, tasks, phase, &Work::Noop, timing).await;
            drop(server);
            report.add(firing_row("firing", "recur", &case, &firing));
            report.set_reference(tasks, phase, &firing);
            check_targets(report, tasks, phase, &firing);
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
fn check_targets(report: &mut Report, tasks: usize, phase: Phase, firing: &Firing) {
    let p99 = firing.lateness.map(|l| l.p99);
    let case = format!("{} {}", fmt_count(tasks as u64), phase.name());
    let limit_ms = match (tasks, phase) {
        (10_000, Phase::Random) => Some(2.5),
        (10_000, Phase::Herd) => Some(10.0),
        (100_000, Phase::Random) => Some(5.0),
        (100_000, Phase::Herd) => Some(50.0),
        _ => None,
    };
    if let Some(limit) = limit_ms {
        report.target(Target::at_most(
            format!("firing {case}: lateness p99 <= {limit} ms"),
            p99,
            limit,
            "ms",
        ));
    }
    if tasks == 100_000 && phase == Phase::Random {
        report.target(Target::at_most(
            "firing 100,000 random: server CPU <= 50% of one core".to_string(),
            firing.cpu_percent,
            50.0,
            "%",
        ));
    }
    if tasks == 100_000 {
        report.target(Target::at_most(
            format!("firing {case}: peak RSS <= 200 MB"),
            firing.peak_rss.map(|b| b as f64 / 1e6),
            200.0,
            "MB",
        ));
    }
    report.target(Target::at_most(
        format!("firing {case}: zero missed or doubled"),
        Some((firing.missed() + firing.tally.doubled) as f64),
        0.0,
        "missed+doubled",
    ));
}
