//! Firing: what happens when the timer hands over a batch of due slots. The
//! schedule maths (catch-up after a stall, the slot after) and the catch-up
//! decision run here on the task as armed; the store then applies each
//! firing as one atomic step and says what to do. No lock is held across an
//! await: the store's step is the only synchronisation with control calls,
//! through the task's version.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, warn};

use super::{
    FIRING_RETRY, Inner, run,
    runs::{Held, Started},
    timer::Armed,
};
use crate::{
    stats::{HerdAtInstant, Starting, Stats},
    store::{Dispatch, Fire, Fired, Firing, RunPhase},
    task::{Outcome, TaskState, occurrence_id},
};

/// Most due slots per store call: a herd is fired in few calls, and a
/// control call waiting for the store lock waits for one chunk at most.
const FIRE_CHUNK: usize = 1024;

/// Chunks of one batch whose store steps are under way at once.
const CHUNKS_IN_FLIGHT: usize = 3;

/// Due slots fired at once from which a batch is a herd: the result writer
/// waits for a herd's runs to start before recording results (see
/// [`Stats::starting_runs`]). Smaller batches, the steady trickle of
/// spread-out schedules, do not hold results back: a writer that waited
/// for each of them made its batches bigger, and on Redis a bigger batch is
/// a longer script that the next firing waits behind (10,000 tasks at
/// random phases: p99 lateness 3 -> 9 ms, measured).
pub(super) const HERD: usize = 256;

/// A slot fired less than this after it was due is on time, not missed,
/// whatever its task's catch-up window: every firing is a little late (the
/// timer's wake-up; a herd fired a chunk at a time, about 0.1 s for 10,000
/// tasks due at once, see benches/README.md), and a window of 0s must not
/// skip those. Not more: a firing retried after a store error
/// (`FIRING_RETRY`, 1 s) is late, as the proto promises for an outage.
/// Part of the API contract (`TaskSpec.catchup_window`).
const ON_TIME_SLACK: Duration = Duration::from_secs(1);

/// A herd fired ahead: its instant, and its count as a herd from then.
struct Ahead {
    at: DateTime<Utc>,
    herd: Arc<HerdAtInstant>,
}

impl Inner {
    /// Fires the due slots of `batch`, a chunk per store call; `ahead`: a
    /// herd fired ahead of that instant, at which its runs start.
    pub(super) async fn fire_batch(
        self: &Arc<Self>,
        batch: Vec<Armed>,
        ahead: Option<DateTime<Utc>>,
    ) {
        let herd = (batch.len() >= HERD).then(|| self.stats.starting());
        // Its runs wait for `at`, and count as a herd from then on.
        let ahead = ahead.map(|at| Ahead {
            at,
            herd: HerdAtInstant::new(&self.stats),
        });
        // A few chunks in flight at once: one chunk's store step waits on
        // Redis while the next is planned and sent.
        let mut in_flight = futures::stream::FuturesUnordered::new();
        for chunk in batch.chunks(FIRE_CHUNK) {
            if self.stopping.is_cancelled() {
                break;
            }
            if in_flight.len() == CHUNKS_IN_FLIGHT {
                in_flight.next().await;
            }
            in_flight.push(self.fire_chunk(chunk, herd.as_ref(), ahead.as_ref()));
        }
        while in_flight.next().await.is_some() {}
    }

    async fn fire_chunk(
        self: &Arc<Self>,
        chunk: &[Armed],
        herd: Option<&Starting>,
        ahead: Option<&Ahead>,
    ) {
        // Ahead of a herd's instant, every decision is the one due then.
        let now = ahead.map_or_else(|| self.clock.now(), |ahead| ahead.at);
        let mut firings: Vec<Firing> = chunk.iter().map(|armed| plan(armed, now)).collect();
        let mut slots: Vec<Option<OwnedSemaphorePermit>> = Vec::with_capacity(firings.len());
        // What each run fired ahead waits with; empty when not ahead.
        let mut held: Vec<Held> = Vec::new();
        if let Some(ahead) = ahead {
            for (firing, armed) in firings.iter_mut().zip(chunk) {
                // Started in the firing step, each run waits for the
                // instant and takes its run slot then: the cap bounds
                // actions going, not runs waiting for their instant.
                firing.ahead = true;
                firing.start = firing.run;
                slots.push(None);
                // The task's count of pauses and cancels before the step,
                // to tell one that came after it. Holding the handle keeps
                // it registered (an idle one may be forgotten), so the
                // pause finds and counts on this one.
                let handle = self.registry.handle(&armed.id);
                held.push(Held {
                    at: ahead.at,
                    halts: handle.halts(),
                    handle,
                    herd: ahead.herd.clone(),
                });
            }
        } else {
            // A run slot for each firing that may start a run, while there
            // are free ones and no run waits for one (those go first): the
            // store then starts the run in the firing step itself, and it
            // runs at once instead of taking a second store step from the
            // queue.
            let mut free = self.stats.runs_waiting.load(Ordering::Acquire) == 0;
            for firing in &mut firings {
                let slot = (free && firing.run)
                    .then(|| self.run_slots.clone().try_acquire_owned().ok())
                    .flatten();
                free &= !firing.run || slot.is_some();
                firing.start = slot.is_some();
                slots.push(slot);
            }
        }
        // What is needed after the store consumed the batch.
        let planned: Vec<_> = firings.iter().map(|f| f.slot).collect();
        let fired = match self.store.fire(firings).await {
            Ok(fired) => fired,
            Err(error) => {
                // Nothing of the chunk was applied: every task is still
                // armed at its slot in the store, so arming it again here
                // to retry shortly loses no slot and leaves none stuck.
                warn!(%error, slots = chunk.len(), "firing failed, retrying the slots");
                // From the clock, not from a herd's instant: a herd fired
                // ahead is retried before it is late.
                let retry_at = self.clock.now() + FIRING_RETRY;
                for armed in chunk {
                    let retry = Armed {
                        retry: true,
                        at_instant: true,
                        ..armed.clone()
                    };
                    self.timer.set(retry, retry_at);
                }
                return;
            }
        };
        let mut held = held.into_iter();
        for (((armed, slot), fired), run_slot) in chunk.iter().zip(planned).zip(fired).zip(slots) {
            let task_id = &armed.id;
            let held = held.next();
            match fired {
                // Gone, or changed since it was armed: whoever changed it
                // armed it again (a retry of a firing that did apply is
                // answered as Done, not Stale). Arming here as well could
                // hand the same slot out twice.
                Fired::Stale => {}
                Fired::NotAhead => {
                    // A run in flight: fired at its instant, where its
                    // overlap policy decides.
                    let at_instant = Armed {
                        at_instant: true,
                        ..armed.clone()
                    };
                    self.timer.set(at_instant, now);
                }
                Fired::AlreadyClaimed(fire) => {
                    warn!(task_id = %task_id, slot = %slot.to_rfc3339(), "slot already claimed, not run again");
                    self.apply_fire(fire, run_slot, herd, None);
                }
                Fired::Done(fire) => {
                    Stats::add(&self.stats.fired, 1);
                    // What the store applied, not what was planned: a retry
                    // replayed gets the first attempt's decision.
                    if fire.passed > 0 {
                        let why = if matches!(fire.dispatch, Dispatch::PassedOver) {
                            warn!(task_id = %task_id, slot = %slot.to_rfc3339(), skipped = fire.passed, "runner fell behind, ran no missed slot (catch-up window)");
                            "missed (the server was behind); none ran: the latest was older than the catch-up window"
                        } else {
                            warn!(task_id = %task_id, slot = %slot.to_rfc3339(), skipped = fire.passed, "runner fell behind, ran the latest slot only");
                            "missed (the server was behind); catch-up ran only the latest slot"
                        };
                        // The armed slot is the first one missed.
                        self.writer.record(
                            run::caught_up(task_id.clone(), armed.slot, fire.passed, now, why),
                            false,
                        );
                    }
                    if matches!(fire.dispatch, Dispatch::Skipped) {
                        debug!(task_id = %task_id, slot = %slot.to_rfc3339(), "slot skipped, a run is still in flight");
                        self.writer.record(
                            run::skipped(
                                task_id.clone(),
                                slot,
                                now,
                                "a run was still in flight (overlap policy)",
                            ),
                            false,
                        );
                    }
                    self.apply_fire(fire, run_slot, herd, held);
                }
            }
        }
    }

    /// Carries out what the store decided for a firing or a trigger: arm
    /// the task at its new slot, cancel and record what the policy
    /// displaced, run or queue the new run, announce the end of a finished
    /// task. `run_slot` is the run slot the firing held, if any; `herd`
    /// the herd the firing belongs to, if it is one (held until the run
    /// begins); `held` what a run fired ahead waits with.
    pub(super) fn apply_fire(
        self: &Arc<Self>,
        fire: Fire,
        run_slot: Option<OwnedSemaphorePermit>,
        herd: Option<&Starting>,
        held: Option<Held>,
    ) {
        let Fire {
            task,
            dispatch,
            passed: _,
            cancel,
            dropped,
            ended,
        } = fire;
        self.arm(&task);
        if !cancel.is_empty()
            && let Some(handle) = self.registry.get(&task.id)
        {
            for run in cancel {
                handle.cancel_run(run);
            }
        }
        let now = self.clock.now();
        for run in &dropped {
            self.writer.record(
                run::dropped(
                    run,
                    Outcome::Cancelled,
                    now,
                    "cancelled before it started (overlap policy CANCEL_RUNNING)",
                ),
                false,
            );
        }
        if let Dispatch::Start(start) = dispatch {
            if start.record.phase == RunPhase::Running {
                // Started by the firing step: it runs now.
                self.run_queue.started(Started {
                    start,
                    slot: run_slot,
                    // A run fired ahead counts in its herd from the instant.
                    herd: herd.filter(|_| held.is_none()).cloned(),
                    held,
                });
            } else {
                self.run_queue.push(start);
            }
        }
        if task.state == TaskState::Completed {
            debug!(task_id = %task.id, "task completed");
        }
        if ended {
            self.writer.ended(task.id.clone());
        }
    }
}

/// Plans the firing of `armed` at `now`. After missed slots (downtime, a
/// stall, a store outage, a clock jump) it fires once, for the latest slot
/// that has passed, passing over the ones before; the task's catch-up
/// window decides whether that latest slot still runs or is passed over
/// too. Either way the task moves on to the slot after it.
fn plan(armed: &Armed, now: DateTime<Utc>) -> Firing {
    let schedule = &armed.spec.schedule;
    let (slot, passed) = schedule
        .latest_due_slot(
            armed.created_at,
            armed.slot - chrono::Duration::nanoseconds(1),
            now,
        )
        .unwrap_or((armed.slot, 0));
    let due = schedule.due_at(armed.id.as_str(), slot);
    let run = runs_when_late(armed.spec.catchup_window, now - due);
    Firing {
        task_id: armed.id.clone(),
        version: armed.version,
        armed_slot: armed.slot,
        slot,
        run,
        passed: if run { passed } else { passed.saturating_add(1) },
        next: schedule.next_slot_after(armed.created_at, slot),
        occurrence_id: occurrence_id(&armed.id, slot),
        now,
        retry: armed.retry,
        // Set by the caller, which holds the run slots.
        start: false,
        ahead: false,
    }
}

/// Whether a slot fired `late` after it was due still runs under catch-up
/// `window` (None: however late). On time is never late: see
/// [`ON_TIME_SLACK`].
fn runs_when_late(window: Option<Duration>, late: chrono::Duration) -> bool {
    // Negative when a stalled firing reaches the latest slot before its
    // jitter has passed: not late at all.
    let late = late.to_std().unwrap_or(Duration::ZERO);
    late < ON_TIME_SLACK || window.is_none_or(|window| late <= window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        scheduler::schedule::{Limits, Schedule, ScheduleInput},
        task::{Action, CustomAction, OverlapPolicy, RetryPolicy, TaskId, TaskSpec},
    };

    fn at(millis: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(millis)
    }

    /// A task every 10 s from t = 0 with `window` (and `jitter`), armed for
    /// its slot at 10 s.
    fn armed(window: Option<Duration>, jitter: Duration) -> Armed {
        let schedule = Schedule::from_input(
            ScheduleInput {
                every: Some(Duration::from_secs(10)),
                jitter,
                ..ScheduleInput::default()
            },
            &Limits::default(),
        )
        .expect("valid schedule");
        Armed {
            id: TaskId::parse("t").expect("valid id"),
            slot: at(10_000),
            version: 3,
            created_at: at(0),
            spec: Arc::new(TaskSpec {
                schedule,
                action: Action::Custom(CustomAction {
                    kind: "k".into(),
                    payload: Default::default(),
                }),
                timeout: Duration::from_secs(1),
                overlap: OverlapPolicy::Skip,
                retry: RetryPolicy::default(),
                labels: Default::default(),
                catchup_window: window,
            }),
            retry: false,
            at_instant: false,
        }
    }

    /// What the planner decides: the slot claimed, whether it runs, the
    /// slots passed over, the next slot.
    fn decided(f: &Firing) -> (DateTime<Utc>, bool, u64, Option<DateTime<Utc>>) {
        (f.slot, f.run, f.passed, f.next)
    }

    #[test]
    fn on_time_the_armed_slot_runs_under_every_window() {
        for window in [None, Some(Duration::ZERO), Some(Duration::from_secs(5))] {
            // Just under the slack after the slot: still on time.
            let f = plan(&armed(window, Duration::ZERO), at(10_999));
            assert_eq!(
                decided(&f),
                (at(10_000), true, 0, Some(at(20_000))),
                "{window:?}"
            );
        }
    }

    #[test]
    fn unset_runs_the_latest_missed_slot_however_late() {
        // Slots 10, 20, 30 s missed; fired 9 s after the latest.
        let f = plan(&armed(None, Duration::ZERO), at(39_000));
        assert_eq!(decided(&f), (at(30_000), true, 2, Some(at(40_000))));
        assert_eq!(f.occurrence_id, occurrence_id(&f.task_id, at(30_000)));
    }

    #[test]
    fn zero_passes_over_every_missed_slot() {
        let f = plan(&armed(Some(Duration::ZERO), Duration::ZERO), at(39_000));
        assert_eq!(decided(&f), (at(30_000), false, 3, Some(at(40_000))));
        // The armed slot alone, one second late: missed, passed over.
        let f = plan(&armed(Some(Duration::ZERO), Duration::ZERO), at(11_000));
        assert_eq!(decided(&f), (at(10_000), false, 1, Some(at(20_000))));
    }

    #[test]
    fn a_window_runs_the_latest_slot_only_while_it_covers_it() {
        let window = Some(Duration::from_secs(5));
        let covered = plan(&armed(window, Duration::ZERO), at(35_000));
        assert_eq!(decided(&covered), (at(30_000), true, 2, Some(at(40_000))));
        let too_late = plan(&armed(window, Duration::ZERO), at(35_001));
        assert_eq!(decided(&too_late), (at(30_000), false, 3, Some(at(40_000))));
    }

    #[test]
    fn lateness_counts_from_the_jittered_due_time() {
        let jitter = Duration::from_secs(3);
        let task = armed(Some(Duration::ZERO), jitter);
        let due = task.spec.schedule.due_at("t", at(30_000));
        assert!(due > at(30_000), "the test needs a jitter above zero");
        // On time for its due time, though later than its nominal slot.
        let f = plan(&task, due + chrono::Duration::milliseconds(999));
        assert_eq!(decided(&f), (at(30_000), true, 2, Some(at(40_000))));
        let f = plan(&task, due + chrono::Duration::seconds(1));
        assert!(!f.run, "one second after it was due is late");
    }
}
