//! Tasks and results as the Redis store writes them: protobuf, with the
//! public `recur.v1` messages for the spec and results, so a stored task
//! reads back through the same validation a client's spec goes through.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use prost::Message;

use super::proto;
use crate::{
    api::convert::{result_to_proto, spec_to_proto_unredacted, summary_to_proto, trigger_to_proto},
    pb::v1 as pb,
    secrets::{KeyError, SecretKeys},
    store::{
        RunPhase, RunRecord,
        stored::{LastFire, LastHalt, LastTrigger, Owed, Stored},
    },
    task::{
        Health, Outcome, RunSummary, TaskId, TaskRecord, TaskResult, TaskSpec, TaskState, Trigger,
    },
};

/// Turns a stored spec back into a domain spec. Given by the server, which
/// knows the handlers and limits; limits that tightened since a task was
/// stored must not make it unreadable, so the server relaxes them here.
pub type SpecDecoder = Arc<dyn Fn(pb::TaskSpec) -> Result<TaskSpec, String> + Send + Sync>;

/// Gives the spec a stored task's spec field stands for, given the field
/// as stored and decoded (the store reuses the spec it holds for the same
/// field rather than validate it again).
pub(super) type SpecOf<'a> =
    dyn Fn(&TaskId, &[u8], pb::TaskSpec) -> Result<Arc<TaskSpec>, String> + 'a;

/// The spec field of a stored task (`StoredTask.spec`, tag and length
/// included), encoded once per spec: a task is written at every step, its
/// spec only when it changes.
/// With `keys`, header values are encrypted in it.
pub(super) fn spec_field(
    spec: &TaskSpec,
    keys: Option<&SecretKeys>,
) -> Result<Arc<[u8]>, KeyError> {
    let mut raw = spec_to_proto_unredacted(spec);
    if let Some(keys) = keys {
        keys.seal_spec(&mut raw)?;
    }
    Ok(raw_spec_field(&raw))
}

fn raw_spec_field(spec: &pb::TaskSpec) -> Arc<[u8]> {
    let mut field = Vec::with_capacity(spec.encoded_len() + 8);
    prost::encoding::message::encode(SPEC_TAG, spec, &mut field);
    field.into()
}

/// `StoredTask.spec`'s field number.
const SPEC_TAG: u32 = 2;

fn time(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos().min(999_999_999) as i32,
    }
}

fn from_time(t: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

fn required_time(t: Option<prost_types::Timestamp>, field: &str) -> Result<DateTime<Utc>, String> {
    from_time(t).ok_or_else(|| format!("{field} missing or out of range"))
}

fn state(s: TaskState) -> pb::TaskState {
    match s {
        TaskState::Active => pb::TaskState::Active,
        TaskState::Paused => pb::TaskState::Paused,
        TaskState::Cancelled => pb::TaskState::Cancelled,
        TaskState::Completed => pb::TaskState::Completed,
    }
}

fn from_state(raw: i32) -> Result<TaskState, String> {
    Ok(match pb::TaskState::try_from(raw) {
        Ok(pb::TaskState::Active) => TaskState::Active,
        Ok(pb::TaskState::Paused) => TaskState::Paused,
        Ok(pb::TaskState::Cancelled) => TaskState::Cancelled,
        Ok(pb::TaskState::Completed) => TaskState::Completed,
        _ => return Err(format!("unknown task state {raw}")),
    })
}

fn from_trigger(raw: i32) -> Trigger {
    match pb::Trigger::try_from(raw) {
        Ok(pb::Trigger::Manual) => Trigger::Manual,
        _ => Trigger::Scheduled,
    }
}

fn run(r: &RunRecord) -> proto::StoredRun {
    proto::StoredRun {
        run: r.run,
        trigger: trigger_to_proto(r.trigger) as i32,
        scheduled_at: Some(time(r.scheduled_at)),
        occurrence_id: r.occurrence_id.clone(),
        retry_deadline: r.retry_deadline.map(time),
        phase: match r.phase {
            RunPhase::Queued => proto::RunPhase::Queued,
            RunPhase::Running => proto::RunPhase::Running,
            RunPhase::Buffered => proto::RunPhase::Buffered,
        } as i32,
        fence: r.fence,
        runner: r.runner.clone(),
    }
}

fn from_run(task_id: &TaskId, r: proto::StoredRun) -> Result<RunRecord, String> {
    Ok(RunRecord {
        task_id: task_id.clone(),
        run: r.run,
        trigger: from_trigger(r.trigger),
        scheduled_at: required_time(r.scheduled_at, "run.scheduled_at")?,
        occurrence_id: r.occurrence_id,
        retry_deadline: from_time(r.retry_deadline),
        phase: match proto::RunPhase::try_from(r.phase) {
            Ok(proto::RunPhase::Running) => RunPhase::Running,
            Ok(proto::RunPhase::Buffered) => RunPhase::Buffered,
            Ok(proto::RunPhase::Queued) => RunPhase::Queued,
            _ => return Err(format!("unknown run phase {}", r.phase)),
        },
        fence: r.fence,
        runner: r.runner,
    })
}

/// A task as its hash's `rec` field holds it: its state, then its spec
/// field as [`spec_field`] encoded it (protobuf fields may come in any
/// order, so this is the same message as one encoded in one go).
pub(super) fn encode_task(stored: &Stored, spec_field: &[u8]) -> Vec<u8> {
    let task = &stored.record;
    let state = proto::StoredTask {
        task_id: task.id.to_string(),
        spec: None,
        state: state(task.state) as i32,
        created_at: Some(time(task.created_at)),
        updated_at: Some(time(task.updated_at)),
        next_run_at: task.next_run_at.map(time),
        run_count: task.run_count,
        scheduled_run_count: task.scheduled_run_count,
        skipped_count: task.skipped_count,
        reason: task.reason.clone(),
        version: task.version,
        request_id: stored.request_id.clone().unwrap_or_default(),
        last_claimed: stored.last_claimed.map(time),
        runs: stored.runs.iter().map(run).collect(),
        owed: stored.owed.total() as u64,
        owed_by: stored
            .owed
            .parts()
            .iter()
            .filter(|(node, _)| !node.is_empty())
            .cloned()
            .collect(),
        // Appended below, encoded once per result.
        last_result: None,
        last_fire: stored.last_fire.as_ref().map(|f| proto::LastFire {
            version: f.version,
            armed_slot: Some(time(f.armed_slot)),
            run: f.run,
            skipped: f.skipped,
            cancel: f.cancel.clone(),
            dropped: f.dropped.iter().map(run).collect(),
            ended: f.ended,
            passed_over: f.passed_over,
            passed: f.passed,
            claimed_before: f.claimed_before,
            node: f.node.clone(),
        }),
        last_halt: stored.last_halt.as_ref().map(|h| proto::LastHalt {
            call: h.call.clone(),
            dropped: h.dropped.iter().map(run).collect(),
            ended: h.ended,
        }),
        last_trigger: stored.last_trigger.as_ref().map(|t| proto::LastTrigger {
            occurrence_id: t.occurrence_id.clone(),
            cancel: t.cancel.clone(),
            dropped: t.dropped.iter().map(run).collect(),
        }),
        failure_count: stored.health.failure_count,
        consecutive_failures: stored.health.consecutive_failures,
        last_success_at: stored.health.last_success_at.map(time),
        recent_runs: stored.health.recent.iter().map(summary_to_proto).collect(),
    };
    // The cursor lives in the hash's `lc` field: it is only known once the
    // log has the result, inside the recording script.
    let last = stored.last_result.as_deref().map(encode_result);
    let mut rec = Vec::with_capacity(
        state.encoded_len() + spec_field.len() + last.map_or(0, |l| l.len() + 8),
    );
    // Encoding into a Vec only fails for want of capacity, which a Vec grows.
    let _ = state.encode(&mut rec);
    rec.extend_from_slice(spec_field);
    if let Some(last) = last {
        // A message field is its tag, its length and its bytes; a decoder
        // takes fields in any order.
        prost::encoding::encode_key(
            LAST_RESULT_TAG,
            prost::encoding::WireType::LengthDelimited,
            &mut rec,
        );
        prost::encoding::encode_varint(last.len() as u64, &mut rec);
        rec.extend_from_slice(last);
    }
    rec
}

/// `StoredTask.last_result`'s field number.
const LAST_RESULT_TAG: u32 = 16;

/// Reads a task back, with its spec field; `last_cursor` is its last
/// result's cursor.
pub(super) fn decode_task(
    raw: &[u8],
    last_cursor: Option<String>,
    spec_of: &SpecOf<'_>,
) -> Result<(Stored, Arc<[u8]>), String> {
    let t = proto::StoredTask::decode(raw).map_err(|e| e.to_string())?;
    let id = TaskId::parse(&t.task_id)?;
    let raw_spec = t.spec.ok_or("spec missing")?;
    let field = raw_spec_field(&raw_spec);
    let spec = spec_of(&id, &field, raw_spec)?;
    let runs = t
        .runs
        .into_iter()
        .map(|r| from_run(&id, r))
        .collect::<Result<Vec<_>, _>>()?;
    let last_result = match t.last_result {
        Some(r) => {
            let mut result = decode_result(r)?;
            result.cursor = last_cursor.unwrap_or_default();
            Some(Arc::new(result))
        }
        None => None,
    };
    let last_trigger = match t.last_trigger {
        Some(l) => Some(LastTrigger {
            occurrence_id: l.occurrence_id,
            cancel: l.cancel,
            dropped: l
                .dropped
                .into_iter()
                .map(|r| from_run(&id, r))
                .collect::<Result<_, _>>()?,
        }),
        None => None,
    };
    let last_fire = match t.last_fire {
        Some(f) => Some(LastFire {
            version: f.version,
            armed_slot: required_time(f.armed_slot, "last_fire.armed_slot")?,
            run: f.run,
            skipped: f.skipped,
            cancel: f.cancel,
            dropped: f
                .dropped
                .into_iter()
                .map(|r| from_run(&id, r))
                .collect::<Result<_, _>>()?,
            ended: f.ended,
            passed_over: f.passed_over,
            passed: f.passed,
            claimed_before: f.claimed_before,
            node: f.node,
        }),
        None => None,
    };
    let last_halt = match t.last_halt {
        Some(h) => Some(LastHalt {
            call: h.call,
            dropped: h
                .dropped
                .into_iter()
                .map(|r| from_run(&id, r))
                .collect::<Result<_, _>>()?,
            ended: h.ended,
        }),
        None => None,
    };
    let stored = Stored {
        record: TaskRecord {
            id,
            spec,
            state: from_state(t.state)?,
            created_at: required_time(t.created_at, "created_at")?,
            updated_at: required_time(t.updated_at, "updated_at")?,
            next_run_at: from_time(t.next_run_at),
            run_count: t.run_count,
            scheduled_run_count: t.scheduled_run_count,
            skipped_count: t.skipped_count,
            last_result: None,
            active_runs: 0,
            reason: t.reason,
            version: t.version,
            health: Default::default(),
        },
        request_id: (!t.request_id.is_empty()).then_some(t.request_id),
        last_claimed: from_time(t.last_claimed),
        runs,
        owed: {
            // What no node is named for (a record of format 1) belongs to
            // no live replica: `UNATTRIBUTED` is no runner's name, so the
            // next start or lapse gives it up as lost, and no step claims
            // it as its own.
            let named: u64 = t.owed_by.values().sum();
            Owed::from_parts(t.owed_by.into_iter().chain(std::iter::once((
                UNATTRIBUTED.to_string(),
                t.owed.saturating_sub(named),
            ))))
        },
        last_result,
        health: Arc::new(Health {
            failure_count: t.failure_count,
            consecutive_failures: t.consecutive_failures,
            last_success_at: from_time(t.last_success_at),
            recent: t
                .recent_runs
                .into_iter()
                .map(from_summary)
                .collect::<Result<_, _>>()?,
        }),
        last_fire,
        last_halt,
        last_trigger,
    };
    Ok((stored, field))
}

fn from_outcome(raw: i32) -> Result<Outcome, String> {
    Ok(match pb::Outcome::try_from(raw) {
        Ok(pb::Outcome::Succeeded) => Outcome::Succeeded,
        Ok(pb::Outcome::Failed) => Outcome::Failed,
        Ok(pb::Outcome::TimedOut) => Outcome::TimedOut,
        Ok(pb::Outcome::Cancelled) => Outcome::Cancelled,
        Ok(pb::Outcome::Skipped) => Outcome::Skipped,
        Ok(pb::Outcome::Abandoned) => Outcome::Abandoned,
        _ => return Err(format!("unknown outcome {raw}")),
    })
}

fn from_summary(r: pb::RunSummary) -> Result<RunSummary, String> {
    Ok(RunSummary {
        run: r.run,
        outcome: from_outcome(r.outcome)?,
        scheduled_at: required_time(r.scheduled_at, "recent_runs.scheduled_at")?,
        finished_at: required_time(r.finished_at, "recent_runs.finished_at")?,
        trigger: from_trigger(r.trigger),
    })
}

/// The owner of owed results a record names no replica for.
const UNATTRIBUTED: &str = "?";

/// A result as a log entry's `r` field holds it (its cursor is the entry id).
pub(super) fn encode_result(result: &TaskResult) -> &[u8] {
    result.wire.stored_or_init(|| {
        pb::TaskResult {
            cursor: String::new(),
            ..result_to_proto(result)
        }
        .encode_to_vec()
    })
}

/// Reads a log entry's result; the caller sets its cursor.
pub(super) fn decode_result_bytes(raw: &[u8]) -> Result<TaskResult, String> {
    decode_result(pb::TaskResult::decode(raw).map_err(|e| e.to_string())?)
}

fn decode_result(r: pb::TaskResult) -> Result<TaskResult, String> {
    Ok(TaskResult {
        task_id: TaskId::parse(&r.task_id)?,
        run: r.run,
        cursor: r.cursor,
        scheduled_at: required_time(r.scheduled_at, "result.scheduled_at")?,
        started_at: from_time(r.started_at),
        finished_at: required_time(r.finished_at, "result.finished_at")?,
        outcome: from_outcome(r.outcome)?,
        attempts: r.attempts,
        trigger: from_trigger(r.trigger),
        error: r.error,
        output: r.output,
        output_truncated: r.output_truncated,
        http_status: u16::try_from(r.http_status).unwrap_or(0),
        occurrence_id: r.occurrence_id,
        skipped_slots: r.skipped_slots,
        claim_lapsed: r.claim_lapsed,
        executor: r.executor.into(),
        latency: r
            .latency
            .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.clamp(0, 999_999_999) as u32))
            .unwrap_or_default(),
        wire: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `encode_task` writes the last result by hand after the rest of the
    /// record: its tag must be the one `StoredTask.last_result` has in
    /// store.proto, or every stored task would lose its last result.
    #[test]
    fn the_hand_written_last_result_tag_is_the_protos() {
        let with_last = proto::StoredTask {
            last_result: Some(pb::TaskResult::default()),
            ..Default::default()
        };
        let mut key = Vec::new();
        prost::encoding::encode_key(
            LAST_RESULT_TAG,
            prost::encoding::WireType::LengthDelimited,
            &mut key,
        );
        // Every other field is at its default, which proto3 leaves out.
        let encoded = with_last.encode_to_vec();
        assert!(encoded.starts_with(&key), "{encoded:?} after {key:?}");
    }
}
