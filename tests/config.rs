//! An invalid config is refused before anything starts, with a message
//! naming the flag to change.

mod common;

use std::time::Duration;

use common::*;
use recur::{ConfigError, ServerError};

#[tokio::test]
async fn a_server_with_an_invalid_config_names_the_flag_and_opens_nothing() {
    let mut config = test_config();
    // Above tokio's semaphore limit: this used to panic inside start-up.
    config.max_open_streams = usize::MAX;
    // Were Redis opened before the check, this would wait two minutes on a
    // port that refuses.
    config.redis_url = Some(format!("redis://127.0.0.1:{}", common::redis::free_port()));
    config.redis_startup_window = Duration::from_secs(120);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let result = tokio::time::timeout(
        WAIT,
        recur::server::run(listener, config, std::future::pending()),
    )
    .await
    .expect("refused at once, before opening Redis");
    let err = result.expect_err("an invalid config is refused");
    assert!(
        matches!(
            &err,
            ServerError::Config(ConfigError::Invalid {
                setting: "--max-open-streams",
                ..
            })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("invalid --max-open-streams:"),
        "{err}"
    );
}

#[tokio::test]
async fn the_binary_rejects_an_invalid_flag_with_a_usage_error() {
    let listen = common::redis::free_port();
    let output = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_recur"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{listen}"),
                "--results-per-task",
                "0",
                "--redis-url",
                &format!("redis://127.0.0.1:{}", common::redis::free_port()),
                "--redis-startup-secs",
                "120",
            ])
            .env_remove("RUST_LOG")
            .output(),
    )
    .await
    .expect("exited at once, before opening Redis")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid --results-per-task: must be at least 1, got 0"),
        "{stderr}"
    );
}
