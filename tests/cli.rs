//! `recur task ...` from outside: the binary run as a child process against
//! a real server, asserting what a user sees (stdout, stderr, exit code).

mod common;

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{TestServer, WAIT, http_target::HttpTarget, test_config};
use recur::pb::v1 as pb;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    process::Command,
    sync::mpsc,
    task::JoinHandle,
};
use tonic::Code;

/// Bound on one command: generous for a loaded 2-core machine.
const COMMAND_WAIT: Duration = Duration::from_secs(60);

/// What a command did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The binary with a clean environment: no RECUR_* of the caller's, the
/// server given as RECUR_SERVER.
fn recur(server: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_recur"));
    for (key, _) in std::env::vars() {
        if key.starts_with("RECUR_") {
            command.env_remove(key);
        }
    }
    command
        .env("RECUR_SERVER", server)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `recur task ARGS` against `server` to its end.
async fn task(server: &str, args: &[&str]) -> Out {
    let mut command = recur(server);
    command.arg("task").args(args);
    finish(command).await
}

/// Runs `recur task ARGS` with `input` on stdin.
async fn task_stdin(server: &str, args: &[&str], input: &str) -> Out {
    let mut command = recur(server);
    command
        .arg("task")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn recur");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write stdin");
    drop(stdin);
    let output = tokio::time::timeout(COMMAND_WAIT, child.wait_with_output())
        .await
        .expect("recur finished in time")
        .expect("recur ran");
    out(output)
}

async fn finish(mut command: Command) -> Out {
    let output = tokio::time::timeout(COMMAND_WAIT, command.output())
        .await
        .expect("recur finished in time")
        .expect("recur ran");
    out(output)
}

fn out(output: std::process::Output) -> Out {
    Out {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Asserts the exit code, showing everything the command printed if not.
#[track_caller]
fn assert_code(out: &Out, code: i32) {
    assert_eq!(out.code, code, "exit code; the command printed {out:#?}");
}

/// A server whose minimum interval allows short test schedules.
async fn server() -> (TestServer, String) {
    let server = TestServer::start_with(test_config(), |s| s).await;
    let addr = server.addr.to_string();
    (server, addr)
}

async fn get_task(server: &TestServer, id: &str) -> Result<pb::Task, tonic::Status> {
    server
        .new_client()
        .await
        .get_task(pb::GetTaskRequest {
            task_id: id.into(),
            next_run_count: 0,
        })
        .await
        .map(tonic::Response::into_inner)
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write file");
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn every_subcommand_help_shows_an_example() {
    let out = task("127.0.0.1:1", &["--help"]).await;
    assert_code(&out, 0);
    assert!(out.stdout.contains("Exit codes:"), "{}", out.stdout);
    for sub in [
        "register", "get", "list", "pause", "resume", "trigger", "cancel", "delete", "watch",
        "apply",
    ] {
        let out = task("127.0.0.1:1", &[sub, "--help"]).await;
        assert_code(&out, 0);
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with("Example:") || l.starts_with("Examples:")),
            "recur task {sub} --help has no example:\n{}",
            out.stdout
        );
        assert!(out.stdout.contains("--server"), "global flags shown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_get_and_the_control_commands() {
    let (server, addr) = server().await;
    let target = HttpTarget::start().await;
    let url = target.url("/hook");

    // Flags: the task as `get` prints it.
    let out = task(
        &addr,
        &[
            "register",
            "web",
            "--every",
            "1h",
            "--http",
            &url,
            "--header",
            "X-Key: k3y",
            "--label",
            "team=web",
            "--timeout",
            "5s",
            "--overlap",
            "allow",
        ],
    )
    .await;
    assert_code(&out, 0);
    assert!(
        out.stdout.contains("ID:                   web\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("State:                ACTIVE\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Schedule:             every 1h\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("<redacted>"), "header value redacted");
    assert!(!out.stdout.contains("k3y"), "the secret is never printed");

    // A file, flags over it; then stdin.
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        &dir,
        "spec.yaml",
        &format!(
            "schedule: {{every: 7200s}}\naction: {{http: {{url: \"{url}\"}}}}\nlabels: {{team: file}}\n"
        ),
    );
    let out = task(
        &addr,
        &["register", "from-file", "-f", &file, "--label", "env=test"],
    )
    .await;
    assert_code(&out, 0);
    let stored = get_task(&server, "from-file").await.expect("registered");
    assert_eq!(common::every_secs(&stored), 7200);
    let labels = &stored.spec.as_ref().expect("spec").labels;
    assert_eq!(labels.get("team").map(String::as_str), Some("file"));
    assert_eq!(labels.get("env").map(String::as_str), Some("test"));
    let json = format!(
        r#"{{"schedule": {{"every": "3600s"}}, "action": {{"http": {{"url": "{url}"}}}}}}"#
    );
    let out = task_stdin(
        &addr,
        &["register", "from-stdin", "-f", "-", "-o", "json"],
        &json,
    )
    .await;
    assert_code(&out, 0);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(value["task_id"], "from-stdin");

    // --dry-run creates nothing.
    let out = task(
        &addr,
        &[
            "register",
            "dry",
            "--every",
            "1h",
            "--http",
            &url,
            "--dry-run",
        ],
    )
    .await;
    assert_code(&out, 0);
    assert!(out.stdout.contains("ID:                   dry\n"));
    assert_eq!(
        get_task(&server, "dry").await.map(drop).unwrap_err().code(),
        Code::NotFound
    );

    // get: human and JSON.
    let out = task(&addr, &["get", "web", "--next", "2"]).await;
    assert_code(&out, 0);
    let next = out
        .stdout
        .lines()
        .find(|l| l.starts_with("Next fire times:"))
        .expect("next fire times");
    assert_eq!(next.matches(", ").count(), 1, "two times: {next}");
    let out = task(&addr, &["get", "web", "-o", "json"]).await;
    assert_code(&out, 0);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(value["state"], "TASK_STATE_ACTIVE");
    assert_eq!(value["spec"]["schedule"]["every"], "3600s");
    assert_eq!(
        value["spec"]["action"]["http"]["headers"]["x-key"],
        "<redacted>"
    );
    assert_eq!(value["spec"]["overlap"], "OVERLAP_POLICY_ALLOW");
    let out = task(&addr, &["get", "web", "-o", "yaml"]).await;
    assert_code(&out, 0);
    assert!(out.stdout.contains("task_id: web"), "{}", out.stdout);

    // pause / resume / trigger / cancel, one line per task.
    let out = task(
        &addr,
        &["pause", "web", "from-file", "--reason", "maintenance"],
    )
    .await;
    assert_code(&out, 0);
    assert_eq!(out.stdout, "paused web\npaused from-file\n");
    let out = task(&addr, &["get", "web"]).await;
    assert!(
        out.stdout
            .contains("State:                PAUSED (maintenance)\n"),
        "{}",
        out.stdout
    );
    let out = task(&addr, &["resume", "web"]).await;
    assert_code(&out, 0);
    assert_eq!(out.stdout, "resumed web\n");
    let out = task(&addr, &["trigger", "web"]).await;
    assert_code(&out, 0);
    assert_eq!(out.stdout, "triggered web run #1\n");
    let request = target.next_request().await;
    assert_eq!(
        request.headers.get("x-key").map(|v| v.as_bytes()),
        Some(&b"k3y"[..])
    );

    // Several ids with one unknown: the others still happen, exit 3.
    let out = task(&addr, &["trigger", "nope", "web"]).await;
    assert_code(&out, 3);
    assert_eq!(out.stdout, "triggered web run #2\n");
    assert!(out.stderr.contains("recur: not found: "), "{}", out.stderr);

    let out = task(&addr, &["cancel", "from-stdin", "--reason", "done"]).await;
    assert_code(&out, 0);
    assert_eq!(out.stdout, "cancelled from-stdin\n");
    let out = task(&addr, &["delete", "from-stdin"]).await;
    assert_code(&out, 0);
    assert_eq!(out.stdout, "deleted from-stdin\n");

    // A live task: refused with the server's precondition, then --cancel.
    let out = task(&addr, &["delete", "from-file"]).await;
    assert_code(&out, 4);
    assert!(
        out.stderr.starts_with("recur: failed precondition: "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("\n  STATE task/from-file: the task is paused\n"),
        "{}",
        out.stderr
    );
    let out = task(&addr, &["delete", "--cancel", "from-file"]).await;
    assert_code(&out, 0);
    assert_eq!(out.stdout, "cancelled from-file\ndeleted from-file\n");
    assert_eq!(
        get_task(&server, "from-file")
            .await
            .map(drop)
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // list shows what is left.
    let out = task(&addr, &["list", "-o", "json"]).await;
    assert_code(&out, 0);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let ids: Vec<&str> = value["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["task_id"].as_str())
        .collect();
    assert_eq!(ids, ["web"]);
    let out = task(&addr, &["list", "--state", "PAUSED"]).await;
    assert_code(&out, 0);
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "No tasks.\n");
    let out = task(&addr, &["list", "--selector", "team!=web"]).await;
    assert_code(&out, 2);
    assert!(out.stderr.contains("only label equality"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_read_well_and_exit_with_their_code() {
    let (_server, addr) = server().await;
    let out = task(&addr, &["get", "missing"]).await;
    assert_code(&out, 3);
    assert_eq!(out.stderr, "recur: not found: task missing not found\n");

    let out = task(
        &addr,
        &[
            "register",
            "fast",
            "--every",
            "10ms",
            "--http",
            "http://127.0.0.1:9/",
        ],
    )
    .await;
    assert_code(&out, 2);
    assert!(
        out.stderr.starts_with("recur: invalid argument: "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("\n  spec.schedule.every: must be at least"),
        "{}",
        out.stderr
    );

    let out = task(
        &addr,
        &["register", "bad-url", "--every", "1h", "--http", "ftp://x/"],
    )
    .await;
    assert_code(&out, 2);
    assert!(
        out.stderr.contains("\n  spec.action.http.url: "),
        "{}",
        out.stderr
    );

    let out = task(&addr, &["register", "x", "--every", "10x"]).await;
    assert_code(&out, 2);
    assert!(out.stderr.contains("--every"), "{}", out.stderr);

    let out = task(
        &addr,
        &["register", "x", "--every", "1h", "--method", "POST"],
    )
    .await;
    assert_code(&out, 2);
    assert!(out.stderr.contains("need an HTTP action"), "{}", out.stderr);

    // Nothing listens on a port just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = free.local_addr().expect("addr").to_string();
    drop(free);
    let out = task(&closed, &["list"]).await;
    assert_code(&out, 1);
    assert!(
        out.stderr.starts_with("recur: cannot connect to "),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_sent_from_the_flag_or_the_environment() {
    let dir = tempfile::tempdir().expect("dir");
    let access = format!(
        "tokens:\n  - name: ops\n    sha256: {}\n    scopes: [admin]\n",
        recur::access::token::digest_hex("ops-token")
    );
    let mut config = test_config();
    config.auth_tokens = Some(common::pki::write(dir.path(), "access.yaml", &access));
    let server = TestServer::start_with(config, |s| s).await;
    let addr = server.addr.to_string();

    let out = task(&addr, &["list"]).await;
    assert_code(&out, 4);
    assert!(
        out.stderr.starts_with("recur: unauthenticated: "),
        "{}",
        out.stderr
    );

    let out = task(&addr, &["list", "--token", "ops-token"]).await;
    assert_code(&out, 0);
    let mut command = recur(&addr);
    command
        .args(["task", "list"])
        .env("RECUR_TOKEN", "ops-token");
    let out = finish(command).await;
    assert_code(&out, 0);
    let out = task(&addr, &["list", "--token", "wrong"]).await;
    assert_code(&out, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prints_an_aligned_table() {
    let (server, addr) = server().await;
    let target = HttpTarget::start().await;
    let url = target.url("/ran");
    let far = "2099-01-01T00:00:00Z";
    // A far start_at, through a spec file.
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        &dir,
        "far.yaml",
        &format!(
            "schedule: {{every: 3600s, start_at: \"{far}\"}}\naction: {{http: {{url: \"{url}\"}}}}\n"
        ),
    );
    let out = task(
        &addr,
        &["register", "a-far", "-f", &file, "--label", "kind=far"],
    )
    .await;
    assert_code(&out, 0);
    // Every 2h: "in 2h" holds for half an hour after registering, however
    // slow the machine (1h would read "in 59m" after 30s).
    for id in ["b-paused", "c-cancelled", "d-ran"] {
        let out = task(&addr, &["register", id, "--every", "2h", "--http", &url]).await;
        assert_code(&out, 0);
    }
    assert_code(&task(&addr, &["pause", "b-paused"]).await, 0);
    assert_code(&task(&addr, &["cancel", "c-cancelled"]).await, 0);
    assert_code(&task(&addr, &["trigger", "d-ran"]).await, 0);
    common::eventually("d-ran's run finished", || async {
        get_task(&server, "d-ran")
            .await
            .is_ok_and(|t| t.last_result.is_some())
    })
    .await;

    let out = task(&addr, &["list"]).await;
    assert_code(&out, 0);
    // The far start is years away: only its day count moves (the same
    // width replaces it, so the columns stay aligned).
    insta::with_settings!({filters => vec![(r"in \d{5}d", "in NNNNNd")]}, {
        insta::assert_snapshot!("list_table", out.stdout);
    });

    let out = task(&addr, &["list", "-o", "wide", "--selector", "kind=far"]).await;
    assert_code(&out, 0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0].ends_with("CONSEC  LAST SUCCESS  CREATED               LABELS"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("a-far ") && lines[1].ends_with("kind=far"),
        "{}",
        lines[1]
    );
}

/// A TCP proxy that can drop every connection through it and refuse new
/// ones until restored, maybe toward another upstream: a server gone
/// away, or replaced, as the client sees it.
struct CutProxy {
    port: u16,
    /// Where connections go; None while cut.
    upstream: Arc<Mutex<Option<std::net::SocketAddr>>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl CutProxy {
    async fn start(upstream: std::net::SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let upstream = Arc::new(Mutex::new(Some(upstream)));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (gate, held) = (upstream.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Some(to) = *gate.lock().expect("lock") else {
                    continue;
                };
                let Ok(mut server) = TcpStream::connect(to).await else {
                    continue;
                };
                let pump = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                held.lock().expect("lock").push(pump);
            }
        });
        CutProxy {
            port,
            upstream,
            connections,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Drops every connection and refuses new ones.
    fn cut(&self) {
        *self.upstream.lock().expect("lock") = None;
        for pump in self.connections.lock().expect("lock").drain(..) {
            pump.abort();
        }
    }

    /// Lets connections through again, to `upstream`.
    fn restore(&self, upstream: std::net::SocketAddr) {
        *self.upstream.lock().expect("lock") = Some(upstream);
    }
}

/// The next line of a child's output, within the wait bound.
async fn next_line(lines: &mut mpsc::UnboundedReceiver<String>, what: &str) -> String {
    tokio::time::timeout(WAIT, lines.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} line in time"))
        .unwrap_or_else(|| panic!("output closed before a {what} line"))
}

/// Forwards the lines of a child's pipe to a channel.
fn lines_of(
    pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// `recur task watch ID` against `server`, its stdout and stderr as lines.
fn watch(
    server: &str,
    id: &str,
) -> (
    tokio::process::Child,
    mpsc::UnboundedReceiver<String>,
    mpsc::UnboundedReceiver<String>,
) {
    let mut command = recur(server);
    command
        .args(["task", "watch", id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn watch");
    let stdout = lines_of(child.stdout.take().expect("stdout"));
    let stderr = lines_of(child.stderr.take().expect("stderr"));
    (child, stdout, stderr)
}

/// Triggers `id` and waits until the run's result is recorded.
async fn trigger_and_wait(server: &TestServer, id: &str, run: u64) {
    common::trigger(&mut server.new_client().await, id).await;
    common::eventually(&format!("run {run} of {id} finished"), || async {
        get_task(server, id)
            .await
            .is_ok_and(|t| t.last_result.is_some_and(|r| r.run == run))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_a_disconnect_without_gaps_or_repeats() {
    let (server, addr) = server().await;
    let target = HttpTarget::start().await;
    let out = task(
        &addr,
        &[
            "register",
            "w",
            "--every",
            "1h",
            "--http",
            &target.url("/w"),
        ],
    )
    .await;
    assert_code(&out, 0);
    let proxy = CutProxy::start(server.addr).await;

    let (mut child, mut stdout, mut stderr) = watch(&proxy.addr(), "w");
    // The stream is open once the server counts it.
    common::eventually("the watch stream is open", || async {
        server.open_streams.get() > 0
    })
    .await;

    // Cut before the first result: run 1 happens while the watcher cannot
    // see it, and it has printed no cursor yet; the stream's start cursor
    // (its response header) is what it resumes after.
    proxy.cut();
    let note = next_line(&mut stderr, "disconnect note").await;
    assert!(note.starts_with("recur: stream interrupted ("), "{note}");
    trigger_and_wait(&server, "w", 1).await;
    proxy.restore(server.addr);
    trigger_and_wait(&server, "w", 2).await;
    let first = next_line(&mut stdout, "result").await;
    assert!(
        first.contains(" w #1 manual SUCCEEDED 1 attempt HTTP 200 "),
        "{first}"
    );
    let mut runs = vec![first, next_line(&mut stdout, "result").await];

    // Cut again: results 3 and 4 happen while the watcher cannot see them.
    proxy.cut();
    let note = next_line(&mut stderr, "disconnect note").await;
    assert!(note.starts_with("recur: stream interrupted ("), "{note}");
    trigger_and_wait(&server, "w", 3).await;
    trigger_and_wait(&server, "w", 4).await;
    proxy.restore(server.addr);
    trigger_and_wait(&server, "w", 5).await;

    while runs.len() < 5 {
        runs.push(next_line(&mut stdout, "result").await);
    }
    let numbers: Vec<String> = runs
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap_or_default().to_string())
        .collect();
    assert_eq!(numbers, ["#1", "#2", "#3", "#4", "#5"], "{runs:#?}");

    // Ctrl-C: a quiet exit 0.
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = tokio::time::timeout(COMMAND_WAIT, child.wait())
        .await
        .expect("watch exited")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), stdout.recv())
            .await
            .ok()
            .flatten()
            .is_none(),
        "no duplicate after the fifth result"
    );

    // --history replays and exits 0; -o json gives one object per line.
    let out = task(&addr, &["watch", "--history", "w", "-o", "json"]).await;
    assert_code(&out, 0);
    let replayed: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(replayed.len(), 5, "{}", out.stdout);
    assert_eq!(replayed[0]["task_id"], "w");
    assert_eq!(replayed[0]["outcome"], "OUTCOME_SUCCEEDED");
    let after = replayed[1]["cursor"].as_str().expect("cursor");
    let out = task(&addr, &["watch", "--history", "--after", after]).await;
    assert_code(&out, 0);
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_across_a_server_restart_on_redis() {
    let mut config = test_config();
    config.redis_url = Some(common::redis::SHARED_URL.into());
    config.key_prefix = common::redis::random_prefix();
    let first = TestServer::start_with(config.clone(), |s| s).await;
    let target = HttpTarget::start().await;
    let url = target.url("/restart");
    let out = task(
        &first.addr.to_string(),
        &["register", "r", "--every", "2h", "--http", &url],
    )
    .await;
    assert_code(&out, 0);
    let proxy = CutProxy::start(first.addr).await;

    let (mut child, mut stdout, mut stderr) = watch(&proxy.addr(), "r");
    common::eventually("the watch stream is open", || async {
        first.open_streams.get() > 0
    })
    .await;
    trigger_and_wait(&first, "r", 1).await;
    let line = next_line(&mut stdout, "result").await;
    assert!(line.contains(" r #1 manual SUCCEEDED "), "{line}");

    // A graceful stop ends the stream with UNAVAILABLE and a resume cursor.
    first.stop().await.expect("first server stopped");
    proxy.cut();
    let note = next_line(&mut stderr, "disconnect note").await;
    assert!(
        note.starts_with("recur: stream interrupted (unavailable: the server is shutting down"),
        "{note}"
    );
    assert!(note.contains("; resuming after cursor "), "{note}");
    let second = TestServer::start_with(config, |s| s).await;
    trigger_and_wait(&second, "r", 2).await;
    proxy.restore(second.addr);
    trigger_and_wait(&second, "r", 3).await;
    for run in ["#2", "#3"] {
        let line = next_line(&mut stdout, "result").await;
        assert_eq!(line.split_whitespace().nth(2), Some(run), "{line}");
    }
    let _ = child.start_kill();
}

/// A tasks file of `entries`: (id, every in seconds, labels, secret).
fn tasks_file(url: &str, entries: &[(&str, u32, &str, &str)]) -> String {
    let mut text = String::from("tasks:\n");
    for (id, every, labels, secret) in entries {
        text.push_str(&format!(
            "  - task_id: {id}\n    spec:\n      schedule: {{every: {every}s}}\n      action:\n        http:\n          url: \"{url}\"\n          headers: {{authorization: \"Bearer {secret}\"}}\n      labels: {labels}\n"
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_updates_by_mask_and_prunes() {
    let (server, addr) = server().await;
    let target = HttpTarget::start().await;
    let url = target.url("/apply");
    let dir = tempfile::tempdir().expect("dir");
    let pricing = "{team: pricing}";
    let prod = "{team: pricing, env: prod}";
    let v1 = tasks_file(
        &url,
        &[
            ("prices", 3600, pricing, "s3cr3t"),
            ("rates", 3600, pricing, "s3cr3t"),
        ],
    );
    let file = write(&dir, "tasks.yaml", &v1);

    let out = task(&addr, &["apply", "-f", &file]).await;
    assert_code(&out, 0);
    assert_eq!(
        out.stdout,
        "+ prices\n+ rates\napplied: 2 created, 0 updated, 0 deleted, 0 unchanged\n"
    );

    // The same file again: the redacted secret is no diff.
    let out = task(&addr, &["apply", "-f", &file]).await;
    assert_code(&out, 0);
    assert_eq!(
        out.stdout,
        "applied: 0 created, 0 updated, 0 deleted, 2 unchanged\n"
    );
    let before = get_task(&server, "prices").await.expect("prices");

    // A new interval and a label: the dry run shows the paths, changes nothing.
    let v2 = tasks_file(
        &url,
        &[
            ("prices", 1800, prod, "s3cr3t"),
            ("rates", 3600, pricing, "s3cr3t"),
        ],
    );
    write(&dir, "tasks.yaml", &v2);
    let out = task(&addr, &["apply", "-f", &file, "--dry-run"]).await;
    assert_code(&out, 0);
    assert_eq!(
        out.stdout,
        "~ prices (schedule.every, labels)\n\
         plan: 0 to create, 1 to update, 0 to delete, 1 unchanged (dry run: nothing was changed)\n"
    );
    let after_dry_run = get_task(&server, "prices").await.expect("prices");
    assert_eq!(after_dry_run.spec, before.spec);
    assert_eq!(after_dry_run.spec_fingerprint, before.spec_fingerprint);

    let out = task(&addr, &["apply", "-f", &file]).await;
    assert_code(&out, 0);
    assert_eq!(
        out.stdout,
        "~ prices (schedule.every, labels)\napplied: 0 created, 1 updated, 0 deleted, 1 unchanged\n"
    );
    let updated = get_task(&server, "prices").await.expect("prices");
    assert_eq!(common::every_secs(&updated), 1800);
    let labels = &updated.spec.as_ref().expect("spec").labels;
    assert_eq!(labels.get("env").map(String::as_str), Some("prod"));
    // The stored secret still goes out.
    common::trigger(&mut server.new_client().await, "prices").await;
    let request = target.next_request().await;
    assert_eq!(
        request.headers.get("authorization").map(|v| v.as_bytes()),
        Some(&b"Bearer s3cr3t"[..])
    );

    // Only the secret changes: found although both sides read redacted.
    let v3 = tasks_file(
        &url,
        &[
            ("prices", 1800, prod, "n3w-s3cr3t"),
            ("rates", 3600, pricing, "s3cr3t"),
        ],
    );
    write(&dir, "tasks.yaml", &v3);
    let out = task(&addr, &["apply", "-f", &file, "--dry-run"]).await;
    assert_code(&out, 0);
    assert_eq!(
        out.stdout,
        "~ prices (action.http.headers)\n\
         plan: 0 to create, 1 to update, 0 to delete, 1 unchanged (dry run: nothing was changed)\n"
    );
    let out = task(&addr, &["apply", "-f", &file]).await;
    assert_code(&out, 0);
    assert_eq!(
        out.stdout,
        "~ prices (action.http.headers)\napplied: 0 created, 1 updated, 0 deleted, 1 unchanged\n"
    );
    common::trigger(&mut server.new_client().await, "prices").await;
    let request = target.next_request().await;
    assert_eq!(
        request.headers.get("authorization").map(|v| v.as_bytes()),
        Some(&b"Bearer n3w-s3cr3t"[..])
    );

    // `rates` leaves the file: pruned under the selector.
    let v4 = tasks_file(&url, &[("prices", 1800, prod, "n3w-s3cr3t")]);
    write(&dir, "tasks.yaml", &v4);
    let prune = [
        "apply",
        "-f",
        &file,
        "--prune",
        "--selector",
        "team=pricing",
    ];
    let mut dry = prune.to_vec();
    dry.push("--dry-run");
    let out = task(&addr, &dry).await;
    assert_code(&out, 0);
    assert_eq!(
        out.stdout,
        "- rates\nplan: 0 to create, 0 to update, 1 to delete, 1 unchanged (dry run: nothing was changed)\n"
    );
    assert!(
        get_task(&server, "rates").await.is_ok(),
        "the dry run deleted nothing"
    );
    let out = task(&addr, &prune).await;
    assert_code(&out, 0);
    assert_eq!(
        out.stdout,
        "- rates\napplied: 0 created, 0 updated, 1 deleted, 1 unchanged\n"
    );
    assert_eq!(
        get_task(&server, "rates")
            .await
            .map(drop)
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // --prune alone is a usage error.
    let out = task(&addr, &["apply", "-f", &file, "--prune"]).await;
    assert_code(&out, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_reads_camel_case_json_and_refuses_a_bad_entry_whole() {
    let (server, addr) = server().await;
    let dir = tempfile::tempdir().expect("dir");
    let json = r#"{"tasks": [{"taskId": "camel", "spec": {
        "schedule": {"every": "3600s", "maxRuns": "5"},
        "action": {"http": {"url": "http://127.0.0.1:9/c"}},
        "catchupWindow": "60s"}}]}"#;
    let file = write(&dir, "tasks.json", json);
    let out = task(&addr, &["apply", "-f", &file]).await;
    assert_code(&out, 0);
    assert_eq!(
        out.stdout,
        "+ camel\napplied: 1 created, 0 updated, 0 deleted, 0 unchanged\n"
    );
    let stored = get_task(&server, "camel").await.expect("camel");
    let spec = stored.spec.expect("spec");
    assert_eq!(spec.schedule.expect("schedule").max_runs, 5);
    assert_eq!(spec.catchup_window.map(|w| w.seconds), Some(60));

    // Same through stdin with proto names: unchanged.
    let yaml = "tasks:\n  - task_id: camel\n    spec:\n      schedule: {every: 3600s, max_runs: 5}\n      action: {http: {url: \"http://127.0.0.1:9/c\"}}\n      catchup_window: 60s\n";
    let out = task_stdin(&addr, &["apply", "-f", "-"], yaml).await;
    assert_code(&out, 0);
    assert_eq!(
        out.stdout,
        "applied: 0 created, 0 updated, 0 deleted, 1 unchanged\n"
    );

    // The server refuses the second entry: nothing at all is changed.
    let bad = "tasks:\n  - task_id: camel\n    spec:\n      schedule: {every: 7200s}\n      action: {http: {url: \"http://127.0.0.1:9/c\"}}\n  - task_id: too-fast\n    spec:\n      schedule: {every: 0.01s}\n      action: {http: {url: \"http://127.0.0.1:9/c\"}}\n";
    let bad_file = write(&dir, "bad.yaml", bad);
    let out = task(&addr, &["apply", "-f", &bad_file]).await;
    assert_code(&out, 2);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr.contains(": tasks[1] (too-fast): "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("\n  spec.schedule.every: "),
        "{}",
        out.stderr
    );
    let after = get_task(&server, "camel").await.expect("camel");
    assert_eq!(
        common::every_secs(&after),
        3600,
        "the first entry was not applied"
    );
    assert_eq!(
        get_task(&server, "too-fast")
            .await
            .map(drop)
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // Mistakes found in the file itself, before the server is asked.
    for (text, expected) in [
        ("tasks:\n  - spec: {}\n", "tasks[0]: task_id is required"),
        (
            "tasks:\n  - {task_id: a, spec: {}, labels: {}}\n",
            "tasks[0]: unknown key \"labels\"",
        ),
        (
            "tasks:\n  - {task_id: a, spec: {}}\n  - {task_id: a, spec: {}}\n",
            "tasks[1] (a): task_id \"a\" is also tasks[0]",
        ),
        (
            "tasks:\n  - {task_id: a, spec: {schedule: {every: 1m}}}\n",
            "tasks[0] (a).spec: ",
        ),
        (
            "tasks:\n  - {task_id: a, spec: {shedule: {}}}\n",
            "tasks[0] (a).spec: ",
        ),
    ] {
        let path = write(&dir, "mistake.yaml", text);
        let out = task(&addr, &["apply", "-f", &path]).await;
        assert_code(&out, 2);
        assert!(out.stderr.contains(expected), "{text}: {}", out.stderr);
    }
    let out = task(&addr, &["apply", "-f", "/nonexistent/tasks.yaml"]).await;
    assert_code(&out, 2);
    assert!(
        out.stderr.contains("cannot read /nonexistent/tasks.yaml"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_replaces_an_ended_task_and_prunes_one_with_a_run_going() {
    let (gate, mut started) = common::handlers::Gate::new();
    let server = TestServer::start_with(test_config(), |s| s.handler("gate", gate.clone())).await;
    let addr = server.addr.to_string();
    let dir = tempfile::tempdir().expect("dir");
    let entry = |id: &str, every: u32| {
        format!(
            "  - task_id: {id}\n    spec:\n      schedule: {{every: {every}s}}\n      action: {{custom: {{kind: gate}}}}\n      labels: {{team: ops}}\n"
        )
    };
    let both = format!("tasks:\n{}{}", entry("done", 3600), entry("busy", 3600));
    let file = write(&dir, "ops.yaml", &both);
    let out = task(&addr, &["apply", "-f", &file]).await;
    assert_code(&out, 0);

    // Cancelled by hand, the same spec in the file: left as it is (an
    // ended task cannot be updated, and nothing asks for a change).
    server
        .new_client()
        .await
        .cancel_task(pb::CancelTaskRequest {
            task_id: "done".into(),
            reason: String::new(),
        })
        .await
        .expect("cancel");
    let out = task(&addr, &["apply", "-f", &file]).await;
    assert_code(&out, 0);
    assert_eq!(
        out.stdout,
        "applied: 0 created, 0 updated, 0 deleted, 2 unchanged\n"
    );

    // A new spec for the ended task: it is replaced, and runs again.
    let changed = format!("tasks:\n{}{}", entry("done", 7200), entry("busy", 3600));
    write(&dir, "ops.yaml", &changed);
    let out = task(&addr, &["apply", "-f", &file, "--dry-run"]).await;
    assert_code(&out, 0);
    assert_eq!(
        out.stdout,
        "-/+ done (it is CANCELLED: deleted and registered again from the file)\n\
         plan: 0 to create, 0 to update, 1 to replace, 0 to delete, 1 unchanged (dry run: nothing was changed)\n"
    );
    let out = task(&addr, &["apply", "-f", &file]).await;
    assert_code(&out, 0);
    assert_eq!(
        out.stdout,
        "-/+ done (it is CANCELLED: deleted and registered again from the file)\n\
         applied: 0 created, 0 updated, 1 replaced, 0 deleted, 1 unchanged\n"
    );
    let done = get_task(&server, "done").await.expect("done");
    assert_eq!(done.state, pb::TaskState::Active as i32);
    assert_eq!(common::every_secs(&done), 7200);

    // `busy` leaves the file while a run of it is going: pruning cancels
    // it, then deletes it once the run's result has ended it.
    common::trigger(&mut server.new_client().await, "busy").await;
    tokio::time::timeout(WAIT, started.recv())
        .await
        .expect("the run started");
    let only_done = format!("tasks:\n{}", entry("done", 7200));
    write(&dir, "ops.yaml", &only_done);
    let out = task(
        &addr,
        &["apply", "-f", &file, "--prune", "--selector", "team=ops"],
    )
    .await;
    assert_code(&out, 0);
    assert_eq!(
        out.stdout,
        "- busy\napplied: 0 created, 0 updated, 1 deleted, 1 unchanged\n"
    );
    assert_eq!(
        get_task(&server, "busy")
            .await
            .map(drop)
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}
