//! The dashboard in a real browser: Debian's Chromium, driven by
//! playwright-core from `dashboard/test/browser.mjs`, against a server with
//! a succeeding and a failing HTTP task. The page shows both rows, a result
//! arriving live on a task's page, and a click on Pause, which GetTask then
//! confirms. Screenshots go to a temporary directory, or to `docs/img/`
//! with `RECUR_UPDATE_SCREENSHOTS=1` (the README shows those).
//!
//! Needs `chromium` (with fonts-liberation, so text renders) and
//! `dashboard/node_modules` (npm ci): scripts/test installs both. Without
//! them this fails, unless `RECUR_BROWSER_TESTS=skip`, which scripts/test
//! sets, loudly, only when Chromium cannot be installed on the machine.

mod common;

use std::{path::PathBuf, process::Stdio, time::Duration};

use futures::StreamExt;

use common::{TestServer, http_target::HttpTarget, register, spec_every};
use recur::pb::v1 as pb;

/// One browser session at a time: two Chromiums (one with 10,000 tasks to
/// load) at once on a 2-core machine would measure each other.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The whole browser session's bound: generous for a loaded 2-core machine.
const SESSION_WAIT: Duration = Duration::from_secs(180);

/// The Chromium to drive, or None when the tests are to be skipped.
fn chromium() -> Option<String> {
    if std::env::var("RECUR_BROWSER_TESTS").as_deref() == Ok("skip") {
        eprintln!("SKIPPED: RECUR_BROWSER_TESTS=skip (Chromium could not be installed here)");
        return None;
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: install Debian's chromium (scripts/test does)"
    );
    assert!(
        root()
            .join("dashboard/node_modules/playwright-core")
            .exists(),
        "no dashboard/node_modules: run npm ci in dashboard/ (scripts/test does)"
    );
    Some(chromium)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs dashboard/test/browser.mjs with `args`; its stdout, failing the
/// test with everything it printed if it failed.
async fn browse(args: &[String]) -> String {
    let run = tokio::process::Command::new("node")
        .current_dir(root().join("dashboard"))
        .arg("test/browser.mjs")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SESSION_WAIT, run)
        .await
        .expect("the browser session ended in time")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser session failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_tasks_live_and_pauses_one_by_click() {
    let Some(chromium) = chromium() else { return };
    let _one_at_a_time = BROWSER.lock().await;
    let root = root();

    let target = HttpTarget::start().await;
    target.fail("/fail", 500);
    let mut config = common::test_config();
    config.min_interval = Duration::from_millis(100);
    let mut server = TestServer::start_with(config, |s| s).await;
    let every = Duration::from_millis(700);
    for (id, path, team) in [
        ("fetch-ok", "/ok", "pricing"),
        ("fetch-bad", "/fail", "ops"),
    ] {
        let mut spec = spec_every(every, common::http_get(&target.url(path)));
        spec.labels.insert("team".into(), team.into());
        register(&mut server.client, id, spec).await;
    }

    let update = std::env::var("RECUR_UPDATE_SCREENSHOTS").as_deref() == Ok("1");
    let temp = tempfile::tempdir().expect("dir");
    let shots = if update {
        root.join("docs/img")
    } else {
        temp.path().to_path_buf()
    };
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let stdout = browse(&[
        format!("http://{}/", server.addr),
        shots.display().to_string(),
        chromium,
    ])
    .await;
    for step in [
        "rows shown",
        "failing task shows failed",
        "a result arrived live",
        "paused from the page",
        "the list shows it paused",
    ] {
        assert!(stdout.contains(step), "no step {step:?} in:\n{stdout}");
    }
    // What the click did, as any client sees it.
    let task = common::get(&mut server.client, "fetch-ok").await;
    assert_eq!(task.state, pb::TaskState::Paused as i32);
    assert_eq!(task.pause_reason, "paused from the dashboard");
    for shot in ["dashboard-tasks.png", "dashboard-task.png"] {
        assert!(shots.join(shot).exists(), "no screenshot {shot}");
    }
}

/// Tasks of the scale test: what the issue asks the page to stay
/// responsive at.
const SCALE: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_stays_responsive_at_ten_thousand_tasks() {
    let Some(chromium) = chromium() else { return };
    let _one_at_a_time = BROWSER.lock().await;
    let server = TestServer::start().await;
    // Hourly, far from firing: the page's load, not the engine's, is measured.
    let registering = (0..SCALE).map(|i| {
        let mut client = server.client.clone();
        async move {
            let spec = spec_every(
                Duration::from_secs(3600),
                common::http_get("http://127.0.0.1:9/"),
            );
            register(&mut client, &format!("t-{i:05}"), spec).await;
        }
    });
    futures::stream::iter(registering)
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let shots = tempfile::tempdir().expect("dir");
    let stdout = browse(&[
        "--scale".into(),
        SCALE.to_string(),
        format!("http://{}/", server.addr),
        shots.path().display().to_string(),
        chromium,
    ])
    .await;
    // The numbers are recorded in benches/README.md ("The dashboard at
    // 10,000 tasks"); here only that both renders happened, drawing no
    // more rows than the page's cap.
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("scale {SCALE}:")))
        .unwrap_or_else(|| panic!("no measurement in:\n{stdout}"));
    assert!(line.contains("10 rows drawn"), "{line}");
}
