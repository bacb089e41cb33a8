//! The scheduler's runner logic, driven directly (no gRPC, no sockets) on
//! tokio's paused clock: anchoring, overlap policies, retries, timeouts,
//! pause/resume, triggers, cancellation, max_runs, catch-up and shutdown.
//!
//! Every test runs under `start_paused = true` with `Clock::tokio_at`, so
//! wall time follows tokio time exactly: a slot fires at its instant, a
//! 300 ms handler ends 300 ms later, and time only moves when every task is
//! idle. Waits are bounded by [`WAIT`] of paused time, so a missing event
//! fails the test instead of hanging it.

mod engine_harness;

use engine_harness::*;

#[tokio::test(start_paused = true)]
async fn interval_slots_stay_anchored_without_drift() {
    let probe = Probe::new(Behaviour::Sleep(millis(300)));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let task = h.register("anchored", spec("probe", secs(1))).await;
    assert_eq!(task.created_at, t0());
    assert_eq!(task.next_run_at, Some(t0() + ms(1000)));

    const RUNS: u64 = 50;
    let results = h.results(RUNS as usize).await;
    for (n, result) in (1..=RUNS).zip(&results) {
        let slot = task.created_at + ms(1000 * n as i64);
        assert_eq!(result.run, n);
        assert_eq!(
            result.outcome,
            Outcome::Succeeded,
            "run {n}: {}",
            result.error
        );
        assert_eq!(result.trigger, Trigger::Scheduled);
        assert_eq!(result.attempts, 1);
        assert_eq!(result.scheduled_at, slot, "run {n} is on the grid");
        assert_eq!(result.started_at, Some(slot), "run {n} starts on its slot");
        assert_eq!(result.finished_at, slot + ms(300));
        assert_eq!(result.occurrence_id, occurrence_id(&task.id, slot));
        assert_eq!(result.output, Bytes::from(format!("run {n}")));
    }

    let calls = probe.calls();
    assert_eq!(calls.len(), RUNS as usize);
    for (n, call) in (1..=RUNS).zip(&calls) {
        let slot = task.created_at + ms(1000 * n as i64);
        assert_eq!(call.task_id, task.id);
        assert_eq!((call.run, call.attempt), (n, 1));
        assert_eq!(call.scheduled_at, slot);
        assert_eq!(call.occurrence_id, occurrence_id(&task.id, slot));
        assert_eq!(
            call.started,
            h.at(secs(n)),
            "start of run {n} does not creep"
        );
    }
    assert_eq!(probe.max_in_flight(), 1);

    let task = h.get("anchored").await;
    assert_eq!(task.run_count, RUNS);
    assert_eq!(task.scheduled_run_count, RUNS);
    assert_eq!(task.skipped_count, 0);
    assert_eq!(task.next_run_at, Some(t0() + ms(1000 * (RUNS as i64 + 1))));
    assert_eq!(task.last_result.as_ref().map(|r| r.run), Some(RUNS));
}

#[tokio::test(start_paused = true)]
async fn overlap_skip_skips_the_slot_of_a_run_in_flight() {
    let probe = Probe::new(Behaviour::Sleep(millis(1500)));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let task = h.register("skip", spec("probe", secs(1))).await;
    let slot = |n: i64| task.created_at + ms(1000 * n);

    // Runs take 1.5 s on a 1 s grid: every second slot finds one in flight.
    let results = h.results(6).await;
    let seen: Vec<_> = results
        .iter()
        .map(|r| (r.run, r.outcome, r.scheduled_at))
        .collect();
    assert_eq!(
        seen,
        vec![
            (0, Outcome::Skipped, slot(2)),
            (1, Outcome::Succeeded, slot(1)),
            (0, Outcome::Skipped, slot(4)),
            (2, Outcome::Succeeded, slot(3)),
            (0, Outcome::Skipped, slot(6)),
            (3, Outcome::Succeeded, slot(5)),
        ]
    );
    let skipped = &results[0];
    assert_eq!(skipped.started_at, None);
    assert_eq!(skipped.attempts, 0);
    assert_eq!(skipped.finished_at, slot(2));
    assert_eq!(skipped.occurrence_id, occurrence_id(&task.id, slot(2)));
    assert!(skipped.error.contains("in flight"), "{}", skipped.error);

    assert_eq!(probe.max_in_flight(), 1, "never two runs at once");
    assert_eq!(probe.calls().len(), 3);
    let task = h.get("skip").await;
    assert_eq!(task.skipped_count, 3);
    assert_eq!(task.run_count, 3);
    assert_eq!(task.scheduled_run_count, 3);
}

#[tokio::test(start_paused = true)]
async fn overlap_allow_runs_alongside() {
    let probe = Probe::new(Behaviour::Sleep(millis(1500)));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let mut spec = spec("probe", secs(1));
    spec.overlap = OverlapPolicy::Allow;
    let task = h.register("allow", spec).await;

    let results = h.results(4).await;
    for (n, result) in (1..=4).zip(&results) {
        assert_eq!(result.run, n);
        assert_eq!(result.outcome, Outcome::Succeeded);
        assert_eq!(result.scheduled_at, task.created_at + ms(1000 * n as i64));
        assert_eq!(result.started_at, Some(result.scheduled_at));
    }
    assert_eq!(probe.max_in_flight(), 2, "each run overlaps the next");
    let task = h.get("allow").await;
    assert_eq!(task.skipped_count, 0);
}

#[tokio::test(start_paused = true)]
async fn overlap_cancel_running_cancels_then_starts() {
    let probe = Probe::new(Behaviour::UntilCancelled);
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let mut spec = spec("probe", secs(1));
    spec.overlap = OverlapPolicy::CancelRunning;
    let task = h.register("cancel-running", spec).await;
    let slot = |n: i64| task.created_at + ms(1000 * n);

    let results = h.results(3).await;
    for (n, result) in (1..=3).zip(&results) {
        assert_eq!(result.run, n);
        assert_eq!(result.outcome, Outcome::Cancelled, "run {n}");
        assert_eq!(result.error, "run was cancelled");
        assert_eq!(result.started_at, Some(slot(n as i64)));
        assert_eq!(
            result.finished_at,
            slot(n as i64 + 1),
            "cancelled by the next slot"
        );
    }

    // Let run 4, started at 4 s alongside run 3's end, reach the handler.
    tokio::time::sleep(millis(100)).await;
    let calls = probe.calls();
    assert_eq!(calls.len(), 4, "run 4 started at slot 4: {calls:?}");
    for (n, call) in (1..=4).zip(&calls) {
        assert_eq!(call.run, n);
        assert_eq!(call.started, h.at(secs(n)), "run {n} starts on its slot");
    }
    assert!(calls[..3].iter().all(|c| c.cancel.is_cancelled()));
    assert!(
        !calls[3].cancel.is_cancelled(),
        "the newest run keeps going"
    );
    let task = h.get("cancel-running").await;
    assert_eq!(task.skipped_count, 0);
    assert_eq!(task.state, TaskState::Active);
}

#[tokio::test(start_paused = true)]
async fn overlap_buffer_one_keeps_one_pending_run() {
    let probe = Probe::new(Behaviour::Sleep(millis(3200)));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let mut spec = spec("probe", secs(1));
    spec.overlap = OverlapPolicy::BufferOne;
    let task = h.register("buffer", spec).await;
    let slot = |n: i64| task.created_at + ms(1000 * n);

    // Run 1 takes slot 1 until 4.2 s; slot 2 is buffered and starts at 4.2 s;
    // slots 3 and 4 find the buffer full. Slot 5 is buffered behind run 2
    // (4.2 s to 7.4 s); slots 6 and 7 are skipped.
    let results = h.results(6).await;
    let seen: Vec<_> = results
        .iter()
        .map(|r| (r.run, r.outcome, r.scheduled_at))
        .collect();
    assert_eq!(
        seen,
        vec![
            (0, Outcome::Skipped, slot(3)),
            (0, Outcome::Skipped, slot(4)),
            (1, Outcome::Succeeded, slot(1)),
            (0, Outcome::Skipped, slot(6)),
            (0, Outcome::Skipped, slot(7)),
            (2, Outcome::Succeeded, slot(2)),
        ]
    );
    let run2 = &results[5];
    assert_eq!(
        run2.started_at,
        Some(results[2].finished_at),
        "starts when run 1 ends"
    );
    assert_eq!(run2.started_at, Some(task.created_at + ms(4200)));

    // Let run 3, started as run 2 ends, reach the handler.
    tokio::time::sleep(millis(100)).await;
    let calls = probe.calls();
    let started: Vec<_> = calls
        .iter()
        .map(|c| (c.run, c.scheduled_at, c.started))
        .collect();
    assert_eq!(
        started,
        vec![
            (1, slot(1), h.at(secs(1))),
            (2, slot(2), h.at(millis(4200))),
            (3, slot(5), h.at(millis(7400))),
        ]
    );
    assert_eq!(probe.max_in_flight(), 1);
    let task = h.get("buffer").await;
    assert_eq!(task.skipped_count, 4);
    assert_eq!(task.run_count, 3);
}

#[tokio::test(start_paused = true)]
async fn retries_count_attempts_and_double_the_backoff() {
    let probe = Probe::new(Behaviour::FailFirst(3));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let mut spec = spec("probe", secs(60));
    spec.retry = RetryPolicy {
        max_attempts: 5,
        initial_backoff: millis(100),
        max_backoff: secs(10),
    };
    let task = h.register("retry", spec).await;
    let slot = task.created_at + ms(60_000);

    let result = h.next_result().await;
    assert_eq!(result.run, 1);
    assert_eq!(result.outcome, Outcome::Succeeded);
    assert_eq!(result.attempts, 4);
    assert_eq!(result.error, "");
    assert_eq!(
        result.started_at,
        Some(slot),
        "started_at is the first attempt"
    );
    assert_eq!(result.finished_at, slot + ms(700));

    let calls = probe.calls();
    let attempts: Vec<_> = calls.iter().map(|c| (c.run, c.attempt)).collect();
    assert_eq!(attempts, vec![(1, 1), (1, 2), (1, 3), (1, 4)]);
    assert!(calls.iter().all(|c| c.scheduled_at == slot));
    assert!(
        calls
            .iter()
            .all(|c| c.occurrence_id == occurrence_id(&task.id, slot)),
        "a retry keeps the occurrence id"
    );
    let gaps: Vec<_> = calls
        .windows(2)
        .map(|w| w[1].started - w[0].started)
        .collect();
    assert_eq!(gaps, vec![millis(100), millis(200), millis(400)]);
    assert_eq!(calls[0].started, h.at(secs(60)));
}

#[tokio::test(start_paused = true)]
async fn retries_give_up_after_max_attempts() {
    let probe = Probe::new(Behaviour::FailFirst(u32::MAX));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let mut spec = spec("probe", secs(60));
    spec.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: millis(250),
        max_backoff: millis(300),
    };
    let task = h.register("give-up", spec).await;
    let slot = task.created_at + ms(60_000);

    let result = h.next_result().await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.attempts, 3);
    assert_eq!(result.error, "attempt 3 failed", "the last attempt's error");
    // 250 ms, then 500 ms capped at 300 ms.
    assert_eq!(result.finished_at, slot + ms(550));
    assert_eq!(probe.calls().len(), 3);
    let task = h.get("give-up").await;
    assert_eq!(
        task.last_result.map(|r| (r.run, r.outcome)),
        Some((1, Outcome::Failed))
    );
}

#[tokio::test(start_paused = true)]
async fn retries_stop_before_the_next_slot() {
    let probe = Probe::new(Behaviour::FailFirst(u32::MAX));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let mut spec = spec("probe", secs(1));
    spec.retry = RetryPolicy {
        max_attempts: 10,
        initial_backoff: millis(400),
        max_backoff: secs(60),
    };
    let task = h.register("deadline", spec).await;
    let slot = |n: i64| task.created_at + ms(1000 * n);

    // Attempts at +0 and +400 ms; the next retry would be at +1200 ms, past
    // the next slot, so the run ends there.
    let results = h.results(2).await;
    for (n, result) in (1..=2).zip(&results) {
        assert_eq!(result.run, n);
        assert_eq!(result.outcome, Outcome::Failed);
        assert_eq!(result.attempts, 2, "run {n}");
        assert_eq!(result.scheduled_at, slot(n as i64));
        assert_eq!(
            result.started_at,
            Some(slot(n as i64)),
            "not delayed by retries"
        );
        assert_eq!(result.finished_at, slot(n as i64) + ms(400));
        assert_eq!(
            result.error,
            "attempt 2 failed (no retry: the next slot comes first)"
        );
    }
    assert_eq!(probe.max_in_flight(), 1);
    let task = h.get("deadline").await;
    assert_eq!(task.skipped_count, 0);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_past_the_timeout_times_out() {
    let probe = Probe::new(Behaviour::Sleep(secs(5)));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let mut spec = spec("probe", secs(60));
    spec.timeout = secs(1);
    spec.retry = RetryPolicy {
        max_attempts: 2,
        initial_backoff: millis(100),
        max_backoff: millis(100),
    };
    let task = h.register("timeout", spec).await;
    let slot = task.created_at + ms(60_000);

    let result = h.next_result().await;
    assert_eq!(result.outcome, Outcome::TimedOut);
    assert_eq!(result.attempts, 2, "a timed-out attempt is retried");
    assert_eq!(result.error, "attempt timed out after 1s");
    assert_eq!(result.latency, secs(1));
    assert_eq!(result.finished_at, slot + ms(2100));
    assert_eq!(result.output, Bytes::new());
    assert_eq!(probe.max_in_flight(), 1);
}

#[tokio::test(start_paused = true)]
async fn pause_stops_runs_and_resume_continues_on_the_grid() {
    let probe = Probe::new(Behaviour::Sleep(millis(300)));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let task = h.register("pausable", spec("probe", secs(1))).await;
    let slot = |n: i64| task.created_at + ms(1000 * n);

    assert_eq!(h.next_result().await.run, 1);
    // 1.3 s -> 2.1 s: run 2 is in flight when the pause comes.
    tokio::time::sleep(millis(800)).await;
    assert_eq!(probe.calls().len(), 2);
    let paused = h
        .scheduler
        .pause(&task.id, "maintenance".into())
        .await
        .expect("pause");
    assert_eq!(paused.state, TaskState::Paused);
    assert_eq!(paused.next_run_at, None);
    assert_eq!(paused.reason, "maintenance");

    // The run in flight is not aborted by a pause.
    let run2 = h.next_result().await;
    assert_eq!((run2.run, run2.outcome), (2, Outcome::Succeeded));
    // Ten slots pass (3 s .. 12 s): nothing starts, nothing is announced.
    h.assert_quiet_for(millis(10_500)).await;
    assert_eq!(probe.calls().len(), 2, "no run starts while paused");
    let task_now = h.get("pausable").await;
    assert_eq!(task_now.state, TaskState::Paused);
    assert_eq!(task_now.run_count, 2);

    // Resumed at 12.8 s, off the grid: the next run is slot 13, no burst.
    assert_eq!(h.scheduler.clock().now(), task.created_at + ms(12_800));
    let resumed = h.scheduler.resume(&task.id).await.expect("resume");
    assert_eq!(resumed.state, TaskState::Active);
    assert_eq!(resumed.next_run_at, Some(slot(13)));
    assert_eq!(resumed.reason, "");
    let results = h.results(5).await;
    for (n, result) in (13..).zip(&results) {
        assert_eq!(result.outcome, Outcome::Succeeded);
        assert_eq!(result.scheduled_at, slot(n));
        assert_eq!(result.started_at, Some(slot(n)));
        assert_eq!(result.run, n as u64 - 10);
    }
    let calls = probe.calls();
    assert_eq!(calls.len(), 7, "exactly one run per slot after resume");
    assert_eq!(calls[2].started, h.at(secs(13)));
    let task_now = h.get("pausable").await;
    assert_eq!(
        task_now.skipped_count, 0,
        "paused slots are not overlap or catch-up skips"
    );
    assert_eq!(task_now.next_run_at, Some(slot(18)));
}

#[tokio::test(start_paused = true)]
async fn pause_at_the_instant_of_a_slot_still_stops_everything_after_it() {
    let probe = Probe::new(Behaviour::Sleep(millis(300)));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let task = h.register("racy", spec("probe", secs(1))).await;

    // The test wakes at the same instant as the timer's slot 2; whichever
    // goes first, nothing may start once pause() has returned.
    tokio::time::sleep(secs(2)).await;
    h.scheduler
        .pause(&task.id, String::new())
        .await
        .expect("pause");
    let started = probe.calls().len();
    assert!(
        (1..=2).contains(&started),
        "run 1, and run 2 if its slot won"
    );
    tokio::time::sleep(secs(10)).await;
    assert_eq!(
        probe.calls().len(),
        started,
        "no run starts after pause returned"
    );
    for event in h.drain() {
        if let Event::Result(result) = event {
            assert_eq!(result.outcome, Outcome::Succeeded);
            assert!(result.scheduled_at <= task.created_at + ms(2000));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn pause_drops_a_buffered_run_as_skipped_keeping_its_number() {
    let probe = Probe::new(Behaviour::Sleep(millis(1500)));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let mut spec = spec_with(
        "probe",
        ScheduleInput {
            every: Some(secs(1)),
            max_runs: 3,
            ..ScheduleInput::default()
        },
    );
    spec.overlap = OverlapPolicy::BufferOne;
    let task = h.register("buffered-pause", spec).await;
    let slot = |n: i64| task.created_at + ms(1000 * n);

    // At 2.2 s run 1 is in flight and slot 2 is buffered behind it as run 2.
    tokio::time::sleep(millis(2200)).await;
    let paused = h
        .scheduler
        .pause(&task.id, String::new())
        .await
        .expect("pause");
    assert_eq!(paused.skipped_count, 1, "the buffered slot is skipped");
    assert_eq!(paused.run_count, 2, "run numbers are never given back");
    assert_eq!(
        paused.scheduled_run_count, 1,
        "the dropped run does not count toward max_runs"
    );
    let dropped = h.next_result().await;
    assert_eq!(
        (dropped.run, dropped.outcome, dropped.scheduled_at),
        (2, Outcome::Skipped, slot(2)),
        "the dropped run is recorded, with its number"
    );
    assert_eq!(dropped.started_at, None);
    let run1 = h.next_result().await;
    assert_eq!((run1.run, run1.scheduled_at), (1, slot(1)));
    h.assert_quiet_for(secs(2)).await;
    assert_eq!(probe.calls().len(), 1, "the buffered run did not start");

    // Resumed at 4.5 s: slots 5 and 6 make three scheduled runs in all.
    h.scheduler.resume(&task.id).await.expect("resume");
    let results = h.results(2).await;
    let seen: Vec<_> = results
        .iter()
        .map(|r| (r.run, r.outcome, r.scheduled_at))
        .collect();
    assert_eq!(
        seen,
        vec![
            (3, Outcome::Succeeded, slot(5)),
            (4, Outcome::Succeeded, slot(6)),
        ]
    );
    match h.next_event().await {
        Event::TaskEnded(ended) => assert_eq!(ended, task.id),
        other => panic!("expected the task to end, got {other:?}"),
    }
    let done = h.get("buffered-pause").await;
    assert_eq!(done.state, TaskState::Completed);
    assert_eq!((done.run_count, done.scheduled_run_count), (4, 3));
    assert_eq!(probe.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn trigger_runs_now_outside_the_schedule() {
    let probe = Probe::new(Behaviour::Sleep(millis(300)));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let spec = spec_with(
        "probe",
        ScheduleInput {
            every: Some(secs(10)),
            max_runs: 2,
            ..ScheduleInput::default()
        },
    );
    let task = h.register("manual", spec).await;
    let slot = |n: i64| task.created_at + ms(10_000 * n);

    // At once, and refused under SKIP while that run is in flight.
    assert_eq!(h.scheduler.trigger(&task.id).await.expect("trigger"), 1);
    match h.scheduler.trigger(&task.id).await {
        Err(Error::Busy { task_id, policy }) => {
            assert_eq!(task_id, task.id);
            assert_eq!(policy, "SKIP");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    let manual = h.next_result().await;
    assert_eq!(manual.run, 1);
    assert_eq!(manual.trigger, Trigger::Manual);
    assert_eq!(manual.outcome, Outcome::Succeeded);
    assert_eq!(
        manual.scheduled_at,
        t0(),
        "a manual run's slot is its trigger time"
    );
    assert_eq!(manual.started_at, Some(t0()));
    let calls = probe.calls();
    assert_eq!(calls.len(), 1, "the refused trigger started nothing");
    assert_eq!(calls[0].started, h.at(Duration::ZERO));
    let manual_prefix = format!("{}~", occurrence_id(&task.id, t0()));
    assert!(
        calls[0].occurrence_id.starts_with(&manual_prefix),
        "a manual run's occurrence id is its call time plus a unique part: {}",
        calls[0].occurrence_id
    );
    let after = h.get("manual").await;
    assert_eq!(
        after.next_run_at,
        Some(slot(1)),
        "next_run_at does not move"
    );
    assert_eq!(after.run_count, 1);
    assert_eq!(after.scheduled_run_count, 0);

    // While paused, too; the task stays paused.
    h.scheduler
        .pause(&task.id, String::new())
        .await
        .expect("pause");
    assert_eq!(h.scheduler.trigger(&task.id).await.expect("trigger"), 2);
    let manual = h.next_result().await;
    assert_eq!((manual.run, manual.trigger), (2, Trigger::Manual));
    assert_eq!(manual.started_at, Some(t0() + ms(300)));
    assert_eq!(h.get("manual").await.state, TaskState::Paused);

    // Manual runs do not count toward max_runs: both scheduled runs follow.
    h.scheduler.resume(&task.id).await.expect("resume");
    let scheduled = h.results(2).await;
    let seen: Vec<_> = scheduled
        .iter()
        .map(|r| (r.run, r.trigger, r.scheduled_at))
        .collect();
    assert_eq!(
        seen,
        vec![
            (3, Trigger::Scheduled, slot(1)),
            (4, Trigger::Scheduled, slot(2)),
        ]
    );
    match h.next_event().await {
        Event::TaskEnded(ended) => assert_eq!(ended, task.id),
        other => panic!("expected the task to end, got {other:?}"),
    }
    let done = h.get("manual").await;
    assert_eq!(done.state, TaskState::Completed);
    assert_eq!((done.run_count, done.scheduled_run_count), (4, 2));
}

#[tokio::test(start_paused = true)]
async fn cancel_aborts_the_run_in_flight_then_ends_the_task() {
    let probe = Probe::new(Behaviour::UntilCancelled);
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let task = h.register("doomed", spec("probe", secs(1))).await;

    tokio::time::sleep(millis(1500)).await;
    assert_eq!(probe.calls().len(), 1, "run 1 is in flight");
    let cancelled = h
        .scheduler
        .cancel(&task.id, "not needed".into())
        .await
        .expect("cancel");
    assert_eq!(cancelled.state, TaskState::Cancelled);
    assert_eq!(cancelled.next_run_at, None);
    assert_eq!(cancelled.reason, "not needed");

    let result = h.next_result().await;
    assert_eq!(result.run, 1);
    assert_eq!(result.outcome, Outcome::Cancelled);
    assert_eq!(result.error, "run was cancelled");
    assert_eq!(result.finished_at, task.created_at + ms(1500));
    assert!(
        probe.calls()[0].cancel.is_cancelled(),
        "the handler was told"
    );
    match h.next_event().await {
        Event::TaskEnded(ended) => assert_eq!(ended, task.id),
        other => panic!("expected the task to end, got {other:?}"),
    }

    h.assert_quiet_for(secs(10)).await;
    assert_eq!(probe.calls().len(), 1, "no run after the cancel");
    let task = h.get("doomed").await;
    assert_eq!(task.state, TaskState::Cancelled);
    assert_eq!(
        task.last_result.map(|r| (r.run, r.outcome)),
        Some((1, Outcome::Cancelled))
    );
    assert!(h.get("doomed").await.has_ended());
    assert!(matches!(
        h.scheduler.trigger(&id("doomed")).await,
        Err(Error::WrongState { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn max_runs_completes_the_task_after_its_last_result() {
    let probe = Probe::new(Behaviour::Sleep(millis(300)));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let spec = spec_with(
        "probe",
        ScheduleInput {
            every: Some(secs(1)),
            max_runs: 3,
            ..ScheduleInput::default()
        },
    );
    let task = h.register("bounded", spec).await;

    let results = h.results(3).await;
    assert_eq!(results.iter().map(|r| r.run).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(results.iter().all(|r| r.outcome == Outcome::Succeeded));
    match h.next_event().await {
        Event::TaskEnded(ended) => assert_eq!(ended, task.id),
        other => panic!("expected the task to end, got {other:?}"),
    }
    let done = h.get("bounded").await;
    assert_eq!(done.state, TaskState::Completed);
    assert_eq!(done.next_run_at, None);
    assert_eq!(done.scheduled_run_count, 3);
    assert_eq!(done.last_result.map(|r| r.run), Some(3));

    h.assert_quiet_for(secs(10)).await;
    assert_eq!(probe.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn max_runs_under_buffer_one_still_runs_the_buffered_last_run() {
    let probe = Probe::new(Behaviour::Sleep(millis(1500)));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let mut spec = spec_with(
        "probe",
        ScheduleInput {
            every: Some(secs(1)),
            max_runs: 2,
            ..ScheduleInput::default()
        },
    );
    spec.overlap = OverlapPolicy::BufferOne;
    let task = h.register("buffered-last", spec).await;

    // Slot 2 is buffered behind run 1 and is the last counted run: it must
    // still run, and the task ends only after its result.
    let results = h.results(2).await;
    let seen: Vec<_> = results
        .iter()
        .map(|r| (r.run, r.outcome, r.scheduled_at))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, Outcome::Succeeded, task.created_at + ms(1000)),
            (2, Outcome::Succeeded, task.created_at + ms(2000)),
        ]
    );
    assert_eq!(results[1].started_at, Some(task.created_at + ms(2500)));
    match h.next_event().await {
        Event::TaskEnded(ended) => assert_eq!(ended, task.id),
        other => panic!("expected the task to end, got {other:?}"),
    }
    let done = h.get("buffered-last").await;
    assert_eq!(done.state, TaskState::Completed);
    assert_eq!(done.last_result.map(|r| r.run), Some(2));
    assert_eq!(probe.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_stall_runs_the_latest_slot_once_and_counts_the_rest() {
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let task = h.register("stalled", spec("probe", secs(1))).await;
    let slot = |n: i64| task.created_at + ms(1000 * n);

    // One jump over ten slots: the timer first sees the clock at 10.5 s.
    tokio::time::advance(millis(10_500)).await;
    let passed = h.next_result().await;
    assert_eq!(
        (passed.run, passed.outcome, passed.skipped_slots),
        (0, Outcome::Skipped, 9),
        "one result for the nine slots passed over, before the run"
    );
    assert_eq!(passed.scheduled_at, slot(1), "the first slot passed over");
    assert_eq!(passed.occurrence_id, occurrence_id(&task.id, slot(1)));
    assert_eq!(passed.finished_at, task.created_at + ms(10_500));
    assert_eq!((passed.started_at, passed.attempts), (None, 0));
    let result = h.next_result().await;
    assert_eq!(result.run, 1);
    assert_eq!(result.outcome, Outcome::Succeeded);
    assert_eq!(result.skipped_slots, 0);
    assert_eq!(result.scheduled_at, slot(10), "the latest passed slot");
    assert_eq!(result.started_at, Some(task.created_at + ms(10_500)));
    let after = h.get("stalled").await;
    assert_eq!(after.skipped_count, 9, "slots 1 to 9 were passed over");
    assert_eq!(after.run_count, 1);
    assert_eq!(after.next_run_at, Some(slot(11)));

    // Back on the grid, one run per slot.
    let next = h.results(2).await;
    assert_eq!(
        next.iter()
            .map(|r| (r.run, r.scheduled_at, r.started_at))
            .collect::<Vec<_>>(),
        vec![(2, slot(11), Some(slot(11))), (3, slot(12), Some(slot(12)))]
    );
    assert_eq!(probe.calls().len(), 3);
    assert_eq!(h.get("stalled").await.skipped_count, 9);
}

/// A task every 10 s with catch-up `window`, stalled once: the timer first
/// sees the clock at `seen`, after the slots at 10, 20 and 30 s.
async fn stalled(
    name: &str,
    window: Option<Duration>,
    seen: Duration,
) -> (Harness, Arc<Probe>, TaskRecord) {
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let h = Harness::start(&[("probe", &probe)]).await;
    let mut spec = spec("probe", secs(10));
    spec.catchup_window = window;
    let task = h.register(name, spec).await;
    tokio::time::advance(seen).await;
    (h, probe, task)
}

/// Checks the one result of a catch-up decision that passed over `slots`
/// slots, the first at 10 s, decided at `at` after the start.
fn assert_caught_up(result: &TaskResult, slots: u64, at: Duration) {
    assert_eq!(
        (result.run, result.outcome, result.skipped_slots),
        (0, Outcome::Skipped, slots),
        "{result:?}"
    );
    assert_eq!(result.scheduled_at, t0() + ms(10_000), "the first missed");
    assert_eq!(
        result.occurrence_id,
        occurrence_id(&result.task_id, t0() + ms(10_000))
    );
    assert_eq!(
        result.finished_at,
        t0() + chrono::Duration::from_std(at).unwrap()
    );
    assert_eq!((result.started_at, result.attempts), (None, 0));
}

#[tokio::test(start_paused = true)]
async fn without_a_catchup_window_the_latest_missed_slot_runs_however_late() {
    let (mut h, probe, task) = stalled("late", None, secs(39)).await;
    assert_caught_up(&*h.next_result().await, 2, secs(39));
    let ran = h.next_result().await;
    assert_eq!((ran.run, ran.outcome), (1, Outcome::Succeeded));
    assert_eq!(ran.scheduled_at, task.created_at + ms(30_000), "9 s late");
    assert_eq!(ran.started_at, Some(task.created_at + ms(39_000)));
    assert_eq!(probe.calls().len(), 1);
    let after = h.get("late").await;
    assert_eq!((after.run_count, after.skipped_count), (1, 2));
    assert_eq!(after.next_run_at, Some(task.created_at + ms(40_000)));
}

#[tokio::test(start_paused = true)]
async fn a_zero_catchup_window_runs_no_missed_slot_and_waits_for_the_next() {
    let (mut h, probe, task) = stalled("never", Some(Duration::ZERO), secs(35)).await;
    assert_caught_up(&*h.next_result().await, 3, secs(35));
    h.assert_quiet_for(millis(4_900)).await;
    assert!(probe.calls().is_empty(), "no missed slot ran");
    let after = h.get("never").await;
    assert_eq!(after.state, TaskState::Active);
    assert_eq!((after.run_count, after.scheduled_run_count), (0, 0));
    assert_eq!(after.skipped_count, 3, "slots 10, 20 and 30 s");
    assert_eq!(after.next_run_at, Some(task.created_at + ms(40_000)));

    // The next slot is on time and runs.
    let next = h.next_result().await;
    assert_eq!((next.run, next.outcome), (1, Outcome::Succeeded));
    assert_eq!(next.scheduled_at, task.created_at + ms(40_000));
    assert_eq!(next.started_at, Some(next.scheduled_at));
}

#[tokio::test(start_paused = true)]
async fn a_catchup_window_that_covers_the_latest_missed_slot_runs_it() {
    // The slot at 30 s is 5 s late: at the edge of the window, inside.
    let (mut h, probe, task) = stalled("covered", Some(secs(5)), secs(35)).await;
    assert_caught_up(&*h.next_result().await, 2, secs(35));
    let ran = h.next_result().await;
    assert_eq!((ran.run, ran.outcome), (1, Outcome::Succeeded));
    assert_eq!(ran.scheduled_at, task.created_at + ms(30_000));
    assert_eq!(probe.calls().len(), 1);
    assert_eq!(h.get("covered").await.skipped_count, 2);
}

#[tokio::test(start_paused = true)]
async fn a_catchup_window_the_latest_missed_slot_is_older_than_passes_over_all() {
    // The slot at 30 s is 5.5 s late, past the 5 s window.
    let (mut h, probe, task) = stalled("too-late", Some(secs(5)), millis(35_500)).await;
    assert_caught_up(&*h.next_result().await, 3, millis(35_500));
    h.assert_quiet_for(secs(4)).await;
    assert!(probe.calls().is_empty());
    let after = h.get("too-late").await;
    assert_eq!((after.state, after.run_count), (TaskState::Active, 0));
    assert_eq!(after.skipped_count, 3);
    assert_eq!(after.next_run_at, Some(task.created_at + ms(40_000)));
}

#[tokio::test(start_paused = true)]
async fn a_task_whose_last_slots_are_passed_over_ends_after_their_result() {
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let mut spec = spec_with(
        "probe",
        ScheduleInput {
            every: Some(secs(10)),
            end_at: Some(t0() + ms(30_000)),
            ..ScheduleInput::default()
        },
    );
    spec.catchup_window = Some(Duration::ZERO);
    let task = h.register("ending", spec).await;
    tokio::time::advance(secs(45)).await;
    assert_caught_up(&*h.next_result().await, 3, secs(45));
    match h.next_event().await {
        Event::TaskEnded(ended) => assert_eq!(ended, task.id),
        other => panic!("expected the task to end, got {other:?}"),
    }
    let done = h.get("ending").await;
    assert_eq!((done.state, done.run_count), (TaskState::Completed, 0));
    assert!(probe.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn stop_gives_runs_their_grace_then_cancels_the_rest() {
    let quick = Probe::new(Behaviour::Sleep(secs(1)));
    let slow = Probe::new(Behaviour::Sleep(secs(10)));
    let frequent = Probe::new(Behaviour::Sleep(millis(200)));
    let mut h =
        Harness::start(&[("quick", &quick), ("slow", &slow), ("frequent", &frequent)]).await;
    h.register("quick", spec("quick", secs(5))).await;
    h.register("slow", spec("slow", secs(5))).await;
    h.register("frequent", spec("frequent", secs(1))).await;

    // At 5.5 s: quick (5 s to 6 s) and slow (5 s to 15 s) are in flight;
    // frequent would start at 6, 7 and 8 s.
    tokio::time::sleep(millis(5500)).await;
    let mut before = Vec::new();
    for event in h.drain() {
        before.push(event);
    }
    assert_eq!(before.len(), 5, "frequent runs 1 to 5 reported: {before:?}");
    let stop_began = Instant::now();
    h.scheduler.stop(secs(3)).await;
    assert_eq!(
        Instant::now(),
        stop_began + secs(3),
        "stop waits out the grace"
    );

    let mut after = Vec::new();
    for event in h.drain() {
        match event {
            Event::Result(result) => after.push(result),
            other => panic!("unexpected event during stop: {other:?}"),
        }
    }
    let seen: Vec<_> = after
        .iter()
        .map(|r| (r.task_id.as_str(), r.run, r.outcome))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("quick", 1, Outcome::Succeeded),
            ("slow", 1, Outcome::Cancelled),
        ]
    );
    assert_eq!(
        after[0].finished_at,
        t0() + ms(6000),
        "finished within grace"
    );
    assert_eq!(
        after[1].finished_at,
        t0() + ms(8500),
        "cancelled at the end of grace"
    );

    for probe in [&quick, &slow, &frequent] {
        assert!(
            probe.calls().iter().all(|c| c.started < stop_began),
            "no run starts after stop began"
        );
    }
    assert_eq!(frequent.calls().len(), 5);
    assert!(matches!(
        h.scheduler.trigger(&id("frequent")).await,
        Err(Error::ShuttingDown)
    ));
    h.assert_quiet_for(secs(10)).await;
    assert_eq!(frequent.calls().len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_clock_stepped_back_never_runs_a_slot_again() {
    let probe = Probe::new(Behaviour::Sleep(millis(10)));
    let mut h = Harness::start(&[("probe", &probe)]).await;
    let task = h.register("steady", spec("probe", secs(1))).await;
    let slot = |n: i64| task.created_at + ms(1000 * n);
    let first = h.results(2).await;
    assert_eq!(
        first
            .iter()
            .map(|r| (r.run, r.scheduled_at))
            .collect::<Vec<_>>(),
        vec![(1, slot(1)), (2, slot(2))]
    );

    // The wall clock is set back 1.8 s (NTP, an operator), to just after
    // slot 0's time, and the task is re-armed from it: a resume computes
    // its next slot from "now", so slots 1 and 2 come due again.
    h.scheduler.clock().step(ms(-1800));
    h.scheduler
        .pause(&task.id, "stepping".into())
        .await
        .expect("pause");
    let resumed = h.scheduler.resume(&task.id).await.expect("resume");
    assert_eq!(resumed.next_run_at, Some(slot(1)), "re-armed at a run slot");

    // Slots 1 and 2 were claimed: they pass without a run, and the next run
    // is slot 3, on time by the stepped clock.
    let next = h.next_result().await;
    assert_eq!((next.run, next.scheduled_at), (3, slot(3)), "{next:?}");
    assert_eq!(next.started_at, Some(slot(3)));
    let scheduled: Vec<_> = probe.calls().iter().map(|c| c.scheduled_at).collect();
    assert_eq!(scheduled, vec![slot(1), slot(2), slot(3)], "no slot twice");
    assert_eq!(h.get("steady").await.run_count, 3);
}
