//! Runs: a queue of dispatched runs and a fixed number of slots for runs in
//! flight (`max_runs_in_flight`). A run waits in the queue, not as a task,
//! so a herd of 100,000 costs 100,000 small records rather than as many
//! futures; waiting is counted in the engine summary. A run waiting for a
//! slot is not yet in flight: the store's `start_runs` step refuses one
//! that pause or cancel dropped meanwhile. Runs are started in waves: every
//! run that is queued and has a free slot goes through one store step.

use std::sync::{Arc, atomic::Ordering};

use chrono::{DateTime, Utc};

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, warn};

use super::{Inner, registry::TaskHandle, run};
use crate::{
    stats::{HerdAtInstant, Starting, Stats},
    store::RunStart,
    task::{Outcome, Trigger},
};

/// Most runs started by one store step.
const START_WAVE: usize = 1024;

/// Where dispatched runs wait for a slot: firing, triggers and the
/// writer's promoted buffered runs all enter through [`RunQueue::push`],
/// which counts them as waiting.
#[derive(Clone)]
pub(super) struct RunQueue {
    tx: mpsc::UnboundedSender<RunStart>,
    started: mpsc::UnboundedSender<Started>,
    stats: Arc<Stats>,
}

/// A run the store started in a firing step.
pub(super) struct Started {
    pub start: RunStart,
    /// The run slot the firing held for it (None: it takes one when it
    /// begins).
    pub slot: Option<OwnedSemaphorePermit>,
    /// The herd it belongs to, if any.
    pub herd: Option<Starting>,
    /// Fired ahead of its instant: what it waits with.
    pub held: Option<Held>,
}

/// What a run fired ahead of its instant waits with (see
/// [`Inner::held_run`]).
pub(super) struct Held {
    /// The instant it begins at.
    pub at: DateTime<Utc>,
    /// Its task's handle, and the pauses and cancels counted on it before
    /// the firing step.
    pub handle: Arc<TaskHandle>,
    pub halts: u64,
    /// Its herd, counted from the instant.
    pub herd: Arc<HerdAtInstant>,
}

/// The receiving ends of a [`RunQueue`].
pub(super) struct RunQueueRx {
    queued: mpsc::UnboundedReceiver<RunStart>,
    started: mpsc::UnboundedReceiver<Started>,
}

impl RunQueue {
    pub(super) fn new(stats: Arc<Stats>) -> (RunQueue, RunQueueRx) {
        let (tx, queued) = mpsc::unbounded_channel();
        let (started_tx, started) = mpsc::unbounded_channel();
        (
            RunQueue {
                tx,
                started: started_tx,
                stats,
            },
            RunQueueRx { queued, started },
        )
    }

    /// Hands over a run the store already started, to be spawned off the
    /// firing loop: at 100,000 runs a second, spawning them on it made it
    /// fall behind (measured).
    pub(super) fn started(&self, started: Started) {
        // As for `push`: gone only at shutdown; the run is then reported
        // abandoned at the next start.
        let _ = self.started.send(started);
    }

    /// Queues a dispatched run to start when a slot is free.
    pub(super) fn push(&self, start: RunStart) {
        Stats::add(&self.stats.runs_waiting, 1);
        // The receiver lives until shutdown; a run queued after that was
        // never going to start.
        let _ = self.tx.send(start);
    }
}

impl Inner {
    /// Spawns the runs firing started and starts queued runs as slots free
    /// up, until the scheduler stops.
    pub(super) fn spawn_run_loops(self: &Arc<Self>, rx: RunQueueRx) {
        self.tracker.spawn(self.clone().started_loop(rx.started));
        self.tracker.spawn(self.clone().dispatch_loop(rx.queued));
    }

    /// Runs the runs firing started.
    async fn started_loop(self: Arc<Self>, mut started: mpsc::UnboundedReceiver<Started>) {
        let mut batch = Vec::new();
        loop {
            let more = tokio::select! {
                biased;
                _ = self.stopping.cancelled() => {
                    // Those handed over already still run (cancelled at
                    // once, since shutdown began), as they would have had
                    // firing run them itself: their results are recorded.
                    while let Ok(run) = started.try_recv() {
                        self.run_started(run);
                    }
                    return;
                }
                n = started.recv_many(&mut batch, START_WAVE) => n,
            };
            if more == 0 {
                return;
            }
            for run in batch.drain(..) {
                self.run_started(run);
            }
        }
    }

    /// Starts queued runs as slots free up, until the scheduler stops.
    async fn dispatch_loop(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<RunStart>) {
        let slots = self.run_slots.clone();
        let mut wave: Vec<RunStart> = Vec::new();
        let mut wave_slots: Vec<OwnedSemaphorePermit> = Vec::new();
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
            wave.push(start);
            wave_slots.push(slot);
            // Everything else already queued that has a free slot joins.
            while wave.len() < START_WAVE {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    break;
                };
                match queue.try_recv() {
                    Ok(start) => {
                        wave.push(start);
                        wave_slots.push(slot);
                    }
                    Err(_) => break,
                }
            }
            self.stats
                .runs_waiting
                .fetch_sub(wave.len() as u64, Ordering::Relaxed);
            let herd = (wave.len() >= super::firing::HERD).then(|| self.stats.starting());
            self.start_wave(&mut wave, &mut wave_slots, herd).await;
        }
    }

    /// Marks a wave of runs running in one store step and spawns those that
    /// were not dropped meanwhile; leaves both vectors empty.
    async fn start_wave(
        self: &Arc<Self>,
        wave: &mut Vec<RunStart>,
        slots: &mut Vec<OwnedSemaphorePermit>,
        herd: Option<Starting>,
    ) {
        // Tokens first, so a CANCEL_RUNNING decided as soon as the store
        // says "running" finds the token to cancel.
        let tokens: Vec<CancellationToken> = wave
            .iter()
            .map(|start| {
                self.registry
                    .handle(&start.record.task_id)
                    .start_run(start.record.run)
            })
            .collect();
        let started = self.store.start_runs(wave).await;
        for (i, ((start, slot), token)) in wave.drain(..).zip(slots.drain(..)).zip(tokens).enumerate() {
            let record = &start.record;
            match &started {
                Ok(started) if started.get(i).copied() == Some(true) => {
                    self.spawn_run(start, token, Some(slot), herd.clone());
                }
                Ok(_) => {
                    // Dropped by pause or cancel while it waited; they
                    // recorded it. Its task may be gone since.
                    self.end_token(record);
                    self.registry.forget_if_idle(&record.task_id);
                }
                Err(error) => {
                    warn!(task_id = %record.task_id, run = record.run, %error, "run not started: the store could not mark it running");
                    self.end_token(record);
                    let mut result = run::dropped(
                        record,
                        Outcome::Failed,
                        self.clock.now(),
                        "not started: the store could not mark it running",
                    );
                    result.error = format!("{} ({error})", result.error);
                    self.writer.record_run(result, record);
                }
            }
        }
    }

    fn spawn_run(
        self: &Arc<Self>,
        start: RunStart,
        token: CancellationToken,
        slot: Option<OwnedSemaphorePermit>,
        herd: Option<Starting>,
    ) {
        let record = &start.record;
        let span = run_span(record);
        let inner = self.clone();
        self.tracker
            .spawn(async move { inner.run(start, token, slot, herd).await }.instrument(span));
    }

    /// Runs a run the store started already (in a firing step): with the
    /// slot the firing held; or, fired ahead, at its instant (see
    /// [`Inner::held_run`]); or, when the firing held no slot (a retried
    /// firing answered as the first try was, which held one), once a slot
    /// frees.
    pub(super) fn run_started(self: &Arc<Self>, started: Started) {
        let Started {
            start,
            slot,
            herd,
            held,
        } = started;
        // The token is made after the store step, unlike a queued run's: a
        // CANCEL_RUNNING decided in between is kept by the task's handle
        // and applied here (see `TaskHandle::cancel_run`).
        let token = match &held {
            Some(held) => held.handle.start_run(start.record.run),
            None => self
                .registry
                .handle(&start.record.task_id)
                .start_run(start.record.run),
        };
        match (slot, held) {
            (Some(slot), None) => self.spawn_run(start, token, Some(slot), herd),
            (slot, Some(held)) => {
                let inner = self.clone();
                self.tracker
                    .spawn(async move { inner.held_run(start, token, slot, held).await });
            }
            (None, None) => {
                // It may wait long for a slot: the herd does not wait for it.
                drop(herd);
                let inner = self.clone();
                self.tracker.spawn(async move {
                    let slot = tokio::select! {
                        _ = inner.stopping.cancelled() => None,
                        slot = inner.run_slots.clone().acquire_owned() => slot.ok(),
                    };
                    match slot {
                        Some(slot) => inner.spawn_run(start, token, Some(slot), None),
                        // Stopping: the run stays running in the store and
                        // is reported abandoned at the next start.
                        None => inner.end_token(&start.record),
                    }
                });
            }
        }
    }

    /// A run fired ahead of its instant: waits for it, then takes a run
    /// slot and runs, unless before it began the task was paused (dropped,
    /// SKIPPED, as a queued run is), cancelled (CANCELLED before it
    /// started, as any run of a cancelled task) or the server began to stop
    /// (SKIPPED: a slot due after shutdown began is not run). A pause is
    /// told by the task's count of pauses and cancels, read before the
    /// firing step: one applied after that step (which the step did not
    /// see) has counted one more by the time it returns to its caller.
    async fn held_run(
        self: Arc<Self>,
        start: RunStart,
        token: CancellationToken,
        slot: Option<OwnedSemaphorePermit>,
        held: Held,
    ) {
        let Held {
            at,
            handle,
            halts,
            herd,
        } = held;
        let paused = || !token.is_cancelled() && handle.halts() != halts;
        let stopped = tokio::select! {
            biased;
            _ = self.stopping.cancelled() => true,
            _ = token.cancelled() => false,
            _ = tokio::time::sleep_until(self.clock.wake_at(at)) => false,
        };
        if stopped {
            return self.skip_held(&start, "the server began to stop before the run's slot");
        }
        if paused() {
            return self.skip_held(&start, "the task was paused before the run started");
        }
        // Counted as a herd from here until it begins.
        let herd = herd.begin();
        let (slot, herd) = match slot {
            Some(slot) => (Some(slot), Some(herd)),
            // A cancelled run needs no slot to report so.
            None if token.is_cancelled() => (None, Some(herd)),
            None => match self.run_slots.clone().try_acquire_owned() {
                Ok(slot) => (Some(slot), Some(herd)),
                Err(_) => {
                    // It waits for a slot: the herd does not wait for it.
                    drop(herd);
                    let slot = tokio::select! {
                        biased;
                        _ = self.stopping.cancelled() => {
                            return self.skip_held(&start, "the server began to stop before the run started");
                        }
                        _ = token.cancelled() => None,
                        slot = self.run_slots.clone().acquire_owned() => slot.ok(),
                    };
                    if paused() {
                        return self.skip_held(&start, "the task was paused before the run started");
                    }
                    (slot, None)
                }
            },
        };
        let record = &start.record;
        let span = run_span(record);
        self.run(start, token, slot, herd).instrument(span).await;
    }

    /// Records a run fired ahead that will not start as SKIPPED, `why`.
    fn skip_held(&self, start: &RunStart, why: &str) {
        self.end_token(&start.record);
        let result = run::dropped(&start.record, Outcome::Skipped, self.clock.now(), why);
        self.writer.record_run(result, &start.record);
    }

    fn end_token(&self, record: &crate::store::RunRecord) {
        if let Some(handle) = self.registry.get(&record.task_id) {
            handle.end_run(record.run);
        }
    }

    async fn run(
        self: Arc<Self>,
        start: RunStart,
        token: CancellationToken,
        // Held while the run goes; None only for a run cancelled before it
        // took one.
        _slot: Option<OwnedSemaphorePermit>,
        herd: Option<Starting>,
    ) {
        // Shutdown may have begun while it waited.
        if self.stopping.is_cancelled() {
            token.cancel();
        }
        debug!("run started");
        // Begun (`started_at` is taken as the action is called, at once).
        drop(herd);
        Stats::add(&self.stats.runs_in_flight, 1);
        if start.record.trigger == Trigger::Scheduled && !token.is_cancelled() {
            // Observed now, as the first attempt begins (execute takes
            // `started_at` at once), not when the run ends: a long run
            // must not hold back what an alert on lateness sees. From
            // when it was due, jitter included: the jitter is the
            // schedule's choice, not the scheduler's delay.
            let slot = start.record.scheduled_at;
            let jitter = start.spec.schedule.jitter_for(start.record.task_id.as_str(), slot);
            let late = (self.clock.now() - slot).to_std().unwrap_or_default();
            crate::stats::observe(&self.stats.start_lateness, late.saturating_sub(jitter));
        }
        let result = run::execute(&self.actions, &self.clock, &start, token).await;
        self.stats.runs_in_flight.fetch_sub(1, Ordering::Relaxed);
        debug!(outcome = ?result.outcome, "run finished");
        self.end_token(&start.record);
        self.writer.record_run(result, &start.record);
    }
}

/// The span a run goes in: what a trace of it is searched by. DEBUG, so
/// the text log (INFO) pays nothing for it; `--otlp-endpoint` exports it.
fn run_span(record: &crate::store::RunRecord) -> tracing::Span {
    debug_span!(
        "run",
        task_id = %record.task_id,
        run = record.run,
        occurrence_id = %record.occurrence_id,
        trigger = ?record.trigger,
    )
}
