//! The engine under faults and load shapes, driven directly on tokio's
//! paused clock: a store that fails (before or after applying), a handler
//! that panics, cancel racing a finishing run, the cap of runs in flight,
//! and runs dropped while they wait for a slot. Each test is a regression
//! test of a defect found in review.

mod engine_harness;

use std::sync::atomic::AtomicU32;

use chrono::DateTime;
use engine_harness::*;
use recur::store::{
    Abandoned, Fired, Firing, Halt, Halted, Inserted, MAX_ALLOW_RUNS_PER_TASK, Recorded, Recording,
    RunStart, StoreError, TaskFilter, Triggered,
};

/// When a [`FlakyStore`] call fails.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Refuses the call: nothing applied.
    Before,
    /// Applies the call, then reports an error (a reply lost on the way).
    After,
}

/// A memory store whose n-th `fire` (or `halt`) call fails as told.
struct FlakyStore {
    inner: Arc<dyn Store>,
    fire_calls: AtomicU32,
    fail_fire: Option<(u32, Fault)>,
    halt_calls: AtomicU32,
    fail_halt: Option<u32>,
    /// Every listing fails (start-up reads the store through it).
    fail_list: bool,
}

impl FlakyStore {
    fn new(fail_fire: Option<(u32, Fault)>, fail_halt: Option<u32>) -> Arc<FlakyStore> {
        Arc::new(FlakyStore {
            inner: memory_store(),
            fire_calls: AtomicU32::new(0),
            fail_fire,
            halt_calls: AtomicU32::new(0),
            fail_halt,
            fail_list: false,
        })
    }
}

fn unavailable() -> StoreError {
    StoreError::Unavailable {
        reason: "injected fault".into(),
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn insert_task(
        &self,
        record: TaskRecord,
        request_id: Option<&str>,
    ) -> Result<Inserted, StoreError> {
        self.inner.insert_task(record, request_id).await
    }
    async fn task_for_request(&self, request_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.inner.task_for_request(request_id).await
    }
    async fn get_task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.inner.get_task(id).await
    }
    async fn update_task(&self, record: TaskRecord) -> Result<TaskRecord, StoreError> {
        self.inner.update_task(record).await
    }
    async fn delete_task(&self, id: &TaskId, version: u64) -> Result<(), StoreError> {
        self.inner.delete_task(id, version).await
    }
    async fn list_tasks(
        &self,
        after: Option<&TaskId>,
        limit: usize,
        filter: &TaskFilter,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        if self.fail_list {
            return Err(unavailable());
        }
        self.inner.list_tasks(after, limit, filter).await
    }
    async fn count_tasks(&self) -> Result<usize, StoreError> {
        self.inner.count_tasks().await
    }
    async fn count_tasks_in(&self, prefix: &str) -> Result<usize, StoreError> {
        self.inner.count_tasks_in(prefix).await
    }
    async fn fingerprint_key(&self, candidate: [u8; 32]) -> Result<Vec<u8>, StoreError> {
        self.inner.fingerprint_key(candidate).await
    }
    async fn fire(&self, batch: Vec<Firing>) -> Result<Vec<Fired>, StoreError> {
        let call = self.fire_calls.fetch_add(1, Ordering::SeqCst) + 1;
        match self.fail_fire {
            Some((n, Fault::Before)) if n == call => Err(unavailable()),
            Some((n, Fault::After)) if n == call => {
                self.inner.fire(batch).await?;
                Err(unavailable())
            }
            _ => self.inner.fire(batch).await,
        }
    }
    async fn trigger(
        &self,
        id: &TaskId,
        occurrence_id: String,
        now: DateTime<Utc>,
    ) -> Result<Triggered, StoreError> {
        self.inner.trigger(id, occurrence_id, now).await
    }
    async fn halt(
        &self,
        id: &TaskId,
        halt: Halt,
        now: DateTime<Utc>,
    ) -> Result<Halted, StoreError> {
        let call = self.halt_calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_halt == Some(call) {
            return Err(unavailable());
        }
        self.inner.halt(id, halt, now).await
    }
    async fn halt_dropped(
        &self,
        id: &TaskId,
        call: &str,
    ) -> Result<Option<(Vec<recur::store::RunRecord>, bool)>, StoreError> {
        self.inner.halt_dropped(id, call).await
    }
    async fn applied_trigger(
        &self,
        id: &TaskId,
        occurrence_id: &str,
    ) -> Result<Option<recur::store::Fire>, StoreError> {
        self.inner.applied_trigger(id, occurrence_id).await
    }
    async fn abandon_runs(&self, ids: &[TaskId]) -> Result<Vec<Abandoned>, StoreError> {
        self.inner.abandon_runs(ids).await
    }
    async fn start_runs(&self, runs: &[RunStart]) -> Result<Vec<bool>, StoreError> {
        self.inner.start_runs(runs).await
    }
    async fn record(&self, batch: &[Recording]) -> Result<Recorded, StoreError> {
        self.inner.record(batch).await
    }
    async fn results_after(
        &self,
        after: Option<&str>,
        tasks: &[TaskId],
        limit: usize,
    ) -> Result<Vec<Arc<TaskResult>>, StoreError> {
        self.inner.results_after(after, tasks, limit).await
    }
    async fn head_cursor(&self) -> Result<String, StoreError> {
        self.inner.head_cursor().await
    }
    fn cursor_seq(&self, cursor: &str) -> Option<u64> {
        self.inner.cursor_seq(cursor)
    }
}

/// The (run, slot, outcome) of each result, for compact assertions.
fn runs_of(results: &[Arc<TaskResult>]) -> Vec<(u64, DateTime<Utc>, Outcome)> {
    results
        .iter()
        .map(|r| (r.run, r.scheduled_at, r.outcome))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_firing_the_store_refuses_is_retried_and_loses_no_slot() {
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let store = FlakyStore::new(Some((1, Fault::Before)), None);
    let mut h = Harness::start_with(&[("probe", &probe)], store, 1000).await;
    let task = h.register("refused", spec("probe", secs(10))).await;
    let slot = |n: i64| task.created_at + ms(10_000 * n);

    let results = h.results(2).await;
    assert_eq!(
        runs_of(&results),
        vec![
            (1, slot(1), Outcome::Succeeded),
            (2, slot(2), Outcome::Succeeded)
        ]
    );
    let calls = probe.calls();
    assert_eq!(
        calls[0].started,
        h.at(secs(11)),
        "the refused slot ran after the retry delay"
    );
    assert_eq!(calls[1].started, h.at(secs(20)), "then on the grid again");
    let after = h.get("refused").await;
    assert_eq!((after.run_count, after.skipped_count), (2, 0));
    assert_eq!(after.next_run_at, Some(slot(3)));
}

#[tokio::test(start_paused = true)]
async fn a_firing_applied_but_reported_failed_runs_once_and_keeps_firing() {
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let store = FlakyStore::new(Some((1, Fault::After)), None);
    let mut h = Harness::start_with(&[("probe", &probe)], store, 1000).await;
    let task = h.register("lost-reply", spec("probe", secs(10))).await;
    let slot = |n: i64| task.created_at + ms(10_000 * n);

    let results = h.results(3).await;
    assert_eq!(
        runs_of(&results),
        vec![
            (1, slot(1), Outcome::Succeeded),
            (2, slot(2), Outcome::Succeeded),
            (3, slot(3), Outcome::Succeeded),
        ],
        "the slot whose reply was lost ran once, and no later slot was lost"
    );
    assert_eq!(probe.calls().len(), 3);
    assert_eq!(h.get("lost-reply").await.skipped_count, 0);
}

#[tokio::test(start_paused = true)]
async fn a_slot_a_store_outage_delayed_is_passed_over_under_a_zero_catchup_window() {
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let store = FlakyStore::new(Some((1, Fault::Before)), None);
    let mut h = Harness::start_with(&[("probe", &probe)], store, 1000).await;
    let mut spec = spec("probe", secs(10));
    spec.catchup_window = Some(Duration::ZERO);
    let task = h.register("outage", spec).await;
    let slot = |n: i64| task.created_at + ms(10_000 * n);

    // The retry a second later finds slot 1 late: missed, not run.
    let passed = h.next_result().await;
    assert_eq!(
        (passed.run, passed.outcome, passed.skipped_slots),
        (0, Outcome::Skipped, 1)
    );
    assert_eq!(passed.scheduled_at, slot(1));
    assert_eq!(passed.finished_at, slot(1) + ms(1000));
    let next = h.next_result().await;
    assert_eq!(runs_of(&[next]), vec![(1, slot(2), Outcome::Succeeded)]);
    assert_eq!(probe.calls()[0].started, h.at(secs(20)));
    let after = h.get("outage").await;
    assert_eq!((after.run_count, after.skipped_count), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_retried_firing_keeps_the_catch_up_decision_that_was_applied() {
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let store = FlakyStore::new(Some((1, Fault::After)), None);
    let mut h = Harness::start_with(&[("probe", &probe)], store, 1000).await;
    let mut spec = spec("probe", secs(10));
    spec.catchup_window = Some(Duration::ZERO);
    let task = h.register("replayed", spec).await;
    let slot = |n: i64| task.created_at + ms(10_000 * n);

    // Slot 1 was applied on time (its run dispatched) and the reply lost;
    // the retry, planned a second late, would pass it over, but gets the
    // applied answer: the run goes ahead and nothing is reported skipped.
    let results = h.results(2).await;
    assert_eq!(
        runs_of(&results),
        vec![
            (1, slot(1), Outcome::Succeeded),
            (2, slot(2), Outcome::Succeeded)
        ]
    );
    assert_eq!(h.get("replayed").await.skipped_count, 0);
}

#[tokio::test(start_paused = true)]
async fn a_pause_the_store_refuses_changes_nothing() {
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let store = FlakyStore::new(None, Some(1));
    let mut h = Harness::start_with(&[("probe", &probe)], store, 1000).await;
    let task = h.register("stubborn", spec("probe", secs(1))).await;

    tokio::time::sleep(millis(1500)).await;
    let refused = h.scheduler.pause(&task.id, String::new()).await;
    assert!(
        matches!(refused, Err(Error::Store(StoreError::Unavailable { .. }))),
        "{refused:?}"
    );
    let still = h.get("stubborn").await;
    assert_eq!(still.state, TaskState::Active);
    // Still armed: it goes on firing.
    let results = h.results(3).await;
    assert_eq!(
        results.iter().map(|r| r.run).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let paused = h
        .scheduler
        .pause(&task.id, String::new())
        .await
        .expect("pause");
    assert_eq!(paused.state, TaskState::Paused);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_fails_its_run_and_the_task_goes_on() {
    let probe = Probe::new(Behaviour::Panic);
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let task = h.register("buggy", spec("probe", secs(1))).await;

    let results = h.results(3).await;
    for (n, result) in results.iter().enumerate() {
        assert_eq!(result.run, n as u64 + 1, "every slot ran, none skipped");
        assert_eq!(result.outcome, Outcome::Failed);
        assert!(
            result.error.contains("handler panicked"),
            "{}",
            result.error
        );
    }
    h.scheduler
        .cancel(&task.id, String::new())
        .await
        .expect("cancel");
    loop {
        if let Event::TaskEnded(ended) = h.next_event().await {
            assert_eq!(ended, task.id);
            break;
        }
    }
    h.scheduler.delete(&task.id).await.expect("delete");
}

#[tokio::test(start_paused = true)]
async fn cancel_racing_a_finishing_run_ends_the_task_once_after_its_result() {
    // Cancel lands just before, exactly at, and just after the instant the
    // run finishes; in every case the run's result comes first, then one end.
    for (i, offset_ms) in [999u64, 1000, 1001].into_iter().enumerate() {
        let probe = Probe::new(Behaviour::Sleep(secs(1)));
        let mut h = Harness::start(&[("probe", &probe)]).await;
        let name = format!("race-{i}");
        let task = h.register(&name, spec("probe", secs(10))).await;
        tokio::time::sleep_until(h.at(secs(10) + millis(offset_ms))).await;
        h.scheduler
            .cancel(&task.id, String::new())
            .await
            .expect("cancel");
        match h.next_event().await {
            Event::Result(result) => assert_eq!(result.run, 1, "at {offset_ms} ms"),
            other => panic!("at {offset_ms} ms the end came first: {other:?}"),
        }
        match h.next_event().await {
            Event::TaskEnded(ended) => assert_eq!(ended, task.id),
            other => panic!("at {offset_ms} ms expected the end, got {other:?}"),
        }
        h.assert_quiet_for(secs(30)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn two_manual_runs_in_one_instant_have_distinct_occurrence_ids() {
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let mut allow = spec("probe", secs(3600));
    allow.overlap = OverlapPolicy::Allow;
    let task = h.register("twice", allow).await;
    h.scheduler.trigger(&task.id).await.expect("first");
    h.scheduler.trigger(&task.id).await.expect("second");
    let results = h.results(2).await;
    assert_eq!(results[0].scheduled_at, results[1].scheduled_at);
    assert_ne!(results[0].occurrence_id, results[1].occurrence_id);
    let calls = probe.calls();
    assert_ne!(calls[0].occurrence_id, calls[1].occurrence_id);
}

#[tokio::test(start_paused = true)]
async fn runs_beyond_the_cap_wait_and_their_start_shows_the_wait() {
    let probe = Probe::new(Behaviour::Sleep(secs(1)));
    let mut h = Harness::start_with(&[("probe", &probe)], memory_store(), 2).await;
    for i in 0..5 {
        h.register(&format!("capped-{i}"), spec("probe", secs(60)))
            .await;
    }
    let results = h.results(5).await;
    assert_eq!(probe.max_in_flight(), 2, "never more than the cap at once");
    let mut waits: Vec<i64> = results
        .iter()
        .map(|r| (r.started_at.expect("started") - r.scheduled_at).num_milliseconds())
        .collect();
    waits.sort_unstable();
    assert_eq!(waits, vec![0, 0, 1000, 1000, 2000]);
}

#[tokio::test(start_paused = true)]
async fn pause_and_cancel_drop_runs_still_waiting_for_a_slot() {
    let hog = Probe::new(Behaviour::Sleep(secs(30)));
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let mut h = Harness::start_with(&[("hog", &hog), ("probe", &probe)], memory_store(), 1).await;
    // Due together, fired in the order armed: the hog takes the only slot.
    h.register("a-hog", spec("hog", secs(3600))).await;
    let paused = h.register("b-paused", spec("probe", secs(3600))).await;
    let cancelled = h.register("c-cancelled", spec("probe", secs(3600))).await;

    // At 3601 s the hog holds the only slot and both others wait behind it.
    tokio::time::sleep(secs(3601)).await;
    let task = h
        .scheduler
        .pause(&paused.id, String::new())
        .await
        .expect("pause");
    assert_eq!((task.scheduled_run_count, task.skipped_count), (0, 1));
    h.scheduler
        .cancel(&cancelled.id, String::new())
        .await
        .expect("cancel");
    let mut dropped: Vec<_> = h
        .results(2)
        .await
        .iter()
        .map(|r| (r.task_id.to_string(), r.run, r.outcome, r.started_at))
        .collect();
    dropped.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        dropped,
        vec![
            ("b-paused".into(), 1, Outcome::Skipped, None),
            ("c-cancelled".into(), 1, Outcome::Cancelled, None),
        ]
    );
    match h.next_event().await {
        Event::TaskEnded(ended) => assert_eq!(ended, cancelled.id),
        other => panic!("expected the cancelled task to end, got {other:?}"),
    }
    let hog_result = h.next_result().await;
    assert_eq!(hog_result.task_id.as_str(), "a-hog");
    h.assert_quiet_for(secs(10)).await;
    assert!(probe.calls().is_empty(), "neither dropped run started");
}

#[tokio::test(start_paused = true)]
async fn allow_is_capped_per_task() {
    let probe = Probe::new(Behaviour::UntilCancelled);
    let h = Harness::start(&[("probe", &probe)]).await;
    let mut allow = spec("probe", secs(1));
    allow.overlap = OverlapPolicy::Allow;
    let task = h.register("greedy", allow).await;
    let slots = MAX_ALLOW_RUNS_PER_TASK as u64 + 4;
    tokio::time::sleep(secs(slots) + millis(500)).await;
    assert_eq!(probe.max_in_flight(), MAX_ALLOW_RUNS_PER_TASK);
    let after = h.get("greedy").await;
    assert_eq!(after.run_count, MAX_ALLOW_RUNS_PER_TASK as u64);
    assert_eq!(after.skipped_count, 4);
    h.scheduler
        .cancel(&task.id, String::new())
        .await
        .expect("cancel");
}

#[tokio::test(start_paused = true)]
async fn retries_of_the_last_slot_stop_at_end_at() {
    let probe = Probe::new(Behaviour::FailFirst(u32::MAX));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let mut spec = spec_with(
        "probe",
        ScheduleInput {
            every: Some(secs(10)),
            end_at: Some(t0() + ms(13_500)),
            ..ScheduleInput::default()
        },
    );
    spec.retry = RetryPolicy {
        max_attempts: 10,
        initial_backoff: secs(1),
        max_backoff: secs(1),
    };
    let task = h.register("last", spec).await;

    // The only slot is at 10 s; retries at 11, 12 and 13 s, and the one at
    // 14 s would be past end_at.
    let result = h.next_result().await;
    assert_eq!(result.scheduled_at, task.created_at + ms(10_000));
    assert_eq!(result.attempts, 4);
    assert_eq!(result.finished_at, task.created_at + ms(13_000));
    match h.next_event().await {
        Event::TaskEnded(ended) => assert_eq!(ended, task.id),
        other => panic!("expected the end, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_start_that_fails_leaves_nothing_running() {
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let store = Arc::new(FlakyStore {
        fail_list: true,
        ..Arc::into_inner(FlakyStore::new(None, None)).expect("sole owner")
    });
    let handlers: HashMap<String, Arc<dyn TaskHandler>> =
        HashMap::from([("probe".to_string(), probe.clone() as Arc<dyn TaskHandler>)]);
    let scheduler = Scheduler::new(
        store,
        Actions::new(http_runner(), None, handlers, OUTPUT_CAP),
        Clock::tokio_at(t0()),
        SchedulerSettings {
            max_tasks: 10,
            terminal_retention: secs(86_400),
            subscriber_bound: 100,
            max_runs_in_flight: 10,
            store_check_interval: None,
            fire_ahead: None,
            executor: "engine-test".into(),
        },
        CancellationToken::new(),
    );
    let started = scheduler.start().await;
    assert!(
        matches!(started, Err(Error::Store(StoreError::Unavailable { .. }))),
        "{started:?}"
    );
    // No timer was left running: a task registered afterwards never fires.
    scheduler
        .register(Some(id("orphan")), spec("probe", secs(1)), None)
        .await
        .expect("registration still works");
    tokio::time::sleep(secs(10)).await;
    assert!(
        probe.calls().is_empty(),
        "something fired after a failed start"
    );
}

#[tokio::test(start_paused = true)]
async fn runs_cancel_running_drops_before_they_start_do_not_count_toward_max_runs() {
    let hog = Probe::new(Behaviour::Sleep(secs(30)));
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let mut h = Harness::start_with(&[("hog", &hog), ("probe", &probe)], memory_store(), 1).await;
    // The hog takes the only slot at 3600 s; the other task's runs, from
    // 3601 s, wait behind it.
    h.register("a-hog", spec("hog", secs(3600))).await;
    let mut spec = spec_with(
        "probe",
        ScheduleInput {
            every: Some(secs(1)),
            start_at: Some(t0() + ms(3_601_000)),
            max_runs: 2,
            ..ScheduleInput::default()
        },
    );
    spec.overlap = OverlapPolicy::CancelRunning;
    let task = h.register("b-cancel-running", spec).await;

    // At 3603.5 s: slot 3601 queued run 1 behind the hog, and each later
    // slot dropped the waiting run and queued its own.
    tokio::time::sleep(secs(3603) + millis(500)).await;
    let after = h.get("b-cancel-running").await;
    assert_eq!(
        after.state,
        TaskState::Active,
        "no run started, so max_runs is not reached"
    );
    assert_eq!(after.scheduled_run_count, 1, "only the waiting run counts");
    let dropped: Vec<_> = h
        .drain()
        .into_iter()
        .filter_map(|event| match event {
            Event::Result(r) if r.task_id == task.id => Some((r.run, r.outcome)),
            _ => None,
        })
        .collect();
    assert_eq!(
        dropped,
        vec![(1, Outcome::Cancelled), (2, Outcome::Cancelled)],
        "each displaced run got its result"
    );
    assert!(probe.calls().is_empty());
}
