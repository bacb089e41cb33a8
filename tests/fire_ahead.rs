//! Herds fired ahead of their instant (`SchedulerSettings::fire_ahead`):
//! the store step is taken early, the runs start at the instant, and what
//! happens between the two is what would have happened had the herd been
//! fired at its instant. On tokio's paused clock, with herds of 3.

mod engine_harness;

use engine_harness::*;

/// Herds of 3 and more, fired 250 ms ahead.
fn ahead() -> FireAhead {
    FireAhead {
        window: millis(250),
        min: 3,
        max: 100,
    }
}

const HERD: [&str; 4] = ["h1", "h2", "h3", "h4"];

/// Registers the herd: every `every` from t0, so all due at once.
async fn herd(h: &Harness, every: Duration) {
    for raw in HERD {
        h.register(raw, spec("probe", every)).await;
    }
}

/// The herd every 10 s with 100 ms runs, at 9.9 s: claimed, not started.
async fn claimed_herd() -> (Arc<Probe>, Harness) {
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let h = Harness::start_ahead(&[("probe", &probe)], ahead(), 1000).await;
    herd(&h, secs(10)).await;
    tokio::time::sleep_until(h.at(millis(9_900))).await;
    (probe, h)
}

#[tokio::test(start_paused = true)]
async fn a_herd_is_claimed_ahead_and_each_run_starts_at_its_instant() {
    // Inside the window: claimed (counted, advanced), not started.
    let (probe, mut h) = claimed_herd().await;
    for raw in HERD {
        let task = h.get(raw).await;
        assert_eq!(task.run_count, 1, "{raw} claimed ahead");
        assert_eq!(task.next_run_at, Some(t0() + ms(20_000)));
    }
    assert!(probe.calls().is_empty(), "nothing runs before its instant");
    let results = h.results(HERD.len()).await;
    for result in &results {
        assert_eq!(result.outcome, Outcome::Succeeded, "{}", result.error);
        assert_eq!(result.started_at, Some(t0() + ms(10_000)), "on its instant");
    }
    for call in probe.calls() {
        assert_eq!(call.started, h.at(secs(10)));
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_below_the_herd_size_is_fired_at_its_instant() {
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let mut h = Harness::start_ahead(&[("probe", &probe)], ahead(), 1000).await;
    h.register("alone", spec("probe", secs(10))).await;
    h.register("pair", spec("probe", secs(10))).await;
    tokio::time::sleep_until(h.at(millis(9_900))).await;
    for raw in ["alone", "pair"] {
        assert_eq!(h.get(raw).await.run_count, 0, "{raw} not claimed ahead");
    }
    let results = h.results(2).await;
    assert!(
        results
            .iter()
            .all(|r| r.started_at == Some(t0() + ms(10_000)))
    );
}

#[tokio::test(start_paused = true)]
async fn a_pause_before_the_instant_drops_the_run_claimed_ahead() {
    let (probe, mut h) = claimed_herd().await;
    h.scheduler
        .pause(&id("h1"), "before its instant".into())
        .await
        .expect("paused");
    let results = h.results(HERD.len()).await;
    let paused: Vec<_> = results
        .iter()
        .filter(|r| r.task_id.as_str() == "h1")
        .collect();
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0].outcome, Outcome::Skipped);
    assert_eq!(paused[0].started_at, None);
    assert!(paused[0].error.contains("paused"), "{}", paused[0].error);
    assert!(
        probe.calls().iter().all(|c| c.task_id.as_str() != "h1"),
        "the paused task's run never started"
    );
    for result in results.iter().filter(|r| r.task_id.as_str() != "h1") {
        assert_eq!(result.outcome, Outcome::Succeeded);
    }
    let task = h.get("h1").await;
    assert_eq!((task.state, task.active_runs), (TaskState::Paused, 0));
}

#[tokio::test(start_paused = true)]
async fn a_cancel_before_the_instant_cancels_the_run_claimed_ahead() {
    let (probe, mut h) = claimed_herd().await;
    h.scheduler
        .cancel(&id("h2"), "before its instant".into())
        .await
        .expect("cancelled");
    let mut cancelled = None;
    let mut ended = false;
    let mut others = 0;
    while cancelled.is_none() || !ended || others < HERD.len() - 1 {
        match h.next_event().await {
            Event::Result(r) if r.task_id.as_str() == "h2" => cancelled = Some(r),
            Event::Result(r) => {
                assert_eq!(r.outcome, Outcome::Succeeded);
                others += 1;
            }
            Event::TaskEnded(task) => {
                assert_eq!(task.as_str(), "h2");
                ended = true;
            }
        }
    }
    let cancelled = cancelled.expect("a result for the cancelled run");
    assert_eq!(cancelled.outcome, Outcome::Cancelled);
    assert_eq!(cancelled.started_at, None, "{}", cancelled.error);
    assert!(probe.calls().iter().all(|c| c.task_id.as_str() != "h2"));
}

#[tokio::test(start_paused = true)]
async fn a_task_with_a_run_in_flight_gets_its_overlap_decision_at_the_instant() {
    // Each run lasts 0.9 s of a 1 s cadence: when the next slot's window
    // begins (0.75 s after a slot) the run is still going, and at the
    // instant it has ended. SKIP decided ahead would skip every other slot.
    let probe = Probe::new(Behaviour::Sleep(millis(900)));
    let mut h = Harness::start_ahead(&[("probe", &probe)], ahead(), 1000).await;
    herd(&h, secs(1)).await;
    let results = h.results(HERD.len() * 3).await;
    for result in &results {
        assert_eq!(result.outcome, Outcome::Succeeded, "{}", result.error);
        assert_eq!(
            result.started_at,
            Some(result.scheduled_at),
            "on its instant"
        );
    }
    for raw in HERD {
        let runs: Vec<u64> = results
            .iter()
            .filter(|r| r.task_id.as_str() == raw)
            .map(|r| r.run)
            .collect();
        assert_eq!(runs, [1, 2, 3], "{raw}: no slot skipped");
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_before_the_instant_starts_none_of_the_runs_claimed_ahead() {
    let (probe, mut h) = claimed_herd().await;
    h.scheduler.stop(secs(5)).await;
    let results: Vec<_> = h
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            Event::Result(r) => Some(r),
            Event::TaskEnded(_) => None,
        })
        .collect();
    assert_eq!(results.len(), HERD.len(), "each claimed run is reported");
    for result in &results {
        assert_eq!(result.outcome, Outcome::Skipped);
        assert!(result.error.contains("stop"), "{}", result.error);
    }
    assert!(probe.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_pause_while_a_run_claimed_ahead_waits_for_a_run_slot_drops_it() {
    // One run at a time: at the instant h1..h4 queue for the one slot,
    // each run taking 100 ms. A pause at 10.05 s finds h4 still waiting.
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let mut h = Harness::start_ahead(&[("probe", &probe)], ahead(), 1).await;
    herd(&h, secs(10)).await;
    tokio::time::sleep_until(h.at(millis(10_050))).await;
    assert_eq!(probe.calls().len(), 1, "one run at a time");
    let waiting: Vec<String> = HERD
        .iter()
        .filter(|raw| probe.calls().iter().all(|c| c.task_id.as_str() != **raw))
        .map(|raw| raw.to_string())
        .collect();
    let paused = waiting.last().expect("runs wait for the slot").clone();
    h.scheduler
        .pause(&id(&paused), "while it waits for a slot".into())
        .await
        .expect("paused");
    let results = h.results(HERD.len()).await;
    let dropped: Vec<_> = results
        .iter()
        .filter(|r| r.task_id.as_str() == paused)
        .collect();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].outcome, Outcome::Skipped, "{}", dropped[0].error);
    assert_eq!(dropped[0].started_at, None);
    assert!(
        probe.calls().iter().all(|c| c.task_id.as_str() != paused),
        "a run of a paused task started after the pause returned"
    );
    assert_eq!(probe.calls().len(), HERD.len() - 1);
    assert_eq!(probe.max_in_flight(), 1, "the cap held");
}

#[tokio::test(start_paused = true)]
async fn a_run_dropped_by_a_pause_before_its_instant_does_not_count_toward_max_runs() {
    let probe = Probe::new(Behaviour::Sleep(millis(100)));
    let mut h = Harness::start_ahead(&[("probe", &probe)], ahead(), 1000).await;
    for raw in HERD {
        let schedule = ScheduleInput {
            every: Some(secs(10)),
            max_runs: 2,
            ..ScheduleInput::default()
        };
        h.register(raw, spec_with("probe", schedule)).await;
    }
    tokio::time::sleep_until(h.at(millis(9_900))).await;
    h.scheduler
        .pause(&id("h1"), String::new())
        .await
        .expect("paused");
    h.results(HERD.len()).await;
    h.scheduler.resume(&id("h1")).await.expect("resumed");
    // Its two runs are still to come: at 20 s and 30 s.
    let mut runs = Vec::new();
    while runs.len() < 2 {
        if let Event::Result(r) = h.next_event().await
            && r.task_id.as_str() == "h1"
        {
            assert_eq!(r.outcome, Outcome::Succeeded, "{}", r.error);
            runs.push(r.scheduled_at);
        }
    }
    assert_eq!(runs, [t0() + ms(20_000), t0() + ms(30_000)]);
    let task = h.get("h1").await;
    assert_eq!(task.state, TaskState::Completed);
}
