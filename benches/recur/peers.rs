//! Scenario 5, side by side: the firing scenario at the plan's sizes for
//! peer schedulers, each in its own process measured by the OS like recur:
//! the classic asyncio idiom and APScheduler 3 (Python, in a virtualenv
//! under target/ made on first use) and tokio-cron-scheduler (this binary
//! with `--tcs-peer`). The peers record their own lateness and print JSON.
//! A peer that cannot be installed gets a row saying so.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use chrono::Utc;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::{
    cli::{ONE_SECOND, Peer, Phase, Plan},
    firing::{self, Timing, sleep_until},
    procfs::{self, CpuMeter},
    report::{Reference, Report, Row, fmt_count},
    server::ServerProcess,
    stats::Percentiles,
    store::CaseStore,
    tasks::{self, Work},
};

/// Python packages of the peers; APScheduler 4 is a different API.
const PIP_PACKAGES: [&str; 2] = ["aiohttp", "APScheduler<4"];

/// How long a peer may take beyond its window to print its summary.
const PEER_GRACE: Duration = Duration::from_secs(60);

/// Bound of creating the virtualenv and installing into it.
const INSTALL_LIMIT: Duration = Duration::from_secs(600);

/// The Python scripts, next to this file's directory.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/peers")
        .join(name)
}

/// Runs every peer at every size and phase of the plan.
pub async fn run(plan: &Plan, report: &mut Report) {
    let python = if plan
        .peers
        .iter()
        .any(|p| matches!(p, Peer::Asyncio | Peer::Apscheduler))
    {
        prepare_venv(&plan.venv).await
    } else {
        Err("not asked for".to_string())
    };
    if let Err(why) = &python {
        eprintln!("peers: Python peers unavailable: {why}");
    }
    for &tasks in &plan.peer_tasks {
        for &phase in &plan.phases {
            let case = format!("{} {}", fmt_count(tasks as u64), phase.name());
            let reference = match report.reference(tasks, phase) {
                Some(r) => r,
                None => {
                    // Not measured by the firing scenario in this run: do it
                    // now, so the ratios compare the same run.
                    eprintln!("peers: recur at {case} for reference");
                    let server = ServerProcess::start(tasks + 1_000, &CaseStore::Memory).await;
                    let timing = Timing::plan(tasks, plan.warmup, plan.window);
                    let f = firing::measure(
                        &server,
                        &CaseStore::Memory,
                        tasks,
                        phase,
                        &Work::Noop,
                        timing,
                    )
                    .await;
                    drop(server);
                    report.add(firing::firing_row("peers", "recur", &case, &f));
                    report.set_reference(tasks, phase, &f);
                    report.reference(tasks, phase).expect("just set")
                }
            };
            for &peer in &plan.peers {
                eprintln!("peers: {} at {case}", peer.name());
                let row = match (peer, &python) {
                    (Peer::Asyncio | Peer::Apscheduler, Err(why)) => {
                        unavailable(peer, &case, format!("not installed: {why}"))
                    }
                    (Peer::TokioCronScheduler, _) if phase == Phase::Random => unavailable(
                        peer,
                        &case,
                        "n/a: ticks are whole seconds, no sub-second phases".to_string(),
                    ),
                    (Peer::Asyncio, Ok(python)) => {
                        let cmd = python_command(python, "asyncio_idiom.py");
                        measure(peer, cmd, tasks, phase, plan, &case, &reference).await
                    }
                    (Peer::Apscheduler, Ok(python)) => {
                        let cmd = python_command(python, "apscheduler_peer.py");
                        measure(peer, cmd, tasks, phase, plan, &case, &reference).await
                    }
                    (Peer::TokioCronScheduler, _) => {
                        let exe = std::env::current_exe().expect("path of the bench binary");
                        let mut cmd = Command::new(exe);
                        cmd.arg("--tcs-peer");
                        measure(peer, cmd, tasks, phase, plan, &case, &reference).await
                    }
                };
                report.add(row);
            }
        }
    }
}

fn python_command(python: &Path, name: &str) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(script(name)).current_dir(script(""));
    cmd
}

/// A row for a peer that did not run.
fn unavailable(peer: Peer, case: &str, why: String) -> Row {
    Row {
        scenario: "peers".to_string(),
        subject: peer.name().to_string(),
        case: case.to_string(),
        measure: "start lateness".to_string(),
        latency: None,
        count: "-".to_string(),
        missed_doubled: String::new(),
        cpu_percent: None,
        peak_rss: None,
        bytes_per_task: None,
        notes: vec![why.clone()],
        json: json!({ "unavailable": why }),
    }
}

/// The virtualenv's python, creating the venv and installing the peers'
/// packages when they are missing.
async fn prepare_venv(venv: &Path) -> Result<PathBuf, String> {
    // Absolute, because the peers run with their own directory as cwd.
    let venv = std::env::current_dir()
        .map_err(|e| format!("no current directory: {e}"))?
        .join(venv);
    let python = venv.join("bin/python");
    let ready = |python: PathBuf| async move {
        let ok = Command::new(&python)
            .args([
                "-c",
                "import aiohttp, apscheduler; assert apscheduler.__version__ < '4'",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        ok.then_some(python)
    };
    if let Some(python) = ready(python.clone()).await {
        return Ok(python);
    }
    eprintln!(
        "peers: creating {} and installing {PIP_PACKAGES:?}",
        venv.display()
    );
    if !python.exists() {
        let venv_arg = venv.to_string_lossy().into_owned();
        checked(Command::new("python3").args(["-m", "venv", &venv_arg])).await?;
    }
    checked(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PIP_PACKAGES),
    )
    .await?;
    ready(python)
        .await
        .ok_or_else(|| "the packages installed but do not import".to_string())
}

/// Runs an install step; its last stderr line is the error.
async fn checked(cmd: &mut Command) -> Result<(), String> {
    let out = tokio::time::timeout(INSTALL_LIMIT, cmd.kill_on_drop(true).output())
        .await
        .map_err(|_| "install step timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed")
        .trim()
        .to_string())
}

/// Runs one peer process through a window and reads its summary.
async fn measure(
    peer: Peer,
    mut cmd: Command,
    tasks: usize,
    phase: Phase,
    plan: &Plan,
    case: &str,
    reference: &Reference,
) -> Row {
    // Whole-second base: tokio-cron-scheduler ticks on seconds, and the
    // others do not mind.
    let lead = Duration::from_secs_f64(2.0 + tasks as f64 / 5_000.0);
    let base_secs = ((Utc::now() + lead).timestamp_micros() as f64 / 1e6).ceil();
    let timing = Timing::at(
        chrono::DateTime::from_timestamp(base_secs as i64, 0).expect("a valid base"),
        plan.warmup,
        plan.window,
    );
    cmd.args([
        "--peer-tasks".to_string(),
        tasks.to_string(),
        "--phase".to_string(),
        phase.name().to_string(),
        "--base".to_string(),
        base_secs.to_string(),
        "--warmup".to_string(),
        plan.warmup.as_secs_f64().to_string(),
        "--window".to_string(),
        plan.window.as_secs_f64().to_string(),
    ]);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(e) => return unavailable(peer, case, format!("could not start: {e}")),
    };
    let pid = child.id().unwrap_or(0);
    let output = tokio::spawn(child.wait_with_output());
    sleep_until(timing.window.start).await;
    let cpu = CpuMeter::start(pid);
    sleep_until(timing.window.end).await;
    let cpu_percent = cpu.percent();
    let peak_rss = procfs::peak_rss_bytes(pid);
    let out = match tokio::time::timeout(PEER_GRACE + Duration::from_secs(2), output).await {
        Ok(Ok(Ok(out))) => out,
        Ok(Ok(Err(e))) => return unavailable(peer, case, format!("failed: {e}")),
        Ok(Err(e)) => return unavailable(peer, case, format!("failed: {e}")),
        // Dropping the join handle drops the child, which kills it.
        Err(_) => return unavailable(peer, case, "did not finish in time".to_string()),
    };
    let summary: Option<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok());
    let Some(summary) = summary else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return unavailable(
            peer,
            case,
            format!("printed no summary ({}): {last}", out.status),
        );
    };
    let expected = summary
        .get("fires_expected")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| {
            (0..tasks)
                .map(|i| {
                    let first = timing.base + tasks::phase_offset(phase, i, ONE_SECOND);
                    tasks::slots_in(first, ONE_SECOND, timing.window.start, timing.window.end)
                })
                .sum()
        });
    let done = summary
        .get("fires_done")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let doubled = summary.get("doubled").and_then(Value::as_u64).unwrap_or(0);
    let lateness = summary.get("lateness").and_then(Percentiles::from_json);
    let ratio = |recur: Option<f64>, peer: Option<f64>| match (recur, peer) {
        (Some(r), Some(p)) if p > 0.0 => format!("{:.2}x", r / p),
        _ => "-".to_string(),
    };
    let notes = vec![format!(
        "recur/peer: p99 {}, CPU {}, RSS {}",
        ratio(reference.p99, lateness.map(|l| l.p99)),
        ratio(reference.cpu_percent, cpu_percent),
        ratio(
            reference.peak_rss.map(|b| b as f64),
            peak_rss.map(|b| b as f64)
        ),
    )];
    Row {
        scenario: "peers".to_string(),
        subject: peer.name().to_string(),
        case: case.to_string(),
        measure: "start lateness".to_string(),
        latency: lateness,
        count: format!("fires {}/{}", fmt_count(done), fmt_count(expected)),
        missed_doubled: format!(
            "{} / {}",
            fmt_count(expected.saturating_sub(done)),
            fmt_count(doubled)
        ),
        cpu_percent,
        peak_rss,
        bytes_per_task: None,
        notes,
        json: json!({
            "peer": peer.name(),
            "tasks": tasks,
            "phase": phase.name(),
            "summary": summary,
            "fires_expected": expected,
            "cpu_percent_of_one_core": cpu_percent,
            "peak_rss_bytes": peak_rss,
        }),
    }
}
