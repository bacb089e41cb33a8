//! The embedding example, run as a user would: it says where it serves and
//! logs without RUST_LOG being set.

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::io::{AsyncBufReadExt, BufReader};

/// Bound on the example starting (a loaded machine included).
const START_WAIT: Duration = Duration::from_secs(30);

/// `cargo test` builds examples next to the test binaries' directory.
fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().expect("test binary path");
    let path = deps
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run the whole `cargo test` (it builds examples) or `cargo build --examples` first",
        path.display()
    );
    path
}

#[tokio::test]
async fn custom_kind_says_where_it_serves_and_logs_by_default() {
    let mut child = tokio::process::Command::new(example("custom_kind"))
        .env("RECUR_LISTEN", "127.0.0.1:0")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the example");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(START_WAIT, stdout.next_line())
        .await
        .expect("the example printed a line")
        .unwrap()
        .expect("a line, not the end of output");
    assert!(
        first.starts_with("custom_kind: serving on 127.0.0.1:") && first.contains("word-count"),
        "{first}"
    );
    // The library's own lines come through at the default `info` level.
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let serving = tokio::time::timeout(START_WAIT, async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if line.contains("INFO") && line.contains("serving") {
                return;
            }
            seen.push(line);
        }
        panic!("output ended without a serving line: {seen:?}");
    })
    .await;
    assert!(serving.is_ok(), "no serving line logged");
    child.kill().await.unwrap();
}

/// The README's client examples are the files the clients' suites run
/// (`clients/*/scripts/test.sh`), so what the README shows runs as written.
#[test]
fn the_readme_shows_the_client_examples_the_tests_run() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &str| std::fs::read_to_string(root.join(path)).expect(path);
    let readme = read("README.md");
    for (fence, path) in [
        ("python", "clients/python/examples/quickstart.py"),
        ("ts", "clients/typescript/examples/quickstart.ts"),
    ] {
        let block = format!("```{fence}\n{}```", read(path));
        assert!(
            readme.contains(&block),
            "README.md's ```{fence} example is not {path} verbatim: copy it over"
        );
    }
}
