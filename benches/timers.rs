//! Timer strategies for a herd, without the scheduler: N tokio tasks each
//! sleeping until the same instant, against one queue with one sleep that
//! hands out all due entries. Measures wake lateness, how long the herd
//! takes to be handed out, and resident memory while waiting.
//!
//! Run: `cargo bench --bench timers -- 100000`.

#[path = "support/rss.rs"]
mod rss;

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

async fn wait_all(done: &AtomicUsize, n: usize) {
    while done.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn sleep_per_task(n: usize) -> (f64, f64) {
    let done = Arc::new(AtomicUsize::new(0));
    let worst = Arc::new(AtomicUsize::new(0));
    let at = Instant::now() + Duration::from_secs(2);
    for _ in 0..n {
        let done = done.clone();
        let worst = worst.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            worst.fetch_max(at.elapsed().as_micros() as usize, Ordering::SeqCst);
            done.fetch_add(1, Ordering::SeqCst);
        });
    }
    let rss = rss::rss_mib();
    wait_all(&done, n).await;
    (worst.load(Ordering::SeqCst) as f64 / 1000.0, rss)
}

async fn central_queue(n: usize) -> (f64, f64) {
    let done = Arc::new(AtomicUsize::new(0));
    let worst = Arc::new(AtomicUsize::new(0));
    let at = Instant::now() + Duration::from_secs(2);
    let queue: BTreeSet<(Instant, usize)> = (0..n).map(|i| (at, i)).collect();
    let rss = rss::rss_mib();
    {
        let done = done.clone();
        let worst = worst.clone();
        tokio::spawn(async move {
            let mut queue = queue;
            while let Some((due, _)) = queue.first().copied() {
                tokio::time::sleep_until(due).await;
                while let Some((due, _)) = queue.first().copied()
                    && due <= Instant::now()
                {
                    queue.pop_first();
                    let done = done.clone();
                    let worst = worst.clone();
                    // What the scheduler does per due entry: spawn its firing.
                    tokio::spawn(async move {
                        worst.fetch_max(due.elapsed().as_micros() as usize, Ordering::SeqCst);
                        done.fetch_add(1, Ordering::SeqCst);
                    });
                }
            }
        });
    }
    wait_all(&done, n).await;
    (worst.load(Ordering::SeqCst) as f64 / 1000.0, rss)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    };
    for n in sizes {
        for strategy in ["sleep-per-task", "central-queue"] {
            // A fresh runtime each, so one run's allocations don't colour the next.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let before = rss::rss_mib();
            let (worst_ms, rss_waiting) = runtime.block_on(async {
                match strategy {
                    "sleep-per-task" => sleep_per_task(n).await,
                    _ => central_queue(n).await,
                }
            });
            println!(
                "timers n={n} {strategy}: last wake-up {worst_ms:.1} ms after the instant; RSS while waiting +{:.0} MiB",
                rss_waiting - before
            );
        }
    }
}
