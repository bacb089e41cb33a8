//! Runs: a queue of dispatched runs and a fixed number of slots for runs in
//! flight (`max_runs_in_flight`). A run waits in the queue, not as a task,
//! so a herd of 100,000 costs 100,000 small records rather than as many
//! futures; waiting is counted in the engine summary. A run waiting for a
//! slot is not yet in flight: the store's `start_run` step refuses one that
//! pause or cancel dropped meanwhile.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{Instrument, debug, debug_span, warn};

use super::{Inner, run};
use crate::{
    stats::Stats,
    store::RunStart,
    task::{Outcome, TaskResult},
};

impl Inner {
    /// Queues a dispatched run to start when a slot is free.
    pub(super) fn enqueue(&self, start: RunStart) {
        Stats::add(&self.stats.runs_waiting, 1);
        // The receiver lives until shutdown; a run queued after that was
        // never going to start.
        let _ = self.run_queue.send(start);
    }

    /// Starts queued runs as slots free up, until the scheduler stops.
    pub(super) async fn dispatch_loop(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<RunStart>,
    ) {
        let slots = Arc::new(Semaphore::new(self.settings.max_runs_in_flight.clamp(1, Semaphore::MAX_PERMITS)));
        loop {
            let start = tokio::select! {
                biased;
                _ = self.stopping.cancelled() => return,
                start = queue.recv() => match start {
                    Some(start) => start,
                    None => return,
                },
            };
            let slot = tokio::select! {
                biased;
                _ = self.stopping.cancelled() => return,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            self.stats
                .runs_waiting
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let span = debug_span!("run", task_id = %start.record.task_id, run = start.record.run);
            let inner = self.clone();
            self.tracker
                .spawn(async move { inner.run(start, slot).await }.instrument(span));
        }
    }

    async fn run(self: Arc<Self>, start: RunStart, _slot: OwnedSemaphorePermit) {
        let record = &start.record;
        let handle = self.registry.handle(&record.task_id);
        let token = handle.start_run(record.run);
        match self.store.start_run(&record.task_id, record.run).await {
            Ok(true) => {}
            Ok(false) => {
                // Dropped by pause or cancel while it waited; they recorded it.
                handle.end_run(record.run);
                return;
            }
            Err(error) => {
                warn!(%error, "run not started: the store could not mark it running");
                handle.end_run(record.run);
                let mut result: TaskResult = run::dropped(
                    record,
                    Outcome::Failed,
                    self.clock.now(),
                    "not started: the store could not mark it running",
                );
                result.error = format!("{} ({error})", result.error);
                self.writer.record(result, true);
                return;
            }
        }
        // Shutdown may have begun while it waited.
        if self.stopping.is_cancelled() {
            token.cancel();
        }
        debug!("run started");
        Stats::add(&self.stats.runs_in_flight, 1);
        let result = run::execute(&self.actions, &self.clock, &start, token).await;
        self.stats
            .runs_in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        debug!(outcome = ?result.outcome, "run finished");
        handle.end_run(record.run);
        self.writer.record(result, true);
    }
}
