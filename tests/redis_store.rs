//! The Redis store against the store contract, step by step: the same
//! decisions as the memory store, made durable. Each test works on the
//! shared Redis under its own key prefix and deletes its keys after.

mod common;

use std::{collections::HashMap, sync::Arc, time::Duration};

use ::redis::{self, AsyncCommands};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::redis::{SHARED_URL, connect, random_prefix};
use recur::{
    RedisPool,
    action::{
        Actions,
        http::{HttpRunner, HttpSettings},
    },
    api::convert::stored_spec_decoder,
    redis_pool::PoolSettings,
    scheduler::schedule::{Limits, Schedule, ScheduleInput},
    store::{
        Checked, Dispatch, Fired, Firing, Halt, Halted, Inserted, LeaseMode, Recording, RunStart,
        Store, StoreError, TaskFilter, Triggered,
        memory::Retention,
        redis::{RedisSettings, RedisStore},
    },
    task::{
        Action, HttpAction, Outcome, OverlapPolicy, RetryPolicy, TaskId, TaskRecord, TaskResult,
        TaskSpec, Trigger,
    },
};

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(secs)
}

/// A store on the shared Redis under a fresh prefix; its keys go on drop.
struct TestStore {
    store: RedisStore,
    prefix: String,
}

impl TestStore {
    async fn open(retention: Retention) -> TestStore {
        Self::open_at(random_prefix(), retention).await
    }

    async fn open_at(prefix: String, retention: Retention) -> TestStore {
        Self::open_with(prefix.clone(), settings(&prefix, retention)).await
    }

    async fn open_with(prefix: String, settings: RedisSettings) -> TestStore {
        let pool = pool().await;
        let store = RedisStore::open(pool, settings, decoder(&prefix))
            .await
            .expect("open the store");
        // The only replica: it owns every shard, so it may fire.
        store
            .lease(LeaseMode::Member)
            .await
            .expect("the lease step");
        TestStore { store, prefix }
    }

    /// The keys of the prefix that end with `suffix`.
    async fn keys_ending(&self, suffix: &str) -> Vec<String> {
        let mut conn = connect(SHARED_URL).await;
        conn.keys(format!("{}*{suffix}", self.prefix))
            .await
            .expect("KEYS")
    }

    /// Deletes every key of the prefix (the shared Redis is never flushed).
    async fn delete_keys(&self) {
        let mut conn = connect(SHARED_URL).await;
        let keys: Vec<String> = conn.keys(format!("{}*", self.prefix)).await.expect("KEYS");
        if !keys.is_empty() {
            let _: () = conn.del(keys).await.expect("DEL");
        }
    }
}

async fn pool() -> RedisPool {
    RedisPool::open(PoolSettings {
        url: SHARED_URL.into(),
        client_name: "recur:store-test".into(),
        size: 4,
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(5),
        startup_window: Duration::from_secs(5),
    })
    .await
    .expect("shared redis")
}

fn settings(prefix: &str, retention: Retention) -> RedisSettings {
    RedisSettings {
        prefix: prefix.into(),
        shards: 4,
        retention,
        max_age: Duration::from_secs(3600),
        url: SHARED_URL.into(),
        client_name: "recur:store-test".into(),
        node: format!("store-test/{}", random_prefix()),
        // Test stores take one lease step at open and do not renew it.
        lease: Duration::from_secs(5),
        secret_keys: None,
    }
}

/// [`settings`] with a short lease: a Redis that came back empty is fired
/// from again one lease after it was written back.
fn settings_short_lease(prefix: &str, retention: Retention) -> RedisSettings {
    RedisSettings {
        lease: Duration::from_secs(2),
        secret_keys: None,
        ..settings(prefix, retention)
    }
}

fn decoder(prefix: &str) -> recur::store::redis::SpecDecoder {
    let http = HttpRunner::new(HttpSettings {
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        total_timeout: Duration::from_secs(1),
        max_redirects: 0,
        output_cap: 1024,
        addresses: Default::default(),
        secrets: Default::default(),
    })
    .expect("http client");
    stored_spec_decoder(
        Duration::from_secs(30),
        prefix.to_string(),
        Actions::new(http, None, HashMap::new(), 1024),
    )
}

fn roomy() -> Retention {
    Retention {
        per_task: 10,
        total: 100,
        max_bytes: 100_000,
    }
}

/// A task every second from t(1) calling a local URL, with a secret header.
fn record(id: &str, overlap: OverlapPolicy) -> TaskRecord {
    let schedule = Schedule::from_input(
        ScheduleInput {
            every: Some(Duration::from_secs(1)),
            start_at: Some(t(1)),
            ..ScheduleInput::default()
        },
        &Limits::default(),
    )
    .unwrap();
    let spec = TaskSpec {
        schedule,
        action: Action::Http(HttpAction {
            method: reqwest::Method::POST,
            url: reqwest::Url::parse("http://127.0.0.1:9/hook").unwrap(),
            headers: [("authorization".to_string(), "Bearer s3cr3t".to_string())].into(),
            secret_headers: Default::default(),
            body: Bytes::from_static(b"{}"),
        }),
        timeout: Duration::from_secs(1),
        overlap,
        retry: RetryPolicy::default(),
        labels: [("team".to_string(), "infra".to_string())].into(),
        catchup_window: Some(Duration::from_secs(30)),
    };
    TaskRecord::new(TaskId::parse(id).unwrap(), Arc::new(spec), t(0), t(1))
}

async fn insert(store: &RedisStore, id: &str, overlap: OverlapPolicy) -> TaskRecord {
    insert_requested(store, id, overlap, None).await
}

/// Registers a new task, with `request_id` if given.
async fn insert_requested(
    store: &RedisStore,
    id: &str,
    overlap: OverlapPolicy,
    request_id: Option<&str>,
) -> TaskRecord {
    match store
        .insert_task(record(id, overlap), request_id)
        .await
        .unwrap()
    {
        Inserted::Created(task) => task,
        other => panic!("{other:?}"),
    }
}

/// The firing of `task`'s next slot as armed now.
fn firing(task: &TaskRecord, retry: bool) -> Firing {
    let slot = task.next_run_at.unwrap();
    Firing {
        task_id: task.id.clone(),
        version: task.version,
        armed_slot: slot,
        slot,
        run: true,
        passed: 0,
        next: Some(slot + chrono::Duration::seconds(1)),
        occurrence_id: format!("{}@{}", task.id, slot),
        now: slot,
        retry,
        start: false,
        ahead: false,
    }
}

async fn fire_one(store: &RedisStore, firing: Firing) -> Fired {
    store.fire(vec![firing]).await.unwrap().remove(0)
}

/// Fires `armed`'s first slot and starts the run it dispatches; gives the
/// task as fired and the run.
async fn first_run(store: &RedisStore, armed: &TaskRecord) -> (TaskRecord, RunStart) {
    let Fired::Done(first) = fire_one(store, firing(armed, false)).await else {
        panic!("fires");
    };
    let Dispatch::Start(run) = first.dispatch else {
        panic!("run 1 dispatched");
    };
    assert_eq!(
        store.start_runs(std::slice::from_ref(&run)).await.unwrap(),
        [true]
    );
    (first.task, run)
}

fn result(task: &str, run: u64, output: usize) -> TaskResult {
    TaskResult {
        task_id: TaskId::parse(task).unwrap(),
        run,
        cursor: String::new(),
        scheduled_at: t(1),
        started_at: Some(t(1)),
        finished_at: t(2),
        outcome: Outcome::Succeeded,
        attempts: 1,
        trigger: Trigger::Manual,
        error: String::new(),
        output: Bytes::from(vec![b'x'; output]),
        output_truncated: false,
        http_status: 200,
        skipped_slots: 0,
        claim_lapsed: false,
        occurrence_id: format!("{task}@{run}"),
        latency: Duration::from_millis(5),
        executor: "test".into(),
        wire: Default::default(),
    }
}

async fn append(store: &RedisStore, result: TaskResult) -> Arc<TaskResult> {
    let recording = Recording {
        result,
        finishes_run: false,
        fence: 0,
    };
    store.record(&[recording]).await.unwrap().results.remove(0)
}

#[tokio::test]
async fn a_task_reads_back_as_it_was_written_from_a_second_store() {
    let first = TestStore::open(roomy()).await;
    let written = match first
        .store
        .insert_task(record("a", OverlapPolicy::BufferOne), Some("req-1"))
        .await
        .unwrap()
    {
        Inserted::Created(task) => task,
        other => panic!("{other:?}"),
    };
    // A second process on the same prefix (a restart) reads the same task,
    // secret header value included, and knows its request id.
    let second = TestStore::open_at(first.prefix.clone(), roomy()).await;
    assert_eq!(
        second.store.epoch(),
        first.store.epoch(),
        "one store, one epoch"
    );
    let read = second.store.get_task(&written.id).await.unwrap().unwrap();
    assert_eq!(read, written);
    let Action::Http(http) = &read.spec.action else {
        panic!("http action")
    };
    assert_eq!(http.headers["authorization"], "Bearer s3cr3t");
    assert_eq!(
        second.store.task_for_request("req-1").await.unwrap(),
        Some(written.clone())
    );
    assert!(matches!(
        second
            .store
            .insert_task(record("other", OverlapPolicy::Skip), Some("req-1"))
            .await
            .unwrap(),
        Inserted::SameRequest(task) if task.id == written.id
    ));
    assert!(matches!(
        second
            .store
            .insert_task(record("a", OverlapPolicy::Skip), None)
            .await,
        Err(StoreError::Exists { .. })
    ));

    // Listing pages through every shard in id order; filters apply.
    for id in ["b", "c", "d"] {
        insert(&second.store, id, OverlapPolicy::Skip).await;
    }
    // A namespace is counted across every shard by its prefix alone.
    let mut namespaced = Vec::new();
    for id in ["team-a.x", "team-a.y", "team-a", "team-b.x"] {
        namespaced.push(insert(&second.store, id, OverlapPolicy::Skip).await);
    }
    assert_eq!(second.store.count_tasks_in("team-a.").await.unwrap(), 2);
    assert_eq!(second.store.count_tasks_in("team-").await.unwrap(), 4);
    assert_eq!(second.store.count_tasks_in("none.").await.unwrap(), 0);
    for task in namespaced {
        second
            .store
            .delete_task(&task.id, task.version)
            .await
            .unwrap();
    }
    let all = TaskFilter::default();
    let ids = |tasks: Vec<TaskRecord>| {
        tasks
            .into_iter()
            .map(|t| t.id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(second.store.list_tasks(None, 10, &all).await.unwrap()),
        ["a", "b", "c", "d"]
    );
    let after_a = TaskId::parse("a").unwrap();
    assert_eq!(
        ids(second
            .store
            .list_tasks(Some(&after_a), 2, &all)
            .await
            .unwrap()),
        ["b", "c"]
    );
    assert_eq!(second.store.count_tasks().await.unwrap(), 4);

    // Update is a compare-and-set on the version; delete too.
    let mut changed = read.clone();
    changed.reason = "changed".into();
    let updated = second.store.update_task(changed.clone()).await.unwrap();
    assert_eq!(updated.version, read.version + 1);
    assert!(matches!(
        second.store.update_task(changed).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        second.store.delete_task(&updated.id, read.version).await,
        Err(StoreError::Conflict { .. })
    ));
    second
        .store
        .delete_task(&updated.id, updated.version)
        .await
        .unwrap();
    assert_eq!(second.store.get_task(&updated.id).await.unwrap(), None);
    assert_eq!(second.store.task_for_request("req-1").await.unwrap(), None);
    first.delete_keys().await;
}

#[tokio::test]
async fn only_a_retry_gets_the_answer_of_an_applied_firing_again() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    let armed = insert(store, "a", OverlapPolicy::Skip).await;
    let Fired::Done(first) = fire_one(store, firing(&armed, false)).await else {
        panic!("first firing applies");
    };
    assert!(matches!(first.dispatch, Dispatch::Start(ref s) if s.record.run == 1));
    assert!(matches!(
        fire_one(store, firing(&armed, false)).await,
        Fired::Stale
    ));
    let Fired::Done(again) = fire_one(store, firing(&armed, true)).await else {
        panic!("a retry is answered");
    };
    assert!(matches!(again.dispatch, Dispatch::Start(ref s) if s.record.run == 1));
    assert_eq!(again.task.run_count, 1, "counted once");
    test.delete_keys().await;
}

#[tokio::test]
async fn a_firing_ahead_leaves_a_task_with_a_run_in_flight_as_it_is() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    let armed = insert(store, "a", OverlapPolicy::Allow).await;
    let (fired, _run) = first_run(store, &armed).await;
    let ahead = Firing {
        ahead: true,
        start: true,
        ..firing(&fired, false)
    };
    assert!(matches!(fire_one(store, ahead).await, Fired::NotAhead));
    // Nothing was written: a second store reading Redis sees run 1 only.
    let other = TestStore::open_at(test.prefix.clone(), roomy()).await;
    let read = other.store.get_task(&armed.id).await.unwrap().unwrap();
    assert_eq!((read.version, read.run_count), (fired.version, 1));
    // At its instant the slot fires as usual.
    let Fired::Done(second) = fire_one(store, firing(&fired, false)).await else {
        panic!("fires at its instant");
    };
    assert_eq!(second.task.run_count, 2);
    test.delete_keys().await;
}

#[tokio::test]
async fn the_store_reads_the_clock_of_redis() {
    let test = TestStore::open(roomy()).await;
    let before = Utc::now();
    let redis_time = test
        .store
        .server_time()
        .await
        .unwrap()
        .expect("Redis has a clock");
    let after = Utc::now();
    // The Redis of the tests runs on this machine, on its clock.
    let slack = chrono::Duration::milliseconds(100);
    assert!(
        before - slack <= redis_time && redis_time <= after + slack,
        "{before} <= {redis_time} <= {after}"
    );
    test.delete_keys().await;
}

#[tokio::test]
async fn a_slot_claimed_once_never_starts_again_when_the_clock_steps_back() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    let armed = insert(store, "a", OverlapPolicy::Allow).await;
    let Fired::Done(fired) = fire_one(store, firing(&armed, false)).await else {
        panic!("fires");
    };
    // The wall clock steps back a second and the task is re-armed from it
    // (a resume or update computes its next slot from "now"): the slot it
    // already ran is its next slot again.
    let mut rearmed = fired.task.clone();
    rearmed.next_run_at = armed.next_run_at;
    let rearmed = store.update_task(rearmed).await.unwrap();
    match fire_one(store, firing(&rearmed, false)).await {
        Fired::AlreadyClaimed(fire) => {
            assert!(matches!(fire.dispatch, Dispatch::None), "no second run");
            assert_eq!(fire.task.run_count, 1);
            assert_eq!(fire.task.next_run_at, Some(t(2)), "moved past it");
        }
        other => panic!("the slot ran twice: {other:?}"),
    }
    test.delete_keys().await;
}

#[tokio::test]
async fn runs_are_started_halted_and_settled_in_the_store() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    let armed = insert(store, "b", OverlapPolicy::Allow).await;
    let (first, run1) = first_run(store, &armed).await;
    assert_eq!(store.start_runs(&[run1]).await.unwrap(), [false], "once");
    let Fired::Done(second) = fire_one(store, firing(&first, false)).await else {
        panic!("fires");
    };
    assert_eq!(second.task.run_count, 2);
    assert_eq!(second.task.active_runs, 2);
    let Halted::Done { dropped, ended, .. } = store
        .halt(
            &armed.id,
            Halt::Cancel {
                reason: "done".into(),
                call: "c1".into(),
            },
            t(3),
        )
        .await
        .unwrap()
    else {
        panic!("cancels");
    };
    assert_eq!(dropped.iter().map(|r| r.run).collect::<Vec<_>>(), [2]);
    assert!(!ended, "run 1 still runs");
    // A caller that never saw that reply can still learn what it dropped,
    // by its call; another call learns nothing.
    let (again, _) = store
        .halt_dropped(&armed.id, "c1")
        .await
        .unwrap()
        .expect("the last halt");
    assert_eq!(again, dropped);
    assert!(store.halt_dropped(&armed.id, "c2").await.unwrap().is_none());
    let finished = |run: u64| Recording {
        result: TaskResult {
            outcome: Outcome::Cancelled,
            ..result("b", run, 3)
        },
        finishes_run: run == 1,
        fence: 0,
    };
    let recorded = store.record(&[finished(1)]).await.unwrap();
    assert!(recorded.ended.is_empty(), "run 2's result is still owed");
    let recorded = store.record(&[finished(2)]).await.unwrap();
    assert_eq!(recorded.ended, vec![armed.id.clone()], "then it ends, once");
    let view = store.get_task(&armed.id).await.unwrap().unwrap();
    assert!(view.has_ended());
    let last = view.last_result.expect("last result kept");
    assert_eq!(last.run, 2);
    assert_eq!(last.cursor, recorded.results[0].cursor, "with its cursor");
    test.delete_keys().await;
}

#[tokio::test]
async fn retention_by_count_per_task_and_bytes_is_detected_as_loss() {
    let test = TestStore::open(Retention {
        per_task: 3,
        total: 100,
        max_bytes: 1000,
    })
    .await;
    let store = &test.store;
    let start = store.head_cursor().await.unwrap();
    let first = append(store, result("a", 1, 10)).await;
    for run in 2..=4 {
        append(store, result("a", run, 10)).await;
    }
    let none: &[TaskId] = &[];
    let after_first = store
        .results_after(Some(&first.cursor), none, 10)
        .await
        .unwrap();
    assert_eq!(
        after_first.iter().map(|r| r.run).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert_eq!(
        *after_first[0],
        TaskResult {
            cursor: after_first[0].cursor.clone(),
            ..result("a", 2, 10)
        }
    );
    assert!(matches!(
        store.results_after(Some(&start), none, 10).await,
        Err(StoreError::CursorExpired { oldest, .. }) if oldest == after_first[0].cursor
    ));
    let b = TaskId::parse("b").unwrap();
    for run in 1..=5 {
        append(store, result("b", run, 400)).await;
    }
    let held = store.results_after(None, &[], 100).await.unwrap();
    let bytes: usize = held.iter().map(|r| r.output.len()).sum();
    assert!(bytes <= 1000, "{bytes} bytes held");
    assert_eq!(held.iter().filter(|r| r.task_id == b).count(), 2);
    // Per task: b's reader sees its two, in order.
    let of_b = store
        .results_after(None, std::slice::from_ref(&b), 100)
        .await
        .unwrap();
    assert_eq!(of_b.iter().map(|r| r.run).collect::<Vec<_>>(), [4, 5]);
    append(store, result("c", 1, 5000)).await;
    assert_eq!(store.results_after(None, &[], 100).await.unwrap().len(), 1);
    // A cursor ahead of the log is refused, not waited on.
    let head = store.head_cursor().await.unwrap();
    let (epoch, _) = head.split_once('-').unwrap();
    assert!(matches!(
        store
            .results_after(Some(&format!("{epoch}-99999999999999-0")), none, 10)
            .await,
        Err(StoreError::InvalidCursor { .. })
    ));
    test.delete_keys().await;
}

#[tokio::test]
async fn an_emptied_store_gets_the_definitions_back_and_old_cursors_are_data_loss() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    let task = insert_requested(store, "kept", OverlapPolicy::Skip, Some("req-kept")).await;
    let before = append(store, result("kept", 1, 1)).await;
    assert_eq!(store.check().await.unwrap(), Checked::Same);
    // Everything under the prefix goes, as with a Redis restarted empty.
    test.delete_keys().await;
    let Checked::Restored {
        tasks,
        lost_epoch,
        epoch,
    } = store.check().await.unwrap()
    else {
        panic!("the loss is detected");
    };
    assert_eq!(tasks, 1);
    assert_ne!(lost_epoch, epoch);
    let back = store.get_task(&task.id).await.unwrap().expect("restored");
    assert_eq!(back.version, task.version);
    assert_eq!(back.spec, task.spec);
    assert_eq!(
        store
            .task_for_request("req-kept")
            .await
            .unwrap()
            .map(|t| t.id),
        Some(task.id.clone()),
        "its request id too"
    );
    let none: &[TaskId] = &[];
    assert!(matches!(
        store.results_after(Some(&before.cursor), none, 10).await,
        Err(StoreError::CursorExpired { .. })
    ));
    // Alone before the loss, the process opens no write-back window: no
    // other replica holds anything to write back.
    let after = append(store, result("kept", 2, 1)).await;
    assert!(
        after.cursor.starts_with(&epoch),
        "{} under {epoch}",
        after.cursor
    );
    test.delete_keys().await;
}

/// Sets the store format and compat keys under `prefix`, opens a store
/// there, and returns what it answered with the keys as left.
async fn open_on_format(
    format: &str,
    compat: Option<&str>,
) -> (Result<RedisStore, StoreError>, String, Option<String>) {
    let prefix = random_prefix();
    let mut conn = connect(SHARED_URL).await;
    let format_key = format!("{prefix}{{meta}}:format");
    let compat_key = format!("{prefix}{{meta}}:compat");
    let _: () = conn.set(&format_key, format).await.unwrap();
    if let Some(compat) = compat {
        let _: () = conn.set(&compat_key, compat).await.unwrap();
    }
    let opened = RedisStore::open(pool().await, settings(&prefix, roomy()), decoder(&prefix)).await;
    let format: String = conn.get(&format_key).await.unwrap();
    let compat: Option<String> = conn.get(&compat_key).await.unwrap();
    let keys: Vec<String> = conn.keys(format!("{prefix}*")).await.unwrap();
    let _: () = conn.del(keys).await.unwrap();
    (opened, format, compat)
}

#[tokio::test]
async fn a_newer_store_format_that_does_not_allow_this_one_is_refused() {
    let (opened, format, compat) = open_on_format("3", Some("3")).await;
    let Err(error) = opened else {
        panic!("a newer format must not be opened");
    };
    assert!(
        matches!(error, StoreError::Format { newer: true, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("upgrade recur"), "{error}");
    assert!(error.to_string().contains("format 3"), "{error}");
    assert_eq!(
        (format.as_str(), compat.as_deref()),
        ("3", Some("3")),
        "left as found"
    );
}

#[tokio::test]
async fn adjacent_formats_share_a_store_when_the_newer_allows_it() {
    // A newer build that declared this format may run beside it.
    let (opened, format, compat) = open_on_format("3", Some("2")).await;
    assert!(opened.is_ok(), "{:?}", opened.err());
    assert_eq!(
        (format.as_str(), compat.as_deref()),
        ("3", Some("2")),
        "not lowered"
    );
    // A store of the format before replicas is read and raised; builds of
    // that format refuse it from then on (they only read format 1).
    let (opened, format, compat) = open_on_format("1", None).await;
    assert!(opened.is_ok(), "{:?}", opened.err());
    assert_eq!((format.as_str(), compat.as_deref()), ("2", Some("2")));
    // One older than this build reads is refused.
    let (opened, _, _) = open_on_format("0", None).await;
    assert!(matches!(
        opened,
        Err(StoreError::Format { newer: false, .. })
    ));
}

#[tokio::test]
async fn paging_through_many_tasks_yields_each_once_in_id_order() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    // More per shard than a shard page holds, so pages merge partial shards.
    let mut ids: Vec<String> = (0..150).map(|i| format!("task-{i:03}")).collect();
    for id in &ids {
        insert(store, id, OverlapPolicy::Skip).await;
    }
    ids.sort();
    let all = TaskFilter::default();
    let mut listed = Vec::new();
    let mut after: Option<TaskId> = None;
    loop {
        let page = store.list_tasks(after.as_ref(), 7, &all).await.unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 7);
        after = Some(last.id.clone());
        listed.extend(page.into_iter().map(|t| t.id.to_string()));
    }
    assert_eq!(listed, ids);
    test.delete_keys().await;
}

#[tokio::test]
async fn results_carry_the_fence_of_their_claim_and_a_lapsed_claim_is_marked() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    let armed = insert(store, "fenced", OverlapPolicy::Allow).await;
    let mut runs = Vec::new();
    let mut task = armed;
    for _ in 0..2 {
        let Fired::Done(fire) = fire_one(store, firing(&task, false)).await else {
            panic!("fires");
        };
        let Dispatch::Start(start) = fire.dispatch else {
            panic!("a run");
        };
        runs.push(start.record);
        task = fire.task;
    }
    assert!(runs[0].fence < runs[1].fence, "fences only grow");
    // Run 1 finishes normally; run 2 is given up (as at a restart), and
    // its result still comes: recorded, marked as a lapsed claim.
    let finished = |run: u64| Recording {
        result: result("fenced", run, 1),
        finishes_run: true,
        fence: runs[run as usize - 1].fence,
    };
    store.record(&[finished(1)]).await.unwrap();
    // Another replica gives run 2 up once this one is gone (as at a
    // restart, or a lease that lapsed); not before.
    let other = TestStore::open_at(test.prefix.clone(), roomy()).await;
    let kept = other.store.abandon_runs(&[task.id.clone()]).await.unwrap();
    assert!(
        kept.is_empty(),
        "the runs of a live replica are kept: {kept:?}"
    );
    store.lease(LeaseMode::Leave).await.unwrap();
    other.store.lease(LeaseMode::Member).await.unwrap();
    let abandoned = other.store.abandon_runs(&[task.id.clone()]).await.unwrap();
    assert_eq!(abandoned[0].runs.len(), 1);
    let late = store.record(&[finished(2)]).await.unwrap();
    assert_eq!(late.results.len(), 1, "history is always written");
    assert!(late.results[0].claim_lapsed, "and marked for readers");
    let after = store.get_task(&task.id).await.unwrap().unwrap();
    assert_eq!(
        after.last_result.as_ref().map(|r| r.run),
        Some(1),
        "a lapsed claim changes nothing of the task"
    );
    let mut conn = connect(SHARED_URL).await;
    let log: redis::streams::StreamRangeReply = conn
        .xrange_all(format!("{}{{log}}:results", test.prefix))
        .await
        .unwrap();
    let marks: Vec<(Option<u64>, Option<u8>)> =
        log.ids.iter().map(|e| (e.get("f"), e.get("l"))).collect();
    assert_eq!(
        marks,
        [(Some(runs[0].fence), None), (Some(runs[1].fence), Some(1))]
    );
    test.delete_keys().await;
}

#[tokio::test]
async fn a_batch_tried_again_after_a_lost_reply_is_recorded_once() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    let armed = insert(store, "once", OverlapPolicy::Skip).await;
    let Fired::Done(fire) = fire_one(store, firing(&armed, false)).await else {
        panic!("fires");
    };
    let Dispatch::Start(start) = fire.dispatch else {
        panic!("a run");
    };
    assert_eq!(
        store
            .start_runs(std::slice::from_ref(&start))
            .await
            .unwrap(),
        [true]
    );
    let batch = [Recording {
        result: result("once", 1, 1),
        finishes_run: true,
        fence: start.record.fence,
    }];
    let first = store.record(&batch).await.unwrap();
    assert_eq!(first.results.len(), 1);
    // The writer saw an error (the reply was lost) and tries the same batch.
    let again = store.record(&batch).await.unwrap();
    assert!(again.results.is_empty(), "nothing appended twice");
    let held = store.results_after(None, &[], 10).await.unwrap();
    assert_eq!(held.len(), 1);
    let task = store.get_task(&armed.id).await.unwrap().unwrap();
    assert_eq!(task.active_runs, 0);
    test.delete_keys().await;
}

#[tokio::test]
async fn an_emptied_store_answers_unavailable_until_restored_never_not_found() {
    let prefix = random_prefix();
    let test = TestStore::open_with(prefix.clone(), settings_short_lease(&prefix, roomy())).await;
    let store = &test.store;
    // Not alone: another replica runs on the store (draining: it owns no
    // shard, so this one keeps them all).
    let other = TestStore::open_with(prefix.clone(), settings_short_lease(&prefix, roomy())).await;
    other.store.lease(LeaseMode::Draining).await.unwrap();
    store.lease(LeaseMode::Member).await.unwrap();
    let task = insert(store, "kept", OverlapPolicy::Skip).await;
    test.delete_keys().await;
    // A firing now must not find "no such task" (it would drop the timer).
    assert!(matches!(
        store.get_task(&task.id).await,
        Err(StoreError::Unavailable { .. })
    ));
    assert!(matches!(
        store.fire(vec![firing(&task, false)]).await,
        Err(StoreError::Unavailable { .. })
    ));
    assert!(matches!(
        store.check().await.unwrap(),
        Checked::Restored { tasks: 1, .. }
    ));
    // The leases went with the rest, and for one lease none is taken and
    // nothing but a write-back is written, so every replica can write back
    // what it holds first: a firing meanwhile is refused (the task is armed
    // again by the gain of the lease step that takes the shard), and so is
    // a result.
    store.lease(LeaseMode::Member).await.unwrap();
    assert!(!store.owns(&task.id), "no shard taken at once");
    let recording = Recording {
        result: result("kept", 9, 1),
        finishes_run: false,
        fence: 0,
    };
    assert!(matches!(
        store.record(std::slice::from_ref(&recording)).await,
        Err(StoreError::Unavailable { .. })
    ));
    assert!(matches!(
        fire_one(store, firing(&task, true)).await,
        Fired::Stale
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !store.owns(&task.id) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shard is taken after a lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.lease(LeaseMode::Member).await.unwrap();
    }
    // The retry of that firing applies then.
    assert!(matches!(
        fire_one(store, firing(&task, true)).await,
        Fired::Done(_)
    ));
    test.delete_keys().await;
}

#[tokio::test]
async fn a_buffered_run_promoted_by_a_batch_whose_reply_was_lost_is_handed_out_again() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    let armed = insert(store, "buffered", OverlapPolicy::BufferOne).await;
    let Fired::Done(first) = fire_one(store, firing(&armed, false)).await else {
        panic!("fires");
    };
    let Dispatch::Start(run1) = first.dispatch else {
        panic!("run 1");
    };
    store.start_runs(std::slice::from_ref(&run1)).await.unwrap();
    let Fired::Done(second) = fire_one(store, firing(&first.task, false)).await else {
        panic!("fires");
    };
    assert!(matches!(second.dispatch, Dispatch::Buffered));
    let batch = [Recording {
        result: result("buffered", 1, 1),
        finishes_run: true,
        fence: run1.record.fence,
    }];
    let promoted =
        |r: &recur::store::Recorded| r.promoted.iter().map(|p| p.record.run).collect::<Vec<_>>();
    let applied = store.record(&batch).await.unwrap();
    assert_eq!(promoted(&applied), [2]);
    // That reply was lost: the retry still hands run 2 out, once.
    let again = store.record(&batch).await.unwrap();
    assert!(again.results.is_empty());
    assert_eq!(promoted(&again), [2]);
    test.delete_keys().await;
}

#[tokio::test]
async fn deleting_a_task_frees_its_results_bytes() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    let gone = insert(store, "gone", OverlapPolicy::Skip).await;
    for run in 1..=3 {
        append(store, result("gone", run, 100)).await;
    }
    append(store, result("kept", 1, 7)).await;
    let mut conn = connect(SHARED_URL).await;
    let meta = format!("{}{{log}}:meta", test.prefix);
    let bytes = |conn: &mut redis::aio::MultiplexedConnection| {
        let meta = meta.clone();
        let mut conn = conn.clone();
        async move {
            let held: u64 = conn.hget(&meta, "bytes").await.unwrap();
            held
        }
    };
    assert_eq!(bytes(&mut conn).await, 307);
    let halted = store
        .halt(
            &gone.id,
            Halt::Cancel {
                reason: String::new(),
                call: "c1".into(),
            },
            t(2),
        )
        .await
        .unwrap();
    let Halted::Done { task, .. } = halted else {
        panic!("cancelled")
    };
    store.delete_task(&gone.id, task.version).await.unwrap();
    assert_eq!(bytes(&mut conn).await, 7, "only what is still held counts");
    let held = store.results_after(None, &[], 10).await.unwrap();
    assert_eq!(held.len(), 1);
    test.delete_keys().await;
}

#[tokio::test]
async fn a_trigger_tried_again_is_one_run_and_its_queued_run_can_be_found() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    let task = insert(store, "manual", OverlapPolicy::Allow).await;
    let occurrence = "manual@2030-01-01T00:00:00.000Z~abcdef012345".to_string();
    let run = |t: recur::store::Triggered| match t {
        recur::store::Triggered::Done(fire) => match fire.dispatch {
            Dispatch::Start(start) => (fire.task.run_count, start.record.run),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    let first = run(store
        .trigger(&task.id, occurrence.clone(), t(1))
        .await
        .unwrap());
    // Its reply was lost; the same call again is the same run.
    let again = run(store
        .trigger(&task.id, occurrence.clone(), t(1))
        .await
        .unwrap());
    assert_eq!(first, (1, 1));
    assert_eq!(again, (1, 1), "no second run");
    let applied = store.applied_trigger(&task.id, &occurrence).await.unwrap();
    assert!(matches!(
        applied.map(|f| f.dispatch),
        Some(Dispatch::Start(s)) if s.record.run == 1
    ));
    assert!(
        store
            .applied_trigger(&task.id, "manual@other")
            .await
            .unwrap()
            .is_none()
    );
    test.delete_keys().await;
}

#[tokio::test]
async fn a_trigger_whose_reply_was_lost_still_has_the_runs_it_dropped_recorded() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    let armed = insert(store, "dropper", OverlapPolicy::CancelRunning).await;
    // A slot's run waits in the queue; a trigger drops it (CANCEL_RUNNING),
    // and its reply is lost: the follow-up still gets the dropped run, whose
    // CANCELLED result the task owes, and the trigger's own run.
    let Fired::Done(_) = fire_one(store, firing(&armed, false)).await else {
        panic!("fires");
    };
    let occurrence = "dropper@manual".to_string();
    let Triggered::Done(_) = store
        .trigger(&armed.id, occurrence.clone(), t(2))
        .await
        .unwrap()
    else {
        panic!("triggered");
    };
    let applied = store
        .applied_trigger(&armed.id, &occurrence)
        .await
        .unwrap()
        .expect("it applied");
    assert_eq!(
        applied.dropped.iter().map(|r| r.run).collect::<Vec<_>>(),
        [1]
    );
    assert!(matches!(applied.dispatch, Dispatch::Start(ref s) if s.record.run == 2));
    // Recorded, the dropped run's result settles what the task owed.
    let recorded = store
        .record(&[Recording {
            result: TaskResult {
                outcome: Outcome::Cancelled,
                ..result("dropper", 1, 0)
            },
            finishes_run: false,
            fence: 0,
        }])
        .await
        .unwrap();
    assert_eq!(recorded.results.len(), 1);
    let task = store.get_task(&armed.id).await.unwrap().unwrap();
    assert_eq!(task.active_runs, 1, "only run 2, queued");
    test.delete_keys().await;
}

/// A store decides its steps from the state it holds, but a task changed
/// by another writer meanwhile (here a second store on the same keys, as a
/// replica would be) is read again, never overwritten from the old state.
#[tokio::test]
async fn a_step_from_a_held_state_another_writer_changed_is_decided_again() {
    let test = TestStore::open(roomy()).await;
    let other = TestStore::open_at(test.prefix.clone(), roomy()).await;
    let armed = insert(&test.store, "held", OverlapPolicy::Allow).await;
    let Fired::Done(first) = fire_one(&test.store, firing(&armed, false)).await else {
        panic!("fires");
    };
    // Paused behind the first store's back.
    let paused = other
        .store
        .halt(
            &armed.id,
            Halt::Pause {
                reason: "elsewhere".into(),
                call: "p1".into(),
            },
            t(2),
        )
        .await
        .unwrap();
    assert!(matches!(paused, Halted::Done { .. }), "{paused:?}");
    // The first store still holds the task active at its second slot: its
    // firing loses the compare-and-set, reads the pause, and does not run.
    let fired = fire_one(&test.store, firing(&first.task, false)).await;
    assert!(matches!(fired, Fired::Stale), "{fired:?}");
    let view = test.store.get_task(&armed.id).await.unwrap().unwrap();
    assert_eq!(view.state, recur::task::TaskState::Paused);
    assert_eq!(view.run_count, 1, "the second slot did not run");
    test.delete_keys().await;
}

/// Answers built from the state a store holds (here a firing's view of its
/// task) carry the last result with the cursor the log gave it.
#[tokio::test]
async fn answers_from_the_held_state_carry_the_last_results_cursor() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    let armed = insert(store, "cursor", OverlapPolicy::Allow).await;
    let (first, run) = first_run(store, &armed).await;
    let recorded = store
        .record(&[Recording {
            result: result("cursor", run.record.run, 3),
            finishes_run: true,
            fence: run.record.fence,
        }])
        .await
        .unwrap();
    let Fired::Done(second) = fire_one(store, firing(&first, false)).await else {
        panic!("fires again");
    };
    let last = second.task.last_result.expect("a last result");
    assert!(!last.cursor.is_empty());
    assert_eq!(last.cursor, recorded.results[0].cursor);
    test.delete_keys().await;
}

/// Two registrations with one request id at once (a client's retry racing
/// its first try) make one task, and the other gets that task: the task
/// and its request id are written by one script.
#[tokio::test]
async fn one_request_id_registered_twice_at_once_makes_one_task() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    let (a, b) = tokio::join!(
        store.insert_task(record("req-a", OverlapPolicy::Allow), Some("r-1")),
        store.insert_task(record("req-b", OverlapPolicy::Allow), Some("r-1")),
    );
    let created: Vec<&TaskRecord> = [&a, &b]
        .into_iter()
        .filter_map(|r| match r {
            Ok(Inserted::Created(task)) => Some(task),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "{a:?} {b:?}");
    for answer in [&a, &b] {
        match answer {
            Ok(Inserted::Created(_)) => {}
            Ok(Inserted::SameRequest(task)) => assert_eq!(task.id, created[0].id),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(store.count_tasks().await.unwrap(), 1);
    // Once written, a retry is answered with it.
    match store
        .insert_task(record("req-c", OverlapPolicy::Allow), Some("r-1"))
        .await
        .unwrap()
    {
        Inserted::SameRequest(task) => assert_eq!(task.id, created[0].id),
        other => panic!("{other:?}"),
    }
    test.delete_keys().await;
}

/// A request id left naming a task that is gone (a delete stopped between
/// the task and its request id) does not block the id for good: the next
/// registration with it clears it and creates.
#[tokio::test]
async fn a_request_id_naming_a_task_that_is_gone_is_reused() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    insert_requested(store, "req-old", OverlapPolicy::Allow, Some("r-stale")).await;
    let mut conn = connect(SHARED_URL).await;
    let hashes = test.keys_ending(":task:req-old").await;
    assert_eq!(hashes.len(), 1, "{hashes:?}");
    let _: () = conn.del(&hashes).await.expect("DEL");

    match store
        .insert_task(record("req-new", OverlapPolicy::Allow), Some("r-stale"))
        .await
        .unwrap()
    {
        Inserted::Created(task) => assert_eq!(task.id.as_str(), "req-new"),
        other => panic!("{other:?}"),
    }
    match store
        .insert_task(record("req-other", OverlapPolicy::Allow), Some("r-stale"))
        .await
        .unwrap()
    {
        Inserted::SameRequest(task) => assert_eq!(task.id.as_str(), "req-new"),
        other => panic!("{other:?}"),
    }
    test.delete_keys().await;
}

/// Deleting a task clears its request id only while the id still names it:
/// a registration that found the id naming the task already gone may have
/// taken it over in between, and keeps it.
#[tokio::test]
async fn deleting_a_task_leaves_a_request_id_that_names_another() {
    let test = TestStore::open(roomy()).await;
    let store = &test.store;
    let task = insert_requested(store, "req-del", OverlapPolicy::Allow, Some("r-del")).await;
    let mut conn = connect(SHARED_URL).await;
    let keys = test.keys_ending(":req:r-del").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    // Taken over by a later registration, between the delete's steps.
    let _: () = conn.set(&keys[0], "req-later").await.expect("SET");
    store.delete_task(&task.id, task.version).await.unwrap();
    let named: Option<String> = conn.get(&keys[0]).await.expect("GET");
    assert_eq!(named.as_deref(), Some("req-later"));

    // Its own request id is cleared with it.
    let own = insert_requested(store, "req-own", OverlapPolicy::Allow, Some("r-own")).await;
    store.delete_task(&own.id, own.version).await.unwrap();
    let left = test.keys_ending(":req:r-own").await;
    assert!(left.is_empty(), "{left:?}");
    test.delete_keys().await;
}

#[tokio::test]
async fn replicas_writing_back_an_emptied_store_keep_the_newest_state_and_deletes() {
    let a = TestStore::open(roomy()).await;
    let b = TestStore::open_at(a.prefix.clone(), roomy()).await;
    // b reads both tasks, then a moves them on: b holds older states.
    let armed = insert(&a.store, "newest", OverlapPolicy::Allow).await;
    let gone = insert(&a.store, "gone", OverlapPolicy::Skip).await;
    b.store
        .get_task(&armed.id)
        .await
        .unwrap()
        .expect("read by b");
    b.store
        .get_task(&gone.id)
        .await
        .unwrap()
        .expect("read by b");
    let mut task = armed;
    for _ in 0..2 {
        let Fired::Done(fire) = fire_one(&a.store, firing(&task, false)).await else {
            panic!("fires");
        };
        task = fire.task;
    }
    let Halted::Done {
        task: cancelled, ..
    } = a
        .store
        .halt(
            &gone.id,
            Halt::Cancel {
                reason: "test".into(),
                call: "c1".into(),
            },
            t(5),
        )
        .await
        .unwrap()
    else {
        panic!("cancelled");
    };
    a.store
        .delete_task(&gone.id, cancelled.version)
        .await
        .unwrap();

    // Emptied twice, written back in both orders: the older holder first,
    // then the newer, and the other way round.
    for (first, second) in [(&b, &a), (&a, &b)] {
        a.delete_keys().await;
        assert!(matches!(
            first.store.check().await.unwrap(),
            Checked::Restored { .. }
        ));
        assert!(matches!(
            second.store.check().await.unwrap(),
            Checked::Restored { .. }
        ));
        for reader in [&a, &b] {
            let back = reader
                .store
                .get_task(&task.id)
                .await
                .unwrap()
                .expect("restored");
            assert_eq!(
                (back.version, back.run_count),
                (task.version, 2),
                "the newest state"
            );
            assert!(
                reader.store.get_task(&gone.id).await.unwrap().is_none(),
                "a deleted task stays deleted"
            );
        }
    }
    a.delete_keys().await;
}

#[tokio::test]
async fn a_run_buffered_behind_one_given_up_is_promoted() {
    let a = TestStore::open(roomy()).await;
    let b = TestStore::open_at(a.prefix.clone(), roomy()).await;
    let armed = insert(&a.store, "buffer", OverlapPolicy::BufferOne).await;
    // A manual run going on b, then a slot fired by a buffered behind it.
    let Triggered::Done(manual) = b
        .store
        .trigger(&armed.id, "buffer@manual".into(), t(1))
        .await
        .unwrap()
    else {
        panic!("triggered");
    };
    let Dispatch::Start(run1) = manual.dispatch else {
        panic!("run 1");
    };
    assert_eq!(
        b.store
            .start_runs(std::slice::from_ref(&run1))
            .await
            .unwrap(),
        [true]
    );
    let Fired::Done(slot) = fire_one(&a.store, firing(&manual.task, false)).await else {
        panic!("fires");
    };
    assert!(matches!(slot.dispatch, Dispatch::Buffered));
    // b is gone: a gives its run up, and starts the buffered one.
    b.store.lease(LeaseMode::Leave).await.unwrap();
    a.store.lease(LeaseMode::Member).await.unwrap();
    let abandoned = a
        .store
        .abandon_runs(std::slice::from_ref(&armed.id))
        .await
        .unwrap();
    assert_eq!(
        abandoned[0].runs.iter().map(|r| r.run).collect::<Vec<_>>(),
        [1]
    );
    let promoted = abandoned[0]
        .promoted
        .as_ref()
        .expect("the buffered run goes");
    assert_eq!(promoted.record.run, 2);
    assert_eq!(
        a.store
            .start_runs(std::slice::from_ref(promoted))
            .await
            .unwrap(),
        [true]
    );
    a.delete_keys().await;
}

#[tokio::test]
async fn a_firing_retried_after_its_shard_moved_still_hands_out_its_run() {
    let a = TestStore::open(roomy()).await;
    let armed = insert(&a.store, "moved", OverlapPolicy::Skip).await;
    // The firing applied; say its reply was lost.
    let Fired::Done(_) = fire_one(&a.store, firing(&armed, false)).await else {
        panic!("fires");
    };
    // Meanwhile the shard left this replica.
    a.store.lease(LeaseMode::Draining).await.unwrap();
    assert!(!a.store.owns(&armed.id));
    // The retry is answered from the applied step: the run it dispatched is
    // handed out, not left claimed and never started.
    let Fired::Done(replayed) = fire_one(&a.store, firing(&armed, true)).await else {
        panic!("the retry is answered as the firing was");
    };
    let Dispatch::Start(run) = replayed.dispatch else {
        panic!("its run");
    };
    assert_eq!(run.record.run, 1);
    // A new firing of the shard is refused.
    let next = replayed.task;
    assert!(matches!(
        fire_one(&a.store, firing(&next, false)).await,
        Fired::Stale
    ));
    a.delete_keys().await;
}

#[tokio::test]
async fn results_owed_by_a_replica_that_is_gone_are_lost_and_no_others() {
    let a = TestStore::open(roomy()).await;
    let b = TestStore::open_at(a.prefix.clone(), roomy()).await;
    let armed = insert(&a.store, "owed", OverlapPolicy::CancelRunning).await;
    // a fires slot 1 (run 1 queued); b's trigger drops it (b owes its
    // CANCELLED result); a's slot 2 drops b's manual run (a owes that one).
    let Fired::Done(_) = fire_one(&a.store, firing(&armed, false)).await else {
        panic!("fires");
    };
    let Triggered::Done(manual) = b
        .store
        .trigger(&armed.id, "owed@manual".into(), t(2))
        .await
        .unwrap()
    else {
        panic!("triggered");
    };
    assert_eq!(
        manual.dropped.iter().map(|r| r.run).collect::<Vec<_>>(),
        [1]
    );
    let Fired::Done(second) = fire_one(&a.store, firing(&manual.task, false)).await else {
        panic!("fires");
    };
    assert_eq!(
        second.dropped.iter().map(|r| r.run).collect::<Vec<_>>(),
        [2]
    );
    // b is gone before recording what it owed: that is lost, a's is not.
    b.store.lease(LeaseMode::Leave).await.unwrap();
    a.store.lease(LeaseMode::Member).await.unwrap();
    let abandoned = a
        .store
        .abandon_runs(std::slice::from_ref(&armed.id))
        .await
        .unwrap();
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0].lost_results, 1, "b's result only");
    assert!(abandoned[0].runs.is_empty(), "run 3 is a's, going on");
    let task = a.store.get_task(&armed.id).await.unwrap().unwrap();
    assert_eq!(task.active_runs, 2, "run 3, and the result a owes");
    a.delete_keys().await;
}

#[tokio::test]
async fn a_replay_of_another_replicas_firing_starts_and_records_nothing() {
    let a = TestStore::open(roomy()).await;
    let b = TestStore::open_at(a.prefix.clone(), roomy()).await;
    let armed = insert(&a.store, "replayed", OverlapPolicy::Skip).await;
    // a fires the slot, two missed ones passed over; say its reply was
    // lost, and b, which had armed the same slot, retries it too.
    let firing = Firing {
        passed: 2,
        ..firing(&armed, false)
    };
    let Fired::Done(first) = fire_one(&a.store, firing.clone()).await else {
        panic!("fires");
    };
    assert_eq!(first.passed, 2);
    let retry = Firing {
        retry: true,
        ..firing
    };
    let Fired::Done(on_b) = fire_one(&b.store, retry.clone()).await else {
        panic!("answered as the firing was");
    };
    assert!(matches!(on_b.dispatch, Dispatch::None), "b starts nothing");
    assert_eq!(on_b.passed, 0, "and records no catch-up result");
    // a's own retry gets its run and its result to record.
    let Fired::Done(on_a) = fire_one(&a.store, retry).await else {
        panic!("answered as the firing was");
    };
    assert!(matches!(on_a.dispatch, Dispatch::Start(ref s) if s.record.run == 1));
    assert_eq!(on_a.passed, 2);
    a.delete_keys().await;
}
