//! The `--tcs-peer` mode: tokio-cron-scheduler as a peer, in its own
//! process like every other measured scheduler. One repeated job per task,
//! every second. Its ticks are whole seconds (next ticks are stored as Unix
//! seconds and checked every 500 ms), so every task fires on the second:
//! it runs as a herd whatever phase is asked for. Prints the same JSON line
//! as the Python peers, plus the expected count (it knows its anchors).

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::{
    cli::ONE_SECOND,
    stats::Percentiles,
    tasks::{micros_between, slots_in},
};

/// The window's runs, as the Python peers' `Recorder` keeps them.
#[derive(Default)]
struct Recorder {
    seen: HashSet<(usize, i64)>,
    lateness_us: Vec<i64>,
    doubled: u64,
}

/// Runs the peer: first slot near `base` (Unix seconds), then `warmup`,
/// `window` and a one-second settle, then prints the summary and returns.
pub fn run(tasks: usize, base: f64, warmup: f64, window: f64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the peer runtime");
    runtime.block_on(async move {
        let base = DateTime::from_timestamp_micros((base * 1e6) as i64).expect("a valid base");
        let start = base + Duration::from_secs_f64(warmup);
        let end = start + Duration::from_secs_f64(window);
        let recorder = Arc::new(Mutex::new(Recorder::default()));
        let mut scheduler = JobScheduler::new()
            .await
            .expect("creating tokio-cron-scheduler");

        // A repeated job's first tick is the whole second after it is
        // created; create them just before the base so most land on it.
        crate::firing::sleep_until(base - Duration::from_millis(900)).await;
        let mut anchors = Vec::with_capacity(tasks);
        let mut ids = Vec::with_capacity(tasks);
        for index in 0..tasks {
            let anchor = Arc::new(OnceLock::<DateTime<Utc>>::new());
            anchors.push(anchor.clone());
            // The n-th run belongs to the n-th tick: the scheduler advances
            // a repeated job's tick by its interval, one run per tick.
            let runs = Arc::new(AtomicI64::new(0));
            let recorder = recorder.clone();
            let job = Job::new_repeated_async(Duration::from_secs(1), move |_id, _scheduler| {
                let started = Utc::now();
                let n = runs.fetch_add(1, Ordering::Relaxed);
                if let Some(anchor) = anchor.get() {
                    let slot = *anchor + chrono::TimeDelta::seconds(n);
                    if start <= slot && slot < end {
                        let mut r = recorder.lock().expect("recorder lock");
                        if r.seen.insert((index, slot.timestamp_micros())) {
                            r.lateness_us.push(micros_between(slot, started));
                        } else {
                            r.doubled += 1;
                        }
                    }
                }
                Box::pin(async {})
            })
            .expect("creating a repeated job");
            ids.push(scheduler.add(job).await.expect("adding a job"));
        }
        let mut expected = 0u64;
        for (id, anchor) in ids.iter().zip(&anchors) {
            let first = scheduler
                .next_tick_for_job(*id)
                .await
                .expect("reading a job's next tick")
                .expect("a repeated job has a next tick");
            expected += slots_in(first, ONE_SECOND, start, end);
            let _ = anchor.set(first);
        }
        scheduler
            .start()
            .await
            .expect("starting tokio-cron-scheduler");
        crate::firing::sleep_until(end + Duration::from_secs(1)).await;
        let (mut lateness_us, fires_done, doubled) = {
            let r = recorder.lock().expect("recorder lock");
            (r.lateness_us.clone(), r.seen.len(), r.doubled)
        };
        let lateness = Percentiles::of_micros(&mut lateness_us);
        println!(
            "{}",
            json!({
                "lateness": lateness.map(Percentiles::to_json),
                "fires_done": fires_done,
                "fires_expected": expected,
                "doubled": doubled,
            })
        );
    });
    // The scheduler's tasks end with the process; main exits right after.
}
