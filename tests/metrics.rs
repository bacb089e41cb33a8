//! `/metrics` scraped while tasks run: counters move with the runs,
//! skips and streams they count, histograms fill, tasks are counted by
//! state, per-task series appear only when asked for, and the Redis pool
//! shows its connections.

mod common;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use common::{
    TestServer, WAIT, handlers::Gate, http_target::HttpTarget, register, spec_every, test_config,
};
use recur::{Config, pb::v1 as pb};

/// One scrape: every sample by its name with labels, exactly as written
/// (`recur_runs_total{outcome="failed"}`), and the families by their
/// `# TYPE` lines (name, type).
struct Scrape(HashMap<String, f64>, Vec<(String, String)>);

impl Scrape {
    async fn of(addr: SocketAddr) -> Scrape {
        let response = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("scrape");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let body = response.text().await.expect("body");
        assert!(body.ends_with("# EOF\n"), "an OpenMetrics page ends so");
        let samples = body
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect();
        let families = body
            .lines()
            .filter_map(|line| {
                let mut words = line.strip_prefix("# TYPE ")?.split(' ');
                Some((words.next()?.to_string(), words.next()?.to_string()))
            })
            .collect();
        Scrape(samples, families)
    }

    fn get(&self, series: &str) -> f64 {
        *self
            .0
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in {:#?}", self.0))
    }

    fn has_label(&self, label: &str) -> bool {
        self.0.keys().any(|series| series.contains(label))
    }
}

/// Scrapes until `ready` holds, failing the test after `within`.
async fn scrape_until(
    addr: SocketAddr,
    what: &str,
    within: Duration,
    ready: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let scrape = Scrape::of(addr).await;
        if ready(&scrape) {
            return scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server serving `/metrics` on a port of its own.
async fn start(config: Config) -> (TestServer, SocketAddr) {
    start_with(config, |s| s).await
}

async fn start_with(
    config: Config,
    build: impl FnOnce(recur::Server) -> recur::Server,
) -> (TestServer, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = TestServer::start_with(config, |s| build(s.metrics(listener))).await;
    (server, addr)
}

/// The task series come from a scan of the store at most 10 s old.
const SCAN_WAIT: Duration = Duration::from_secs(40);

/// Registers "ok" (GET /ok) and "bad" (GET /fail, which `target` fails)
/// every `every`.
async fn ok_and_failing(server: &mut TestServer, target: &HttpTarget, every: Duration) {
    for (id, path) in [("ok", "/ok"), ("bad", "/fail")] {
        register(
            &mut server.client,
            id,
            spec_every(every, common::http_get(&target.url(path))),
        )
        .await;
    }
}

fn fast_config() -> Config {
    let mut config = test_config();
    config.min_interval = Duration::from_millis(50);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_histograms_move_with_the_runs() {
    let target = HttpTarget::start().await;
    target.fail("/fail", 500);
    let (mut server, metrics) = start(fast_config()).await;
    let before = Scrape::of(metrics).await;
    assert_eq!(before.get("recur_fires_total"), 0.0);
    assert_eq!(before.get("recur_runs_total{outcome=\"succeeded\"}"), 0.0);

    let every = Duration::from_millis(100);
    ok_and_failing(&mut server, &target, every).await;
    let mut stream = common::stream(&mut server.client, &[], "", false).await;

    let now = scrape_until(
        metrics,
        "three successes and three failures counted",
        WAIT,
        |s| {
            s.get("recur_runs_total{outcome=\"succeeded\"}") >= 3.0
                && s.get("recur_runs_total{outcome=\"failed\"}") >= 3.0
        },
    )
    .await;
    let runs = now.get("recur_runs_total{outcome=\"succeeded\"}")
        + now.get("recur_runs_total{outcome=\"failed\"}");
    // Every run here was fired by the schedule; a fire's run may still be
    // going (not counted yet) at the scrape.
    assert!(now.get("recur_fires_total") >= runs, "fires >= runs");
    assert_eq!(now.get("recur_runs_total{outcome=\"timed_out\"}"), 0.0);
    // Each recorded run started, was late by something and took something.
    let started = now.get("recur_run_start_lateness_seconds_count");
    assert!(started >= runs, "lateness observed per started run");
    assert_eq!(
        now.get("recur_run_start_lateness_seconds_bucket{le=\"+Inf\"}"),
        started
    );
    assert!(now.get("recur_run_duration_seconds_count") >= runs);
    assert!(now.get("recur_run_duration_seconds_sum") > 0.0);
    // The store steps of firing and recording were timed.
    assert!(now.get("recur_store_operation_seconds_count{op=\"fire\"}") > 0.0);
    assert!(now.get("recur_store_operation_seconds_count{op=\"record\"}") > 0.0);
    assert_eq!(
        now.get("recur_store_operation_errors_total{op=\"fire\"}"),
        0.0
    );
    assert_eq!(now.get("recur_result_streams_open"), 1.0);
    let next = now.get("recur_next_fire_timestamp_seconds");
    let wall = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    assert!(
        (next - wall).abs() < 5.0,
        "the soonest fire is about now: {next} vs {wall}"
    );
    // Tasks by state come from a scan made before they were registered
    // (the first scrape's), renewed within 10 s.
    scrape_until(metrics, "both tasks counted as active", SCAN_WAIT, |s| {
        s.get("recur_tasks{state=\"active\"}") == 2.0
    })
    .await;
    assert!(
        !now.has_label("task_id="),
        "no per-task series unless asked for"
    );

    // Counters only grow, and keep growing while the tasks run.
    scrape_until(metrics, "more runs counted", WAIT, |later| {
        for series in [
            "recur_fires_total",
            "recur_runs_total{outcome=\"succeeded\"}",
            "recur_runs_total{outcome=\"failed\"}",
            "recur_run_start_lateness_seconds_count",
        ] {
            assert!(later.get(series) >= now.get(series), "{series} went down");
        }
        later.get("recur_runs_total{outcome=\"succeeded\"}")
            > now.get("recur_runs_total{outcome=\"succeeded\"}")
    })
    .await;

    // Paused: counted in its state once the store is scanned again (at
    // most every 10 s).
    server
        .client
        .pause_task(pb::PauseTaskRequest {
            task_id: "bad".into(),
            reason: String::new(),
        })
        .await
        .expect("pause");
    let scrape = scrape_until(metrics, "the paused task counted", SCAN_WAIT, |s| {
        s.get("recur_tasks{state=\"paused\"}") == 1.0
    })
    .await;
    assert_eq!(scrape.get("recur_tasks{state=\"active\"}"), 1.0);
    drop(stream.message().await);
    drop(stream);
    scrape_until(metrics, "the stream no longer counted", WAIT, |s| {
        s.get("recur_result_streams_open") == 0.0
    })
    .await;

    let other = reqwest::get(format!("http://{metrics}/"))
        .await
        .expect("get /");
    assert_eq!(other.status(), 404);
    server.stop().await.expect("clean stop");
    assert!(
        reqwest::get(format!("http://{metrics}/metrics"))
            .await
            .is_err(),
        "/metrics stops with the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_skipped_by_overlap_are_counted_by_reason() {
    let (gate, mut started) = Gate::new();
    let (mut server, metrics) =
        start_with(fast_config(), |s| s.handler("gate", gate.clone())).await;
    // Every 50 ms, each run held until released: the slots in between are
    // skipped by the overlap policy (SKIP, the default).
    register(
        &mut server.client,
        "slow",
        spec_every(Duration::from_millis(50), common::custom("gate", b"")),
    )
    .await;
    tokio::time::timeout(WAIT, started.recv())
        .await
        .expect("first run started");
    let scrape = scrape_until(metrics, "overlap skips counted", WAIT, |s| {
        s.get("recur_skipped_slots_total{reason=\"overlap\"}") >= 3.0
    })
    .await;
    assert_eq!(scrape.get("recur_runs_in_flight"), 1.0);
    // Skipped slots are not runs. (Catch-up is not asserted: on a loaded
    // machine a timer more than one 50 ms slot late passes over slots.)
    assert_eq!(scrape.get("recur_runs_total{outcome=\"skipped\"}"), 0.0);
    gate.permits.add_permits(1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_task_series_carry_health_when_asked_for() {
    let target = HttpTarget::start().await;
    target.fail("/fail", 503);
    let mut config = fast_config();
    config.metrics_per_task = true;
    let (mut server, metrics) = start(config).await;
    let every = Duration::from_millis(200);
    ok_and_failing(&mut server, &target, every).await;
    let scrape = scrape_until(
        metrics,
        "per-task series showing the runs",
        SCAN_WAIT,
        |s| {
            s.0.get("recur_task_consecutive_failures{task_id=\"bad\"}")
                .is_some_and(|n| *n >= 2.0)
                && s.0
                    .contains_key("recur_task_last_success_timestamp_seconds{task_id=\"ok\"}")
        },
    )
    .await;
    assert_eq!(
        scrape.get("recur_task_consecutive_failures{task_id=\"ok\"}"),
        0.0
    );
    assert!(scrape.get("recur_task_failures_total{task_id=\"bad\"}") >= 2.0);
    assert!(scrape.get("recur_task_runs_total{task_id=\"ok\"}") >= 1.0);
    assert_eq!(
        scrape.get("recur_task_interval_seconds{task_id=\"ok\"}"),
        0.2
    );
    assert_eq!(
        scrape.get("recur_task_state{task_id=\"bad\",state=\"active\"}"),
        1.0
    );
    assert!(
        !scrape
            .0
            .contains_key("recur_task_last_success_timestamp_seconds{task_id=\"bad\"}"),
        "no success time for a task that never succeeded"
    );
    let success = scrape.get("recur_task_last_success_timestamp_seconds{task_id=\"ok\"}");
    let created = scrape.get("recur_task_created_timestamp_seconds{task_id=\"ok\"}");
    assert!(success > created, "succeeded after it was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_store_shows_its_pool_and_store_latency() {
    let mut config = fast_config();
    config.metrics_per_task = true;
    config.redis_url = Some(common::redis::SHARED_URL.to_string());
    config.key_prefix = common::redis::random_prefix();
    let (mut server, metrics) =
        start_with(config, |s| s.handler("echo", common::handlers::Echo)).await;
    register(
        &mut server.client,
        "echo",
        spec_every(Duration::from_millis(100), common::custom("echo", b"hi")),
    )
    .await;
    let scrape = scrape_until(metrics, "echo runs counted", WAIT, |s| {
        s.get("recur_runs_total{outcome=\"succeeded\"}") >= 2.0
    })
    .await;
    assert!(scrape.get("recur_redis_pool_connections") >= 1.0);
    assert!(
        scrape.get("recur_redis_pool_connections")
            <= scrape.get("recur_redis_pool_max_connections")
    );
    assert_eq!(
        scrape.get("recur_redis_errors_total{kind=\"connection\"}"),
        0.0
    );
    assert!(scrape.get("recur_store_operation_seconds_count{op=\"fire\"}") > 0.0);
    // A Redis round trip is slower than nothing and faster than a second.
    let fire_sum = scrape.get("recur_store_operation_seconds_sum{op=\"fire\"}");
    let fires = scrape.get("recur_store_operation_seconds_count{op=\"fire\"}");
    assert!(
        fire_sum > 0.0 && fire_sum / fires < 1.0,
        "{fire_sum} / {fires}"
    );
    assert_eq!(scrape.get("recur_store_scan_ok"), 1.0);
    // Every family served (all of them here: Redis, per task) is listed in
    // the README's table, as its series name.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let per_task = scrape_until(metrics, "the per-task series", SCAN_WAIT, |s| {
        s.1.iter().any(|(name, _)| name == "recur_task_state")
    })
    .await;
    assert!(per_task.1.len() >= 28, "{:?}", per_task.1);
    for (name, kind) in &per_task.1 {
        let series = if kind == "counter" {
            format!("`{name}_total`")
        } else {
            format!("`{name}`")
        };
        assert!(readme.contains(&series), "README lists no {series}");
    }
    assert_eq!(scrape.get("recur_tasks{state=\"active\"}"), 1.0);
    server
        .client
        .cancel_task(pb::CancelTaskRequest {
            task_id: "echo".into(),
            reason: String::new(),
        })
        .await
        .expect("cancel");
}
