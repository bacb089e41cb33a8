//! The result log: appending results (with retention, settling their runs
//! and their tasks' ends in the same script), reading it back by cursor,
//! and what a cursor is (`<epoch>-<stream id>`).

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use redis::{self, AsyncCommands, streams::StreamRangeReply};
use tracing::warn;

use super::{Held, MAX_CAS_ROUNDS, RedisStore, codec, script::ScriptCall, unavailable};
use crate::{
    store::{Recorded, Recording, RunPhase, RunStart, StoreError, stored::Stored},
    task::{TaskId, TaskResult},
};

/// How long a recorded batch's applied-marker is kept: twice as long as the
/// writer retries a batch (its outage window), and no longer, since a busy
/// writer leaves one per batch.
const APPLIED_MARKER_TTL: Duration =
    Duration::from_secs(2 * crate::results::writer::RECORD_OUTAGE_WINDOW.as_secs());

/// The identity of a batch of results, the same for every try of it: a
/// hash of what makes each result unique (task, run, occurrence, finish
/// time to the nanosecond, outcome).
fn batch_token(batch: &[Recording]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    for recording in batch {
        let r = &recording.result;
        (r.task_id.as_str(), r.run, r.occurrence_id.as_str()).hash(&mut hasher);
        r.finished_at.timestamp_nanos_opt().hash(&mut hasher);
        (r.outcome as u8, recording.finishes_run).hash(&mut hasher);
    }
    hasher.finish()
}

/// A Redis that came back empty and is not restored yet: a step waits for
/// the restore rather than write into it.
pub(super) fn emptied() -> StoreError {
    StoreError::Unavailable {
        reason: "the store lost its data (its epoch changed); waiting for this process to restore it".into(),
    }
}

/// The write-back window after a Redis that came back empty (quiet.lua):
/// a step waits for it to end rather than decide from what is there.
pub(super) fn writing_back() -> StoreError {
    StoreError::Unavailable {
        reason: "the store came back empty and the replicas are writing back what they hold; retry shortly".into(),
    }
}

impl RedisStore {
    /// A call of `record.lua` for the batch identified by `token` (the same
    /// for every try of one batch; None: no marker, the batch is harmless
    /// to apply twice), with its log keys and retention bounds set; the
    /// caller adds the results, tasks and ends.
    fn record_invocation(&self, token: Option<u64>) -> ScriptCall<'_> {
        let mut invocation = ScriptCall::new(&self.record);
        invocation
            .key(self.keys.log())
            .key(self.keys.log_meta())
            .key(self.keys.evicted())
            .key(self.keys.epoch())
            .key(self.keys.applied(token.unwrap_or(0)))
            .key(self.keys.quiet());
        invocation
            .arg(self.keys.history_prefix())
            .arg(self.retention.per_task)
            .arg(self.retention.total)
            .arg(self.retention.max_bytes)
            .arg(self.max_age.as_millis() as u64)
            .arg(self.epoch())
            .arg(token.map_or(0, |_| APPLIED_MARKER_TTL.as_secs()));
        invocation
    }

    /// The cursor of log entry `stream_id`.
    pub(super) fn cursor(&self, stream_id: &str) -> String {
        format!("{}-{}", self.epoch(), stream_id)
    }

    /// Splits a cursor into its stream id (ms, seq), checking the epoch.
    pub(super) fn parse_cursor(&self, cursor: &str) -> Result<(u64, u64), StoreError> {
        let invalid = |reason| StoreError::InvalidCursor {
            cursor: cursor.to_string(),
            reason,
        };
        let mut parts = cursor.splitn(3, '-');
        let (Some(epoch), Some(ms), Some(seq)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid("not a recur cursor"));
        };
        let (Ok(ms), Ok(seq)) = (ms.parse::<u64>(), seq.parse::<u64>()) else {
            return Err(invalid("not a recur cursor"));
        };
        let current = self.epoch();
        if epoch.len() != current.len() || !epoch.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("not a recur cursor"));
        }
        if epoch != current {
            // A well-formed cursor of an earlier store on this Redis: it was
            // emptied, and its results are gone.
            return Err(StoreError::CursorExpired {
                cursor: cursor.to_string(),
                oldest: String::new(),
                resume: String::new(),
            });
        }
        Ok((ms, seq))
    }

    /// Decodes log entries into results with their cursors (end entries,
    /// which only the tailing reader uses, are left out).
    fn results(&self, reply: StreamRangeReply) -> Result<Vec<Arc<TaskResult>>, StoreError> {
        reply
            .ids
            .into_iter()
            .filter(|entry| !entry.contains_key("e"))
            .map(|entry| {
                let raw: Vec<u8> = entry.get("r").unwrap_or_default();
                let mut result =
                    codec::decode_result_bytes(&raw).map_err(|reason| StoreError::Corrupt {
                        key: format!("{} {}", self.keys.log(), entry.id),
                        reason,
                    })?;
                result.cursor = self.cursor(&entry.id);
                Ok(Arc::new(result))
            })
            .collect()
    }

    /// The oldest held result's cursor (of `tasks` when not empty).
    async fn oldest(&self, tasks: &[TaskId]) -> Result<String, StoreError> {
        Ok(self
            .read_after(None, tasks, 1)
            .await?
            .first()
            .map(|r| r.cursor.clone())
            .unwrap_or_default())
    }

    /// Held results after the stream id `after` (all when None).
    async fn read_after(
        &self,
        after: Option<(u64, u64)>,
        tasks: &[TaskId],
        limit: usize,
    ) -> Result<Vec<Arc<TaskResult>>, StoreError> {
        let start = match after {
            Some((ms, seq)) => format!("({ms}-{seq}"),
            None => "-".to_string(),
        };
        let mut conn = self.conn().await?;
        if tasks.is_empty() {
            // End entries are skipped, so a page may need another read to
            // hold `limit` results: a short page means the log's end.
            let mut out = Vec::new();
            let mut start = start;
            while out.len() < limit {
                let want = limit - out.len();
                let reply: StreamRangeReply = conn
                    .xrange_count(self.keys.log(), &start, "+", want)
                    .await
                    .map_err(unavailable)?;
                let Some(last) = reply.ids.last().map(|e| e.id.clone()) else {
                    break;
                };
                let read = reply.ids.len();
                out.extend(self.results(reply)?);
                if read < want {
                    break;
                }
                start = format!("({last}");
            }
            return Ok(out);
        }
        // Per task through its list of held ids, so a stream of one task
        // never scans the whole log.
        let mut pipe = redis::pipe();
        for task in tasks {
            pipe.lrange(self.keys.history(task), 0, -1);
        }
        let lists: Vec<Vec<String>> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut ids: Vec<(u64, u64, String)> = lists
            .into_iter()
            .flatten()
            .filter_map(|id| {
                let (ms, seq) = id.split_once('-')?;
                Some((ms.parse().ok()?, seq.parse().ok()?, id))
            })
            .filter(|(ms, seq, _)| after.is_none_or(|a| (*ms, *seq) > a))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.truncate(limit);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (_, _, id) in &ids {
            pipe.xrange(self.keys.log(), id, id);
        }
        let replies: Vec<StreamRangeReply> =
            pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut out = Vec::with_capacity(ids.len());
        for reply in replies {
            out.extend(self.results(reply)?);
        }
        Ok(out)
    }


    pub(super) async fn record_batch(&self, batch: &[Recording]) -> Result<Recorded, StoreError> {
        if batch.is_empty() {
            return Ok(Recorded::default());
        }
        // Each task once, and per result the index of its task.
        let mut task_ids: Vec<TaskId> = Vec::new();
        let mut index: HashMap<&TaskId, usize> = HashMap::new();
        let task_of: Vec<usize> = batch
            .iter()
            .map(|recording| {
                let id = &recording.result.task_id;
                *index.entry(id).or_insert_with(|| {
                    task_ids.push(id.clone());
                    task_ids.len() - 1
                })
            })
            .collect();
        let token = batch_token(batch);
        for _ in 0..MAX_CAS_ROUNDS {
            // Settling always writes: its compare-and-set checks the state.
            let loaded = self.load_held(&task_ids, |_| false).await?;
            // Index in `task_ids` -> (state read, new state, index of its
            // last result).
            let mut tasks: Vec<Option<(Arc<Held>, Stored, usize)>> = loaded
                .into_iter()
                .map(|l| {
                    l.map(|(from, _)| {
                        let stored = from.stored.clone();
                        (from, stored, 0)
                    })
                })
                .collect();
            let mut recorded = Recorded::default();
            let mut ended = Vec::new();
            let mut pending: Vec<Arc<TaskResult>> = Vec::with_capacity(batch.len());
            // Per result: the fence of its claim, and whether it lapsed.
            let mut claims: Vec<(u64, bool)> = Vec::with_capacity(batch.len());
            for (i, recording) in batch.iter().enumerate() {
                let t = task_of[i];
                let run = recording.result.run;
                let held = tasks.get(t).is_some_and(|task| {
                    task.as_ref()
                        .is_some_and(|(_, stored, _)| stored.runs.iter().any(|r| r.run == run))
                });
                let lapsed = recording.finishes_run && !held;
                claims.push((recording.fence, lapsed));
                if lapsed {
                    // Fenced: history only. The task was settled when the
                    // run was given up; this result changes none of it.
                    warn!(task_id = %recording.result.task_id, run, "result of a run whose claim lapsed (it was given up as abandoned): recorded, marked as such");
                    pending.push(Arc::new(TaskResult {
                        claim_lapsed: true,
                        wire: Default::default(),
                        ..recording.result.clone()
                    }));
                    continue;
                }
                let result = Arc::new(recording.result.clone());
                pending.push(result.clone());
                let result = &result;
                if let Some(Some((_, stored, last))) = tasks.get_mut(t) {
                    let (promoted, task_ended) =
                        stored.settle(result, recording.finishes_run, &self.node);
                    // A promoted run runs here.
                    stored.claim_runs(&self.node);
                    recorded.promoted.extend(promoted);
                    if task_ended {
                        ended.push(result.task_id.clone());
                    }
                    if stored
                        .last_result
                        .as_ref()
                        .is_some_and(|l| Arc::ptr_eq(l, result))
                    {
                        *last = i + 1;
                    }
                }
            }
            let mut invocation = self.record_invocation(Some(token));
            invocation.arg(batch.len());
            for (result, (fence, lapsed)) in pending.iter().zip(&claims) {
                invocation
                    .arg(result.task_id.as_str())
                    .arg(codec::encode_result(result))
                    .arg(result.output.len())
                    .arg(*fence)
                    .arg(u8::from(*lapsed));
            }
            let written: Vec<(Arc<Held>, Stored, usize)> = tasks.into_iter().flatten().collect();
            invocation.arg(written.len());
            let mut fields = Vec::with_capacity(written.len());
            for (from, stored, last) in &written {
                // Settling never changes a spec.
                let field = from.spec_field.clone();
                invocation.key(self.keys.task(&stored.record.id));
                invocation
                    .arg(from.rev)
                    .arg(codec::encode_task(stored, &field))
                    .arg(*last);
                fields.push(field);
            }
            invocation.arg(ended.len());
            for id in &ended {
                invocation.arg(id.as_str());
            }
            let promoted: Vec<String> = recorded
                .promoted
                .iter()
                .map(|p| format!("{} {}", p.record.task_id, p.record.run))
                .collect();
            invocation.arg(promoted.join(" "));
            // Each task's state is in doubt until the script says it landed:
            // a lost reply, a conflict or an emptied Redis all read again.
            let doubt = || {
                for (from, stored, _) in &written {
                    self.held.doubt(&stored.record.id, from.rev);
                }
            };
            let mut conn = self.conn().await?;
            let reply: Vec<redis::Value> = match invocation.invoke_async(&mut conn).await {
                Ok(reply) => reply,
                Err(error) => {
                    doubt();
                    return Err(unavailable(error));
                }
            };
            if !matches!(reply.first(), Some(redis::Value::Int(1))) {
                doubt();
            }
            match reply.first() {
                Some(redis::Value::Int(1)) => {}
                Some(redis::Value::Int(2)) => return Err(emptied()),
                Some(redis::Value::Int(4)) => return Err(writing_back()),
                Some(redis::Value::Int(3)) => {
                    // An earlier try applied it and its reply was lost:
                    // nothing is appended or settled twice (readers got it
                    // from the log), but the buffered runs it promoted are
                    // handed out now, as that reply would have.
                    warn!(results = batch.len(), "results already recorded by an earlier try whose reply was lost");
                    let marker = reply
                        .get(1)
                        .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                        .unwrap_or_default();
                    return self.promoted_again(&marker).await;
                }
                _ => continue,
            }
            let ids = reply.iter().skip(1).filter_map(|v| match v {
                redis::Value::BulkString(id) => std::str::from_utf8(id).ok(),
                redis::Value::SimpleString(id) => Some(id.as_str()),
                _ => None,
            });
            recorded.results = pending
                .iter()
                .zip(ids)
                .map(|(result, id): (&Arc<TaskResult>, &str)| {
                    Arc::new(TaskResult {
                        cursor: self.cursor(id),
                        wire: result.wire.for_cursor_copy(),
                        ..(**result).clone()
                    })
                })
                .collect();
            recorded.ended = ended;
            for ((from, mut stored, last), spec_field) in written.into_iter().zip(fields) {
                // Its last result as recorded, with the cursor the log gave
                // it (the state was settled before the log had it).
                if let Some(recorded) = last.checked_sub(1).and_then(|i| recorded.results.get(i)) {
                    stored.last_result = Some(recorded.clone());
                }
                let id = stored.record.id.clone();
                self.held.keep(&id, Held::new(from.rev + 1, stored, spec_field));
            }
            return Ok(recorded);
        }
        Err(StoreError::Unavailable {
            reason: format!(
                "recording {} results lost to concurrent writes {MAX_CAS_ROUNDS} times",
                batch.len()
            ),
        })
    }

/// The buffered runs an applied batch promoted (`task run` pairs in its
    /// applied-marker) that are still queued, to be handed out again.
    async fn promoted_again(&self, marker: &str) -> Result<Recorded, StoreError> {
        let words: Vec<&str> = marker.split_whitespace().collect();
        let pairs: Vec<(TaskId, u64)> = words
            .chunks(2)
            .filter_map(|pair| match pair {
                [task, run] => Some((TaskId::parse(task).ok()?, run.parse().ok()?)),
                _ => None,
            })
            .collect();
        let ids: Vec<TaskId> = pairs.iter().map(|(id, _)| id.clone()).collect();
        let loaded = self.load(&ids).await?;
        let promoted = pairs
            .iter()
            .zip(loaded)
            .filter_map(|((_, run), loaded)| {
                let (_, stored) = loaded?;
                let record = stored
                    .runs
                    .iter()
                    .find(|r| r.run == *run && r.phase == RunPhase::Queued)?
                    .clone();
                Some(RunStart {
                    record,
                    spec: stored.record.spec.clone(),
                })
            })
            .collect();
        Ok(Recorded {
            promoted,
            ..Recorded::default()
        })
    }

    pub(super) async fn append_end_entries(&self, ends: &[TaskId]) -> Result<(), StoreError> {
        if ends.is_empty() {
            return Ok(());
        }
        // A duplicate end entry is harmless (a stream ends once): no marker.
        let mut invocation = self.record_invocation(None);
        invocation
            .arg(0)
            .arg(0)
            .arg(ends.len());
        for id in ends {
            invocation.arg(id.as_str());
        }
        // No run promoted.
        invocation.arg("");
        let mut conn = self.conn().await?;
        let reply: Vec<redis::Value> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match reply.first() {
            Some(redis::Value::Int(2)) => Err(emptied()),
            Some(redis::Value::Int(4)) => Err(writing_back()),
            _ => Ok(()),
        }
    }

    pub(super) async fn results_after_cursor(
        &self,
        after: Option<&str>,
        tasks: &[TaskId],
        limit: usize,
    ) -> Result<Vec<Arc<TaskResult>>, StoreError> {
        let Some(cursor) = after else {
            return self.read_after(None, tasks, limit).await;
        };
        let position = match self.parse_cursor(cursor) {
            Ok(position) => position,
            Err(StoreError::CursorExpired { cursor, .. }) => {
                return Err(StoreError::CursorExpired {
                    cursor,
                    oldest: self.oldest(tasks).await?,
                    resume: self.cursor("0-0"),
                });
            }
            Err(other) => return Err(other),
        };
        let mut conn = self.conn().await?;
        let (epoch, (last, evicted)): (Option<String>, (Option<String>, Option<String>)) =
            redis::pipe()
                .get(self.keys.epoch())
                .cmd("HMGET")
                .arg(self.keys.log_meta())
                .arg(&["last", "evicted"])
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
        if epoch.as_deref() != Some(self.epoch().as_str()) {
            return Err(emptied());
        }
        let parse = |id: Option<String>| {
            id.and_then(|id| {
                let (ms, seq) = id.split_once('-')?;
                Some((ms.parse::<u64>().ok()?, seq.parse::<u64>().ok()?))
            })
            .unwrap_or((0, 0))
        };
        if position > parse(last) {
            return Err(StoreError::InvalidCursor {
                cursor: cursor.to_string(),
                reason: "ahead of the log",
            });
        }
        let lost_up_to = if tasks.is_empty() {
            parse(evicted)
        } else {
            let mut pipe = redis::pipe();
            for task in tasks {
                pipe.hget(self.keys.evicted(), task.as_str());
            }
            let marks: Vec<Option<String>> =
                pipe.query_async(&mut conn).await.map_err(unavailable)?;
            marks.into_iter().map(parse).max().unwrap_or((0, 0))
        };
        if position < lost_up_to {
            return Err(StoreError::CursorExpired {
                cursor: cursor.to_string(),
                oldest: self.oldest(tasks).await?,
                resume: self.cursor(&format!("{}-{}", lost_up_to.0, lost_up_to.1)),
            });
        }
        drop(conn);
        self.read_after(Some(position), tasks, limit).await
    }

    pub(super) async fn head(&self) -> Result<String, StoreError> {
        let mut conn = self.conn().await?;
        let (epoch, last): (Option<String>, Option<String>) = redis::pipe()
            .get(self.keys.epoch())
            .hget(self.keys.log_meta(), "last")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if epoch.as_deref() != Some(self.epoch().as_str()) {
            return Err(emptied());
        }
        Ok(self.cursor(last.as_deref().unwrap_or("0-0")))
    }
}
