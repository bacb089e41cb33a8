//! One run: its attempts, each bounded by the task's timeout, retried with
//! backoff until the retry budget or the next slot, and abandoned as soon as
//! the run's token is cancelled.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::clock::Clock;
use crate::{
    action::{Actions, Attempt, Output},
    store::{RunRecord, RunStart},
    task::{Outcome, TaskId, TaskResult, Trigger, occurrence_id},
};

/// Runs `start` to its end and returns its result (cursor not yet set).
/// `started_at` is taken at the first attempt, after any wait for a slot
/// under the cap, so lateness shows that wait.
pub(crate) async fn execute(
    actions: &Actions,
    clock: &Clock,
    start: &RunStart,
    token: CancellationToken,
) -> TaskResult {
    let RunStart { record: plan, spec } = start;
    let occurrence = &plan.occurrence_id;
    let mut started_at = None;
    let mut attempt = 0;
    let mut last_output = Output::default();
    let mut latency = Duration::ZERO;
    let (outcome, error) = loop {
        if token.is_cancelled() {
            break (
                Outcome::Cancelled,
                "run was cancelled before it started".to_string(),
            );
        }
        attempt += 1;
        started_at.get_or_insert_with(|| clock.now());
        let info = Attempt {
            task_id: plan.task_id.clone(),
            occurrence_id: occurrence.clone(),
            run: plan.run,
            attempt,
            scheduled_at: plan.scheduled_at,
            cancel: token.clone(),
        };
        let began = tokio::time::Instant::now();
        let attempt_span = tracing::debug_span!("attempt", attempt);
        let result = tokio::select! {
            biased;
            _ = token.cancelled() => None,
            r = tokio::time::timeout(spec.timeout, actions.run(&spec.action, &info)).instrument(attempt_span) => Some(r),
        };
        latency = began.elapsed();
        let (outcome, error) = match result {
            None => break (Outcome::Cancelled, "run was cancelled".to_string()),
            Some(Ok(Ok(output))) => {
                last_output = output;
                break (Outcome::Succeeded, String::new());
            }
            Some(Ok(Err(failure))) => {
                last_output = failure.output;
                (Outcome::Failed, failure.message)
            }
            Some(Err(_)) => {
                last_output = Output::default();
                (
                    Outcome::TimedOut,
                    format!("attempt timed out after {:?}", spec.timeout),
                )
            }
        };
        if attempt >= spec.retry.max_attempts.max(1) {
            break (outcome, error);
        }
        let backoff = spec.retry.backoff(attempt + 1);
        if let Some(deadline) = plan.retry_deadline {
            let retry_at = clock.now().checked_add_signed(
                chrono::Duration::from_std(backoff).unwrap_or(chrono::Duration::MAX),
            );
            if retry_at.is_none_or(|at| at >= deadline) {
                break (
                    outcome,
                    format!("{error} (no retry: the next slot comes first)"),
                );
            }
        }
        tracing::debug!(task_id = %plan.task_id, run = plan.run, attempt, backoff_ms = backoff.as_millis() as u64, "attempt failed, retrying");
        tokio::select! {
            biased;
            _ = token.cancelled() => break (Outcome::Cancelled, format!("run was cancelled after: {error}")),
            _ = tokio::time::sleep(backoff) => {}
        }
    };
    TaskResult {
        task_id: plan.task_id.clone(),
        run: plan.run,
        cursor: String::new(),
        scheduled_at: plan.scheduled_at,
        started_at,
        finished_at: clock.now(),
        outcome,
        attempts: attempt,
        trigger: plan.trigger,
        error,
        output: last_output.body,
        output_truncated: last_output.truncated,
        http_status: last_output.http_status,
        occurrence_id: occurrence.clone(),
        latency,
        skipped_slots: 0,
        claim_lapsed: false,
        executor: Default::default(),
        wire: Default::default(),
    }
}

/// The result recorded for a run dropped before it started (pause: SKIPPED,
/// cancel: CANCELLED).
pub(crate) fn dropped(
    run: &RunRecord,
    outcome: Outcome,
    now: DateTime<Utc>,
    why: &str,
) -> TaskResult {
    TaskResult {
        task_id: run.task_id.clone(),
        run: run.run,
        cursor: String::new(),
        scheduled_at: run.scheduled_at,
        started_at: None,
        finished_at: now,
        outcome,
        attempts: 0,
        trigger: run.trigger,
        error: why.to_string(),
        output: Default::default(),
        output_truncated: false,
        http_status: 0,
        occurrence_id: run.occurrence_id.clone(),
        latency: Duration::ZERO,
        skipped_slots: 0,
        claim_lapsed: false,
        executor: Default::default(),
        wire: Default::default(),
    }
}

/// The result recorded for a slot the overlap policy skipped.
pub(crate) fn skipped(
    task_id: TaskId,
    slot: DateTime<Utc>,
    now: DateTime<Utc>,
    why: &str,
) -> TaskResult {
    TaskResult {
        occurrence_id: occurrence_id(&task_id, slot),
        task_id,
        run: 0,
        cursor: String::new(),
        scheduled_at: slot,
        started_at: None,
        finished_at: now,
        outcome: Outcome::Skipped,
        attempts: 0,
        trigger: Trigger::Scheduled,
        error: why.to_string(),
        output: Default::default(),
        output_truncated: false,
        http_status: 0,
        latency: Duration::ZERO,
        skipped_slots: 0,
        claim_lapsed: false,
        executor: Default::default(),
        wire: Default::default(),
    }
}

/// The one result recorded for the `slots` missed slots a catch-up decision
/// passed over, `first` the earliest of them: one result per decision, not
/// one per slot, so a long outage of a frequent task does not flood the
/// result log (and every stream) when the server comes back.
pub(crate) fn caught_up(
    task_id: TaskId,
    first: DateTime<Utc>,
    slots: u64,
    now: DateTime<Utc>,
    why: &str,
) -> TaskResult {
    TaskResult {
        skipped_slots: slots,
        claim_lapsed: false,
        ..skipped(task_id, first, now, why)
    }
}
