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

use common::{TestServer, http_target::Behaviour, http_target::HttpTarget, register, spec_every};
use recur::pb::v1 as pb;

/// The whole browser session's bound: generous for a loaded 2-core machine.
const SESSION_WAIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_tasks_live_and_pauses_one_by_click() {
    if std::env::var("RECUR_BROWSER_TESTS").as_deref() == Ok("skip") {
        eprintln!("SKIPPED: RECUR_BROWSER_TESTS=skip (Chromium could not be installed here)");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: install Debian's chromium (scripts/test does)"
    );
    assert!(
        root.join("dashboard/node_modules/playwright-core").exists(),
        "no dashboard/node_modules: run npm ci in dashboard/ (scripts/test does)"
    );

    let target = HttpTarget::start().await;
    target.set(
        "/fail",
        Behaviour {
            status: Some(500),
            ..Default::default()
        },
    );
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
    let run = tokio::process::Command::new("node")
        .current_dir(root.join("dashboard"))
        .arg("test/browser.mjs")
        .arg(format!("http://{}/", server.addr))
        .arg(&shots)
        .arg(&chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SESSION_WAIT, run)
        .await
        .expect("the browser session ended in time")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser session failed:\n{stdout}\n{stderr}"
    );
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
