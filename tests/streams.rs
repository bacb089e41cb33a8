//! StreamResults: replay and live with no gap or duplicate at the seam,
//! ends, slow readers, lost cursors, disconnects and the stream cap.

mod common;

use std::time::Duration;

use common::{handlers::Echo, *};
use recur::pb::v1 as pb;
use tonic::Code;

async fn echo_server(config: recur::Config) -> TestServer {
    TestServer::start_with(config, |s| s.handler("echo", Echo)).await
}

/// Registers an hourly echo task that tests drive with TriggerTask.
async fn echo_task(server: &TestServer, id: &str, payload: &[u8]) {
    let mut client = server.client.clone();
    register(
        &mut client,
        id,
        spec_every(Duration::from_secs(3600), custom("echo", payload)),
    )
    .await;
}

async fn trigger(server: &TestServer, id: &str) -> u64 {
    let mut client = server.client.clone();
    client
        .trigger_task(pb::TriggerTaskRequest { task_id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .run
}

async fn history(server: &TestServer, ids: &[&str], after: &str) -> Vec<pb::TaskResult> {
    let mut client = server.client.clone();
    let mut s = stream(&mut client, ids, after, true).await;
    let mut out = Vec::new();
    while let Some(r) = next_result(&mut s).await.expect("history ends OK") {
        out.push(r);
    }
    out
}

#[tokio::test]
async fn replay_then_live_has_no_gap_and_no_duplicate() {
    let server = echo_server(test_config()).await;
    echo_task(&server, "seam", b"x").await;
    let mut client = server.client.clone();
    let mut live = stream(&mut client, &["seam"], "", false).await;
    for _ in 0..5 {
        trigger(&server, "seam").await;
    }
    let mut first = Vec::new();
    for _ in 0..5 {
        first.push(next_result(&mut live).await.unwrap().unwrap());
    }
    let resume_after = first[1].cursor.clone();

    // Keep producing while the resumed stream replays and switches to live.
    let producer = {
        let client = server.client.clone();
        tokio::spawn(async move {
            let mut client = client;
            for _ in 0..40 {
                client
                    .trigger_task(pb::TriggerTaskRequest {
                        task_id: "seam".into(),
                    })
                    .await
                    .unwrap();
            }
        })
    };
    let mut resumed = stream(&mut client, &["seam"], &resume_after, false).await;
    producer.await.unwrap();
    let mut got = Vec::new();
    while got.len() < 43 {
        got.push(next_result(&mut resumed).await.unwrap().unwrap());
    }
    let runs: Vec<u64> = got.iter().map(|r| r.run).collect();
    let all = history(&server, &["seam"], "").await;
    let expected: Vec<u64> = all.iter().map(|r| r.run).skip(2).collect();
    assert_eq!(
        runs, expected,
        "resumed stream = every result after the cursor, once, in order"
    );
    assert_eq!(all.len(), 45);
    // Cursors are strictly ordered by append.
    let cursors: Vec<&str> = got.iter().map(|r| r.cursor.as_str()).collect();
    let mut dedup = cursors.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), cursors.len());
}

#[tokio::test]
async fn history_only_replays_then_ends_ok() {
    let server = echo_server(test_config()).await;
    echo_task(&server, "h1", b"1").await;
    echo_task(&server, "h2", b"2").await;
    let mut client = server.client.clone();
    let mut live = stream(&mut client, &[], "", false).await;
    for id in ["h1", "h2", "h1"] {
        trigger(&server, id).await;
        next_result(&mut live).await.unwrap().unwrap();
    }
    let everything = history(&server, &[], "").await;
    assert_eq!(everything.len(), 3);
    let only_h1 = history(&server, &["h1"], "").await;
    assert_eq!(
        only_h1
            .iter()
            .map(|r| r.task_id.as_str())
            .collect::<Vec<_>>(),
        ["h1", "h1"]
    );
    assert_eq!(only_h1[0].output, &b"1"[..]);
    let after_first = history(&server, &[], &everything[0].cursor).await;
    assert_eq!(after_first, everything[1..].to_vec());
}

#[tokio::test]
async fn bad_requests_are_refused_up_front() {
    let server = echo_server(test_config()).await;
    echo_task(&server, "known", b"").await;
    let mut client = server.client.clone();
    let req = |ids: &[&str], cursor: &str| pb::StreamResultsRequest {
        task_ids: ids.iter().map(|s| s.to_string()).collect(),
        after_cursor: cursor.into(),
        history_only: false,
    };
    let err = client
        .stream_results(req(&["known", "unknown"], ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("unknown"));
    let err = client
        .stream_results(req(&[], "garbage"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("after_cursor"),
        "{}",
        err.message()
    );
    // A well-formed cursor of another (earlier) log: its results are lost.
    let err = client
        .stream_results(req(&[], "0123456789ab-5"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss);
}

#[tokio::test]
async fn a_cursor_older_than_retention_is_data_loss_naming_the_oldest() {
    let mut config = test_config();
    config.results_per_task = 3;
    let server = echo_server(config).await;
    echo_task(&server, "short", b"").await;
    let mut client = server.client.clone();
    let mut live = stream(&mut client, &["short"], "", false).await;
    let mut results = Vec::new();
    for _ in 0..6 {
        trigger(&server, "short").await;
        results.push(next_result(&mut live).await.unwrap().unwrap());
    }
    let err = client
        .stream_results(pb::StreamResultsRequest {
            task_ids: vec!["short".into()],
            after_cursor: results[0].cursor.clone(),
            history_only: true,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss);
    let oldest = &results[3].cursor;
    assert!(
        err.message().contains(oldest.as_str()),
        "{} should name {oldest}",
        err.message()
    );
    assert_eq!(
        err.metadata().get("recur-oldest-cursor").unwrap(),
        oldest.as_str()
    );
    // The resume cursor replays everything still held.
    let resume = err
        .metadata()
        .get("recur-resume-cursor")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let held = history(&server, &["short"], &resume).await;
    assert_eq!(held.iter().map(|r| r.run).collect::<Vec<_>>(), [4, 5, 6]);
    // A cursor still inside retention works.
    assert_eq!(
        history(&server, &["short"], &results[3].cursor).await.len(),
        2
    );
}

#[tokio::test]
async fn stream_of_cancelled_task_ends_ok_after_its_last_result() {
    let server = echo_server(test_config()).await;
    echo_task(&server, "ending", b"").await;
    let mut client = server.client.clone();
    let mut s = stream(&mut client, &["ending"], "", false).await;
    trigger(&server, "ending").await;
    assert_eq!(next_result(&mut s).await.unwrap().unwrap().run, 1);
    client
        .cancel_task(pb::CancelTaskRequest {
            task_id: "ending".into(),
            reason: String::new(),
        })
        .await
        .unwrap();
    assert!(next_result(&mut s).await.expect("ends OK").is_none());
    // Opening a stream on an already ended task ends at once.
    let mut s = stream(&mut client, &["ending"], "", false).await;
    assert!(next_result(&mut s).await.expect("ends OK").is_none());
}

#[tokio::test]
async fn slow_reader_gets_resource_exhausted_with_a_resume_cursor() {
    let mut config = test_config();
    config.stream_buffer = 2;
    let server = echo_server(config).await;
    // Large outputs fill HTTP/2 flow-control windows quickly, so a reader
    // that does not read really falls behind.
    echo_task(&server, "big", &vec![b'x'; 60 * 1024]).await;
    // A reader with a small HTTP/2 window that it never drains: what the
    // server sends piles up in its buffer, not in the reader's.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(64 * 1024)
        .connect()
        .await
        .unwrap();
    let mut reader_client = recur::pb::v1::task_service_client::TaskServiceClient::new(channel);
    let mut slow = stream(&mut reader_client, &["big"], "", false).await;
    let mut watcher_client = server.client.clone();
    let mut watcher = stream(&mut watcher_client, &["big"], "", false).await;
    for _ in 0..30 {
        trigger(&server, "big").await;
    }
    // Another reader keeps up: the slow one slows nobody.
    for _ in 0..30 {
        next_result(&mut watcher).await.unwrap().unwrap();
    }
    let mut delivered = Vec::new();
    let status = loop {
        match next_result(&mut slow).await {
            Ok(Some(r)) => delivered.push(r),
            Ok(None) => panic!("slow stream ended OK after {} results", delivered.len()),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(delivered.len() < 30);
    let resume = status
        .metadata()
        .get("recur-resume-cursor")
        .expect("resume trailer")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        resume,
        delivered
            .last()
            .map(|r| r.cursor.clone())
            .unwrap_or_default()
    );
    // Resuming gives the rest: nothing lost.
    let rest = history(&server, &["big"], &resume).await;
    assert_eq!(delivered.len() + rest.len(), 30);

    // The task ends while the reader is away: a live stream resumed from the
    // cursor replays the rest and then finishes, rather than waiting forever
    // for an end it missed.
    let mut client = server.client.clone();
    client
        .cancel_task(pb::CancelTaskRequest {
            task_id: "big".into(),
            reason: String::new(),
        })
        .await
        .unwrap();
    let mut resumed = stream(&mut client, &["big"], &resume, false).await;
    let mut replayed = 0;
    while let Some(result) = next_result(&mut resumed).await.expect("ends OK") {
        assert_eq!(result.task_id, "big");
        replayed += 1;
    }
    assert_eq!(replayed, rest.len());
}

#[tokio::test]
async fn disconnected_readers_release_their_streams() {
    let server = echo_server(test_config()).await;
    echo_task(&server, "gone", b"").await;
    let baseline = server.open_streams.get();
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut client = server.new_client().await;
        let s = stream(&mut client, &["gone"], "", false).await;
        streams.push((client, s));
    }
    assert_eq!(server.open_streams.get(), baseline + 5);
    // A stream is pulled by its reader, so it goes as soon as the server
    // sees the reader gone; `eventually` bounds the wait generously.
    drop(streams);
    eventually("open streams back to baseline", || async {
        server.open_streams.get() == baseline
    })
    .await;
}

#[tokio::test]
async fn open_streams_are_capped() {
    let mut config = test_config();
    config.max_open_streams = 2;
    let server = echo_server(config).await;
    echo_task(&server, "cap", b"").await;
    let mut client = server.client.clone();
    let _a = stream(&mut client, &["cap"], "", false).await;
    let _b = stream(&mut client, &["cap"], "", false).await;
    let err = client
        .stream_results(pb::StreamResultsRequest {
            task_ids: vec!["cap".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
}
