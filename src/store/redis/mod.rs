//! The Redis store: Redis as the system of record, so tasks, runs and
//! results survive a restart of the process, and any number of replicas
//! share them (leases and fencing in lease.rs, changes told to the others
//! in changes.rs).
//!
//! Every decision is the same state machine the memory store runs
//! ([`super::stored::Stored`]), applied optimistically: the step is decided
//! on a copy of the task as this process holds it (held.rs; read from Redis
//! when not held, or in doubt) and written back with one Lua script that
//! checks the task's `rev` (compare-and-set) and updates the due and id
//! indexes with it. A task whose `rev` moved in between (another process, a
//! reply that was lost) is read again and decided again; nothing is ever
//! written from a stale state. A batch of due slots thus costs one round
//! trip while nothing races it, whatever its size: one script per shard,
//! sent together.
//!
//! Results go to a Redis stream, appended by one script that also applies
//! retention and settles the runs they finish (see `record.lua`). Cursors
//! are `<epoch>-<stream id>`: the epoch is created with the store, so a
//! Redis that comes back empty hands out cursors no earlier one matches.
//!
//! Scripts are sent by SHA and loaded again when Redis answers NOSCRIPT
//! (after a restart or failover); see `script`.

mod changes;
mod codec;
mod held;
mod keys;
mod lease;
mod log;
mod restore;
mod script;
mod tail;
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod proto {
    tonic::include_proto!("recur.store.v1");
}

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use tracing::warn;
use chrono::{DateTime, Utc};
use redis::{self, AsyncCommands, Script};

pub use codec::SpecDecoder;
// For tools and tests (the store is public with the `internals` feature).
#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use keys::shard_of;
use held::{Held, HeldTasks};
pub(crate) use keys::{Keys, STORE_COMPAT, STORE_FORMAT, STORE_READS_FROM, TOMBSTONE_TTL};

use tokio_util::sync::CancellationToken;

use super::{
    Abandoned, Change, Checked, Dispatch, Fired, Firing, Halt, Halted, Inserted, LeaseChange,
    LeaseMode, LogSink, Recorded, Recording, RunRecord, RunStart, Store, StoreError, TaskFilter,
    Triggered, memory::Retention, stored::Stored,
};
use lease::Leases;
use crate::{
    RedisPool,
    task::{TaskId, TaskRecord, TaskResult, TaskSpec},
};

/// How many times a step reads again after its compare-and-set lost to a
/// concurrent write before reporting the store unavailable. A step races
/// its own process's result writer and the other replicas' writes to the
/// same task (control calls, results of runs going there), which settle
/// within a round or two.
const MAX_CAS_ROUNDS: usize = 16;

/// Deletes KEYS[1] if it still holds ARGV[1].
const CLEAR_IF_NAMES: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Key prefix (with its separator), e.g. `recur:`.
    pub prefix: String,
    /// Shards of the tasks and their due index.
    pub shards: u32,
    /// Retention bounds of the result log by count and bytes.
    pub retention: Retention,
    /// Results older than this are dropped from the log.
    pub max_age: Duration,
    /// Redis URL, for the log's tailing reader, which has a connection of
    /// its own (a blocking read would stall a pooled one).
    pub url: String,
    /// Name of that connection (`CLIENT SETNAME`), set again on reconnect.
    pub client_name: String,
    /// This process's node id: the runner of the runs it starts, and its
    /// name among the replicas.
    pub node: String,
    /// How long a replica's lease (membership and shards) lasts without
    /// being renewed; renewed every fifth of it.
    pub lease: Duration,
    /// Keys encrypting header values at rest; `None` stores them as given
    /// (and still reads values encrypted earlier only with the keys).
    pub secret_keys: Option<crate::secrets::SecretKeys>,
}

/// The Redis store.
pub struct RedisStore {
    /// The managed pool; every command goes through it.
    pool: RedisPool,
    /// Key names.
    keys: Keys,
    /// The store's epoch, read (or created) at open and replaced when Redis
    /// comes back empty; part of every cursor.
    epoch: std::sync::RwLock<String>,
    /// Every task as this process last wrote or read it: what a step
    /// starts from, and what a Redis that came back empty gets back.
    held: HeldTasks,
    /// One restore at a time.
    restoring: tokio::sync::Mutex<()>,
    /// The fingerprint key as first read: kept for the process's life, and
    /// written back with the tasks if Redis comes back empty, so every
    /// replica goes on with one key.
    fingerprint_key: std::sync::OnceLock<Vec<u8>>,
    /// Retention bounds.
    retention: Retention,
    /// Age bound of the log.
    max_age: Duration,
    /// Reads stored specs back.
    decode_spec: SpecDecoder,
    /// Encrypt and decrypt header values at rest.
    secret_keys: Option<crate::secrets::SecretKeys>,
    /// `write_tasks.lua`.
    write_tasks: Script,
    /// `record.lua`.
    record: Script,
    /// `forget_results.lua`.
    forget_results: Script,
    /// [`CLEAR_IF_NAMES`].
    clear_if_names: Script,
    /// Where the tailing reader connects, and the name it gives itself.
    url: String,
    client_name: String,
    /// This process among the replicas.
    node: String,
    /// Lease length (ms).
    lease_ms: u64,
    /// The shards this process owns, and the replicas running.
    leases: Leases,
    /// `lease.lua`.
    lease: Script,
    /// `quiet.lua`.
    quiet: Script,
    /// `stream_slots.lua`.
    stream_slots: Script,
    /// The lost epoch this process opened the write-back window for.
    quiet_for: std::sync::Mutex<Option<String>>,
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable {
        reason: error.to_string(),
    }
}

/// The hash fields `write_tasks.lua` keeps beside `rec`, for operators and
/// the due index: due time (ms, '' when not due), state, next run (text).
fn derived(stored: &Stored) -> (OrEmpty<i64>, &'static str, String) {
    let task = &stored.record;
    let due = OrEmpty(match (task.state, task.next_run_at) {
        (crate::task::TaskState::Active, Some(next)) => Some(next.timestamp_millis()),
        _ => None,
    });
    let next = task
        .next_run_at
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    (due, task.state.name(), next)
}

/// A number `write_tasks.lua` takes, or '' for none (a due time, an
/// expected or a starting rev): always one argument, written into the call
/// in place, not made a string first.
struct OrEmpty<T>(Option<T>);

impl<T: redis::ToRedisArgs> redis::ToRedisArgs for OrEmpty<T> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        match &self.0 {
            Some(value) => value.write_redis_args(out),
            None => out.write_arg(b""),
        }
    }
}

/// A task as read, with the `rev` it had.
type Loaded = (u64, Stored);

/// What a task write expects of what Redis holds.
#[derive(Debug, Clone, Copy)]
enum Expected {
    /// The task at this rev (compare-and-set).
    Rev(u64),
    /// No task: a create.
    Absent,
    /// No newer state of it, tombstone included: a restore.
    Older,
}

/// A task's stamp (registration ms, version): orders its states across
/// replicas and incarnations of its id.
fn stamp(task: &crate::task::TaskRecord) -> (i64, u64) {
    (task.created_at.timestamp_millis(), task.version)
}

/// What a step did to its task, for [`RedisStore::steps`].
enum Wrote {
    /// Nothing: no write.
    No,
    /// Changed it, of no concern to the other replicas (firing, starting
    /// runs, giving runs up).
    Quiet,
    /// Changed it, and the other replicas are told (a control call):
    /// the notice goes with the message (see changes.rs).
    Notice(String),
}

impl Wrote {
    /// A control change, told to the other replicas when `changed`.
    fn control(changed: bool) -> Wrote {
        if changed {
            Wrote::Notice(changes::CHANGED.to_string())
        } else {
            Wrote::No
        }
    }
}

/// What [`RedisStore::write`] did not write.
#[derive(Default)]
struct Unwritten {
    /// Steps whose compare-and-set lost: decided again from a read.
    lost: Vec<usize>,
    /// Steps of shards whose lease this process no longer holds (a fenced
    /// write): not applied, and not to be retried here.
    unowned: Vec<usize>,
}

/// One task write of [`RedisStore::write`].
struct Write {
    /// Index of the step it belongs to, reported back on conflict.
    index: usize,
    /// The task's id.
    id: TaskId,
    /// The state it was decided from, with its `rev` (None: create).
    from: Option<Arc<Held>>,
    /// The new state, None to delete.
    stored: Option<Stored>,
    /// Published to the other replicas once written ('' = nothing).
    notice: String,
}

impl Write {
    /// A step's write of `stored`, decided from `from`.
    fn of(index: usize, from: Arc<Held>, stored: Stored, notice: String) -> Write {
        Write {
            index,
            id: stored.record.id.clone(),
            from: Some(from),
            stored: Some(stored),
            notice,
        }
    }

    fn rev(&self) -> Option<u64> {
        self.from.as_ref().map(|from| from.rev)
    }
}

impl RedisStore {
    /// Opens the store: checks the store format (refusing a newer one),
    /// initialises an empty Redis (format and epoch) and reads the epoch.
    pub async fn open(
        pool: RedisPool,
        settings: RedisSettings,
        decode_spec: SpecDecoder,
    ) -> Result<RedisStore, StoreError> {
        let keys = Keys::new(&settings.prefix, settings.shards);
        let keys_shards = keys.shards();
        let mut conn = pool.get().await.map_err(|e| StoreError::Unavailable {
            reason: e.to_string(),
        })?;
        check_format(&mut conn, &keys).await?;
        let fresh = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let _: bool = conn
            .set_nx(keys.epoch(), &fresh)
            .await
            .map_err(unavailable)?;
        let epoch: String = conn.get(keys.epoch()).await.map_err(unavailable)?;
        warn_if_evicting(&mut conn).await;
        Ok(RedisStore {
            pool,
            keys,
            epoch: std::sync::RwLock::new(epoch),
            held: HeldTasks::default(),
            restoring: tokio::sync::Mutex::new(()),
            fingerprint_key: std::sync::OnceLock::new(),
            retention: Retention {
                per_task: settings.retention.per_task.max(1),
                total: settings.retention.total.max(1),
                max_bytes: settings.retention.max_bytes,
            },
            max_age: settings.max_age,
            decode_spec,
            secret_keys: settings.secret_keys,
            write_tasks: Script::new(include_str!("write_tasks.lua")),
            record: Script::new(include_str!("record.lua")),
            forget_results: Script::new(include_str!("forget_results.lua")),
            clear_if_names: Script::new(CLEAR_IF_NAMES),
            url: settings.url,
            client_name: settings.client_name,
            node: settings.node,
            lease_ms: u64::try_from(settings.lease.as_millis()).unwrap_or(u64::MAX).max(1),
            leases: Leases::new(keys_shards, settings.lease),
            lease: Script::new(include_str!("lease.lua")),
            quiet: Script::new(include_str!("quiet.lua")),
            stream_slots: Script::new(include_str!("stream_slots.lua")),
            quiet_for: std::sync::Mutex::new(None),
        })
    }

    /// The store's epoch.
    pub fn epoch(&self) -> String {
        self.epoch.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The spec a stored spec field stands for: the held one while the
    /// field is unchanged, else the field validated again.
    fn spec_of(
        &self,
        id: &TaskId,
        field: &[u8],
        raw: crate::pb::v1::TaskSpec,
    ) -> Result<Arc<TaskSpec>, String> {
        match self.held.spec_of_field(id, field) {
            Some(spec) => Ok(spec),
            None => {
                let mut raw = raw;
                crate::secrets::SecretKeys::open_spec(self.secret_keys.as_ref(), &mut raw)
                    .map_err(|e| e.to_string())?;
                (self.decode_spec)(raw).map(Arc::new)
            }
        }
    }

    /// A spec's stored field, its header values encrypted when keys are given.
    fn spec_field(&self, spec: &TaskSpec) -> Result<Arc<[u8]>, StoreError> {
        codec::spec_field(spec, self.secret_keys.as_ref()).map_err(|e| StoreError::Unavailable {
            reason: e.to_string(),
        })
    }

    async fn conn(&self) -> Result<crate::redis_pool::RedisConnection, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Unavailable {
            reason: e.to_string(),
        })
    }

    /// Reads tasks from Redis for a caller, in one pipelined round trip.
    async fn load(&self, ids: &[TaskId]) -> Result<Vec<Option<Loaded>>, StoreError> {
        Ok(self
            .load_rows(ids)
            .await?
            .into_iter()
            .map(|held| held.map(|held| (held.rev, held.stored.clone())))
            .collect())
    }

    /// Reads tasks from Redis in one pipelined round trip, and holds what
    /// it read.
    async fn load_rows(&self, ids: &[TaskId]) -> Result<Vec<Option<Arc<Held>>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // The epoch first, in the same round trip: a Redis that came back
        // empty must not read as "no such task" (a firing would drop its
        // timer, a call would answer NOT_FOUND) until it is restored.
        let mut pipe = redis::pipe();
        pipe.get(self.keys.epoch());
        for id in ids {
            pipe.cmd("HMGET").arg(self.keys.task(id)).arg(&["rev", "rec", "lc"]);
        }
        let mut conn = self.conn().await?;
        type Row = (Option<u64>, Option<Vec<u8>>, Option<String>);
        let (epoch, rows): (Option<String>, Vec<Row>) = {
            let mut values: Vec<redis::Value> =
                pipe.query_async(&mut conn).await.map_err(unavailable)?;
            let rows = values.split_off(1.min(values.len()));
            let epoch = values
                .pop()
                .and_then(|v| redis::from_redis_value::<Option<String>>(v).ok())
                .flatten();
            let rows = rows
                .into_iter()
                .map(redis::from_redis_value::<Row>)
                .collect::<Result<Vec<Row>, _>>()
                .map_err(|e| StoreError::Unavailable {
                    reason: e.to_string(),
                })?;
            (epoch, rows)
        };
        if epoch.as_deref() != Some(self.epoch().as_str()) {
            return Err(log::emptied());
        }
        ids.iter()
            .zip(rows)
            .map(|(id, (rev, rec, lc))| match (rev, rec) {
                (Some(rev), Some(rec)) => {
                    let cursor = lc.map(|lc| self.cursor(&lc));
                    let spec_of = |id: &TaskId, field: &[u8], raw| self.spec_of(id, field, raw);
                    let (stored, spec_field) = codec::decode_task(&rec, cursor, &spec_of)
                        .map_err(|reason| StoreError::Corrupt {
                            key: self.keys.task(id),
                            reason,
                        })?;
                    let held = Held::new(rev, stored, spec_field);
                    self.held.keep(id, held.clone());
                    Ok(Some(held))
                }
                _ => {
                    self.held.forget_doubted(id);
                    Ok(None)
                }
            })
            .collect()
    }

    async fn load_one(&self, id: &TaskId) -> Result<Option<Loaded>, StoreError> {
        Ok(self.load(std::slice::from_ref(id)).await?.pop().flatten())
    }

    /// The tasks a step starts from, each with whether it was read from
    /// Redis just now: the held state where there is one not in doubt and
    /// `read(i)` is false, the rest read in one round trip. A held state
    /// may be behind Redis (another writer), so a step decided from one is
    /// either written with a compare-and-set, which finds out, or, when it
    /// writes nothing (a refusal, "nothing to do"), decided again from a
    /// read before it is answered.
    async fn load_held(
        &self,
        ids: &[TaskId],
        read: impl Fn(usize) -> bool,
    ) -> Result<Vec<Option<(Arc<Held>, bool)>>, StoreError> {
        let mut out: Vec<Option<(Arc<Held>, bool)>> = Vec::with_capacity(ids.len());
        let mut missing: Vec<usize> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let held = if read(i) { None } else { self.held.get(id) };
            if held.is_none() {
                missing.push(i);
            }
            out.push(held.map(|held| (held, false)));
        }
        if !missing.is_empty() {
            let wanted: Vec<TaskId> = missing.iter().map(|&i| ids[i].clone()).collect();
            for (i, loaded) in missing.into_iter().zip(self.load_rows(&wanted).await?) {
                out[i] = loaded.map(|held| (held, true));
            }
        }
        Ok(out)
    }

    /// Adds task `id` to a `write_tasks.lua` call: its key and its ten
    /// arguments (its tombstone's key follows all tasks': see
    /// [`RedisStore::write_call`]). `expected`: the rev it must have (None:
    /// it must not exist); `task`: its state and spec field (None: delete
    /// it); `start_rev`: the rev a created hash starts at (None: 1);
    /// `stamp`: the task's registration time (ms) and version, its last
    /// plus one for a delete.
    #[allow(clippy::too_many_arguments)]
    fn add_task(
        &self,
        call: &mut script::ScriptCall<'_>,
        id: &TaskId,
        expected: Expected,
        task: Option<(&Stored, &[u8])>,
        start_rev: Option<u64>,
        notice: &str,
        stamp: (i64, u64),
    ) {
        call.key(self.keys.task(id));
        call.arg(id.as_str());
        match expected {
            Expected::Rev(rev) => call.arg(rev),
            Expected::Absent => call.arg(""),
            Expected::Older => call.arg("r"),
        };
        match task {
            Some((stored, spec_field)) => {
                let (due, state, next) = derived(stored);
                call.arg(codec::encode_task(stored, spec_field))
                    .arg(due)
                    .arg(state)
                    .arg(next);
            }
            None => {
                call.arg("").arg("").arg("").arg("");
            }
        }
        call.arg(OrEmpty(start_rev))
            .arg(notice)
            .arg(stamp.0)
            .arg(stamp.1);
    }

    /// A `write_tasks.lua` call on `shard` for the tasks `ids` (added with
    /// [`RedisStore::add_task`] in that order, then
    /// [`RedisStore::add_tombs`]); `fence`: the lease fence a firing step
    /// holds (None: not fenced).
    fn write_call(&self, shard: u32, n: usize, fence: Option<u64>) -> script::ScriptCall<'_> {
        let mut call = script::ScriptCall::new(&self.write_tasks);
        call.key(self.keys.due(shard))
            .key(self.keys.ids(shard))
            .key(self.keys.lease(shard));
        // A replica alone tells no one (11,000 registrations/s each
        // published and read back cost it measurably: benches/README.md).
        let channel = if self.leases.alone(&self.node) {
            String::new()
        } else {
            self.keys.changes()
        };
        call.arg(n)
            .arg(OrEmpty(fence))
            .arg(&self.node)
            .arg(channel)
            .arg(u64::try_from(TOMBSTONE_TTL.as_millis()).unwrap_or(u64::MAX));
        call
    }

    /// The tombstone keys of a `write_tasks.lua` call, after its tasks'.
    fn add_tombs<'a>(&self, call: &mut script::ScriptCall<'_>, ids: impl Iterator<Item = &'a TaskId>) {
        for id in ids {
            call.key(self.keys.tomb(id));
        }
    }

    /// Task `id`, if it exists and was created by a registration with
    /// `request_id`.
    async fn task_if_requested(
        &self,
        id: &TaskId,
        request_id: &str,
    ) -> Result<Option<TaskRecord>, StoreError> {
        Ok(self
            .load_one(id)
            .await?
            .filter(|(_, stored)| stored.request_id.as_deref() == Some(request_id))
            .map(|(_, stored)| stored.view()))
    }

    /// Writes tasks with a compare-and-set on their `rev`, one script per
    /// shard, all sent at once, and holds what landed. `fenced` (a firing
    /// step): each shard's script carries the lease fence this process
    /// holds, and a shard it does not hold is not written. Returns the
    /// writes not applied: lost (their task changed since the state they
    /// were decided from) or unowned.
    async fn write(&self, writes: Vec<Write>, fenced: bool) -> Result<Unwritten, StoreError> {
        let mut by_shard: BTreeMap<u32, Vec<Write>> = BTreeMap::new();
        for write in writes {
            by_shard
                .entry(self.keys.shard_of(write.id.as_str()))
                .or_default()
                .push(write);
        }
        let mut unwritten = Unwritten::default();
        // Each shard's fence, read once: a lease step may take the shard
        // away while this waits for a connection, and the write must then
        // carry the fence it was decided under (Redis refuses it), not go
        // out unfenced.
        let mut calls_of: Vec<(u32, Option<u64>, Vec<Write>)> = Vec::with_capacity(by_shard.len());
        for (shard, writes) in by_shard {
            if !fenced {
                calls_of.push((shard, None, writes));
                continue;
            }
            match self.leases.fence(shard) {
                Some(fence) => calls_of.push((shard, Some(fence), writes)),
                None => unwritten.unowned.extend(writes.iter().map(|w| w.index)),
            }
        }
        // Per write, the spec field it is encoded with: the one held while
        // the spec is the same, else encoded (and encrypted) before anything
        // is sent, so a failure sends nothing.
        let mut fields_of = Vec::with_capacity(calls_of.len());
        for (_, _, writes) in &calls_of {
            let mut fields: Vec<Option<Arc<[u8]>>> = Vec::with_capacity(writes.len());
            for write in writes {
                fields.push(match (&write.stored, &write.from) {
                    (None, _) => None,
                    (Some(stored), Some(from))
                        if Arc::ptr_eq(&from.stored.record.spec, &stored.record.spec) =>
                    {
                        Some(from.spec_field.clone())
                    }
                    (Some(stored), _) => Some(self.spec_field(&stored.record.spec)?),
                });
            }
            fields_of.push(fields);
        }
        let conn = self.conn().await?;
        let calls = calls_of.into_iter().zip(fields_of).map(|((shard, fence, writes), fields)| {
            let mut conn = conn.clone();
            let mut invocation = self.write_call(shard, writes.len(), fence);
            for (write, field) in writes.iter().zip(&fields) {
                let task = write.stored.as_ref().zip(field.as_deref());
                let expected = write.rev().map_or(Expected::Absent, Expected::Rev);
                let stamp = match (&write.stored, &write.from) {
                    (Some(stored), _) => stamp(&stored.record),
                    // A delete: the tombstone is newer than the last state.
                    (None, Some(from)) => {
                        let (born, version) = stamp(&from.stored.record);
                        (born, version + 1)
                    }
                    (None, None) => (0, 0),
                };
                self.add_task(&mut invocation, &write.id, expected, task, None, &write.notice, stamp);
            }
            self.add_tombs(&mut invocation, writes.iter().map(|w| &w.id));
            // Not written, or not known to be: the next step reads Redis.
            let doubt_all = |writes: &[Write]| {
                for write in writes {
                    if let Some(rev) = write.rev() {
                        self.held.doubt(&write.id, rev);
                    }
                }
            };
            async move {
                let reply: Vec<i64> = match invocation.invoke_async(&mut conn).await {
                    Ok(reply) => reply,
                    Err(error) => {
                        // It may have landed, its reply lost: the next step
                        // reads what Redis has.
                        doubt_all(&writes);
                        return Err(unavailable(error));
                    }
                };
                let mut unwritten = Unwritten::default();
                if reply.first() == Some(&-3) {
                    doubt_all(&writes);
                    return Err(log::writing_back());
                }
                if reply.first() == Some(&-2) {
                    // The lease lapsed or moved: Redis refused the fence.
                    // Or Redis came back empty, lease and all: then the
                    // tasks are not to be dropped but restored.
                    let epoch: Option<String> =
                        conn.get(self.keys.epoch()).await.map_err(unavailable)?;
                    if epoch.as_deref() != Some(self.epoch().as_str()) {
                        return Err(log::emptied());
                    }
                    if let Some(fence) = fence {
                        self.leases.refused(shard, fence);
                    }
                    unwritten.unowned = writes.iter().map(|w| w.index).collect();
                    return Ok(unwritten);
                }
                let lost: Vec<usize> = reply
                    .into_iter()
                    .map(|i| usize::try_from(i).unwrap_or(0).wrapping_sub(1))
                    .collect();
                for (i, (write, field)) in writes.into_iter().zip(fields).enumerate() {
                    let rev = write.rev();
                    if lost.contains(&i) {
                        if let Some(rev) = rev {
                            self.held.doubt(&write.id, rev);
                        }
                        unwritten.lost.push(write.index);
                        continue;
                    }
                    match (write.stored, field, rev) {
                        // The script's rev: one more than read.
                        (Some(stored), Some(spec_field), Some(rev)) => self
                            .held
                            .keep(&write.id, Held::new(rev + 1, stored, spec_field)),
                        // Created at 1.
                        (Some(stored), Some(spec_field), None) => {
                            self.held.put(&write.id, Held::new(1, stored, spec_field))
                        }
                        _ => self.held.forget(&write.id),
                    }
                }
                Ok::<_, StoreError>(unwritten)
            }
        });
        for shard in futures::future::join_all(calls).await {
            let shard = shard?;
            unwritten.lost.extend(shard.lost);
            unwritten.unowned.extend(shard.unowned);
        }
        Ok(unwritten)
    }

    /// Applies `step` to each task of `ids` and writes the tasks it changed
    /// back, one compare-and-set each, all in one round of scripts. A task
    /// is decided on its held state (or a read); one whose write lost, and
    /// one the step left unchanged while decided on a held state, is
    /// decided again from Redis. `step(i, task)` gives the answer for
    /// `ids[i]` and what it wrote; `missing()` answers for a task Redis does
    /// not have, and for one of a shard this process does not own when
    /// `fenced` (a firing step). Runs the step dispatched are claimed as
    /// this process's. Answers in the order of `ids`.
    async fn steps<T>(
        &self,
        ids: &[TaskId],
        fenced: bool,
        missing: impl Fn() -> T,
        mut step: impl FnMut(usize, &mut Stored) -> (T, Wrote),
    ) -> Result<Vec<T>, StoreError> {
        let mut answers: Vec<Option<T>> = ids.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..ids.len()).collect();
        // Tasks to read rather than take as held.
        let mut read = vec![false; ids.len()];
        for _ in 0..MAX_CAS_ROUNDS {
            let wanted: Vec<TaskId> = pending.iter().map(|&i| ids[i].clone()).collect();
            let loaded = self.load_held(&wanted, |k| read[pending[k]]).await?;
            let mut writes: Vec<Write> = Vec::with_capacity(pending.len());
            let mut decided: Vec<(usize, T)> = Vec::with_capacity(pending.len());
            let mut again: Vec<usize> = Vec::new();
            for (&i, loaded) in pending.iter().zip(loaded) {
                let Some((from, fresh)) = loaded else {
                    answers[i] = Some(missing());
                    continue;
                };
                let mut stored = from.stored.clone();
                let (answer, wrote) = step(i, &mut stored);
                let notice = match wrote {
                    Wrote::No if fresh => {
                        answers[i] = Some(answer);
                        continue;
                    }
                    Wrote::No => {
                        read[i] = true;
                        again.push(i);
                        continue;
                    }
                    Wrote::Quiet => String::new(),
                    Wrote::Notice(notice) => notice,
                };
                stored.claim_runs(&self.node);
                writes.push(Write::of(i, from, stored, notice));
                decided.push((i, answer));
            }
            let unwritten = self.write(writes, fenced).await?;
            for (i, answer) in decided {
                if unwritten.unowned.contains(&i) {
                    answers[i] = Some(missing());
                } else if !unwritten.lost.contains(&i) {
                    answers[i] = Some(answer);
                }
            }
            let lost = unwritten.lost;
            pending = lost;
            pending.extend(again);
            if pending.is_empty() {
                break;
            }
        }
        if let Some(&i) = pending.first() {
            // Some tasks' steps may have applied: a caller that retries
            // gets their replayed answers (fire, trigger and halt replay).
            return Err(contended(&ids[i]));
        }
        Ok(answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(&missing))
            .collect())
    }

    /// [`RedisStore::steps`] for one task: None when it does not exist.
    async fn step_one<T>(
        &self,
        id: &TaskId,
        mut step: impl FnMut(&mut Stored) -> (T, Wrote),
    ) -> Result<Option<T>, StoreError> {
        let answers = self
            .steps(std::slice::from_ref(id), false, || None, |_, stored| {
                let (answer, wrote) = step(stored);
                (Some(answer), wrote)
            })
            .await?;
        Ok(answers.into_iter().next().flatten())
    }

    /// Task ids after `after` in order, at most `limit`, merged from a page
    /// of each shard. A shard asked for `per_shard` ids that returned that
    /// many may hold more, all after its last: the merge is complete only up
    /// to the smallest such last id, so ids beyond it wait for the next
    /// call. Each shard is asked for about its share, not for `limit`, so a
    /// full scan (start-up reads every task) moves each id about once.
    async fn ids_after(
        &self,
        after: Option<&TaskId>,
        limit: usize,
    ) -> Result<Vec<TaskId>, StoreError> {
        let min = match after {
            Some(after) => format!("({after}"),
            None => "-".to_string(),
        };
        let shards = self.keys.shards() as usize;
        let per_shard = (limit.div_ceil(shards) * 2).max(16);
        let mut pipe = redis::pipe();
        for shard in 0..self.keys.shards() {
            pipe.cmd("ZRANGE")
                .arg(self.keys.ids(shard))
                .arg(&min)
                .arg("+")
                .arg("BYLEX")
                .arg("LIMIT")
                .arg(0)
                .arg(per_shard);
        }
        let mut conn = self.conn().await?;
        let pages: Vec<Vec<String>> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let complete_to: Option<String> = pages
            .iter()
            .filter(|page| page.len() == per_shard)
            .filter_map(|page| page.last().cloned())
            .min();
        let mut ids: Vec<TaskId> = pages
            .into_iter()
            .flatten()
            .filter(|id| complete_to.as_ref().is_none_or(|bound| id <= bound))
            .filter_map(|id| TaskId::parse(&id).ok())
            .collect();
        ids.sort_unstable();
        ids.truncate(limit);
        Ok(ids)
    }
}

/// Checks that this build may use the store and records its format (see
/// format.lua): the first start on a prefix initialises it; a store of an
/// adjacent format that allows this one is shared; any other is refused.
pub(super) async fn check_format(
    conn: &mut crate::redis_pool::RedisConnection,
    keys: &Keys,
) -> Result<(), StoreError> {
    let script = Script::new(include_str!("format.lua"));
    let mut call = script::ScriptCall::new(&script);
    call.key(keys.format()).key(keys.compat());
    call.arg(STORE_FORMAT).arg(STORE_COMPAT).arg(STORE_READS_FROM);
    let reply: Vec<String> = call.invoke_async(conn).await.map_err(unavailable)?;
    let refused = |found: String, newer: bool| StoreError::Format {
        found,
        supported: STORE_FORMAT,
        newer,
    };
    match reply.as_slice() {
        [ok, ..] if ok == "ok" => Ok(()),
        [why, format, compat] if why == "newer" => Err(refused(
            format!("{format} (which allows replicas of format {compat} and later)"),
            true,
        )),
        [why, format, _] if why == "older" => Err(refused(
            format!("{format} (older than format {STORE_READS_FROM}, the oldest this build reads)"),
            false,
        )),
        [_, value, ..] => Err(refused(value.clone(), false)),
        _ => Err(StoreError::Unavailable {
            reason: format!("unexpected reply to the format check: {reply:?}"),
        }),
    }
}

/// Warns when Redis may evict the store's keys: with a memory limit, every
/// `allkeys-*` policy can drop a task or a result silently. `volatile-*`
/// policies only evict keys with a TTL, and the store sets none.
async fn warn_if_evicting(conn: &mut crate::redis_pool::RedisConnection) {
    let config: Result<HashMap<String, String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory*")
        .query_async(conn)
        .await;
    let Ok(config) = config else {
        // CONFIG may be renamed or refused (managed Redis): say so once.
        warn!("could not read the Redis eviction policy (CONFIG GET refused); make sure it is noeviction");
        return;
    };
    let policy = config.get("maxmemory-policy").map_or("", String::as_str);
    let limited = config.get("maxmemory").is_some_and(|m| m != "0");
    if limited && policy.starts_with("allkeys") {
        warn!(
            policy,
            "redis may evict recur's keys under memory pressure (tasks, runs, results lost); set maxmemory-policy noeviction"
        );
    }
}

fn contended(id: &TaskId) -> StoreError {
    StoreError::Unavailable {
        reason: format!("task {id} kept changing under {MAX_CAS_ROUNDS} attempts to write it"),
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn insert_task(
        &self,
        record: TaskRecord,
        request_id: Option<&str>,
    ) -> Result<Inserted, StoreError> {
        // The task, and its request id if any, in one script (see
        // write_tasks.lua): a retry racing its first try gets that task,
        // never a second one.
        let stored = Stored::new(record, request_id);
        let id = stored.record.id.clone();
        let shard = self.keys.shard_of(id.as_str());
        let field = self.spec_field(&stored.record.spec)?;
        let mut call = self.write_call(shard, 1, None);
        self.add_task(
            &mut call,
            &id,
            Expected::Absent,
            Some((&stored, &field)),
            None,
            changes::CHANGED,
            stamp(&stored.record),
        );
        self.add_tombs(&mut call, std::iter::once(&id));
        if let Some(request_id) = request_id {
            call.key(self.keys.request(request_id)).arg("1");
        }
        let mut conn = self.conn().await?;
        // Twice at most: once more after clearing a stale request id.
        for _ in 0..2 {
            let reply: Vec<redis::Value> = call.invoke_async(&mut conn).await.map_err(unavailable)?;
            let earlier = match reply.as_slice() {
                [] => {
                    let view = stored.view();
                    self.held.put(&id, Held::new(1, stored, field));
                    return Ok(Inserted::Created(view));
                }
                [redis::Value::Int(-1), redis::Value::BulkString(earlier)] => {
                    String::from_utf8_lossy(earlier).into_owned()
                }
                [redis::Value::Int(-1), redis::Value::SimpleString(earlier)] => earlier.clone(),
                // The task's own index: its id is taken.
                [redis::Value::Int(1)] => return Err(StoreError::Exists { task_id: id }),
                [redis::Value::Int(-3)] => return Err(log::writing_back()),
                other => {
                    return Err(StoreError::Unavailable {
                        reason: format!("unexpected reply to a registration: {other:?}"),
                    });
                }
            };
            // Only a call with a request id answers with an earlier task.
            let Some(request_id) = request_id else { break };
            if let Ok(earlier_id) = TaskId::parse(&earlier)
                && let Some(task) = self.task_if_requested(&earlier_id, request_id).await?
            {
                return Ok(Inserted::SameRequest(task));
            }
            // The id names a task that is gone: a delete that stopped
            // between the task and its request id. Cleared only while it
            // still names that task, then the registration goes ahead.
            let _: u64 = self
                .clear_if_names
                .key(self.keys.request(request_id))
                .arg(earlier)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        Err(StoreError::Unavailable {
            reason: "a request id is being reused concurrently; retry".to_string(),
        })
    }

    async fn task_for_request(&self, request_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let id: Option<String> = conn
            .get(self.keys.request(request_id))
            .await
            .map_err(unavailable)?;
        let Some(id) = id.and_then(|id| TaskId::parse(&id).ok()) else {
            return Ok(None);
        };
        self.task_if_requested(&id, request_id).await
    }

    async fn get_task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        Ok(self.load_one(id).await?.map(|(_, stored)| stored.view()))
    }

    async fn update_task(&self, record: TaskRecord) -> Result<TaskRecord, StoreError> {
        let id = record.id.clone();
        self.step_one(&id, |stored| {
            let updated = stored.update(record.clone());
            let changed = updated.is_some();
            (updated, Wrote::control(changed))
        })
        .await?
        .flatten()
        .ok_or(StoreError::Conflict { task_id: id })
    }

    async fn delete_task(&self, id: &TaskId, version: u64) -> Result<(), StoreError> {
        let conflict = || StoreError::Conflict {
            task_id: id.clone(),
        };
        let Some(from) = self.load_rows(std::slice::from_ref(id)).await?.pop().flatten() else {
            return Err(conflict());
        };
        if !from.stored.deletable(version) {
            return Err(conflict());
        }
        let request_id = from.stored.request_id.clone();
        let unwritten = self
            .write(
                vec![Write {
                    index: 0,
                    id: id.clone(),
                    from: Some(from),
                    stored: None,
                    notice: changes::CHANGED.to_string(),
                }],
                false,
            )
            .await?;
        if !unwritten.lost.is_empty() {
            return Err(conflict());
        }
        // The task is gone; its results (with their bytes) and request id
        // follow. A crash here leaves them to retention, which drops them
        // in time.
        let mut conn = self.conn().await?;
        let _: u64 = self
            .forget_results
            .key(self.keys.log())
            .key(self.keys.log_meta())
            .key(self.keys.evicted())
            .key(self.keys.history(id))
            .arg(id.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if let Some(request_id) = &request_id {
            // Only while it still names this task: a registration that
            // found it naming a task already gone may have taken it over.
            let _: u64 = self
                .clear_if_names
                .key(self.keys.request(request_id))
                .arg(id.as_str())
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn list_tasks(
        &self,
        after: Option<&TaskId>,
        limit: usize,
        filter: &TaskFilter,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let mut out = Vec::new();
        let mut after = after.cloned();
        while out.len() < limit {
            let page = self.ids_after(after.as_ref(), limit.max(64)).await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            let loaded = self.load(&page).await?;
            out.extend(
                loaded
                    .into_iter()
                    .flatten()
                    .map(|(_, stored)| stored.view())
                    .filter(|task| filter.matches(task))
                    .take(limit - out.len()),
            );
            after = Some(last);
        }
        Ok(out)
    }

    async fn count_tasks(&self) -> Result<usize, StoreError> {
        let mut pipe = redis::pipe();
        for shard in 0..self.keys.shards() {
            pipe.zcard(self.keys.ids(shard));
        }
        let mut conn = self.conn().await?;
        let counts: Vec<usize> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(counts.into_iter().sum())
    }

    async fn count_tasks_in(&self, prefix: &str) -> Result<usize, StoreError> {
        // Ids sit in each shard's zset with score 0, ordered by bytes:
        // those starting with the prefix are one lexical range, counted in
        // O(log n). Ids are ASCII, so prefix + 0xff bounds them all.
        let min = [b"[".as_slice(), prefix.as_bytes()].concat();
        let max = [b"[".as_slice(), prefix.as_bytes(), &[0xff]].concat();
        let mut pipe = redis::pipe();
        for shard in 0..self.keys.shards() {
            pipe.cmd("ZLEXCOUNT")
                .arg(self.keys.ids(shard))
                .arg(&min)
                .arg(&max);
        }
        let mut conn = self.conn().await?;
        let counts: Vec<usize> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(counts.into_iter().sum())
    }

    async fn fingerprint_key(&self, candidate: [u8; 32]) -> Result<Vec<u8>, StoreError> {
        if let Some(known) = self.fingerprint_key.get() {
            return Ok(known.clone());
        }
        let key = self.keys.fingerprint_key();
        let mut conn = self.conn().await?;
        // The first writer wins; everyone reads what won.
        let (stored,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(crate::hex::encode(&candidate))
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        stored
            .and_then(|hex| crate::hex::decode(&hex))
            .filter(|bytes| bytes.len() == 32)
            .map(|bytes| self.fingerprint_key.get_or_init(|| bytes).clone())
            .ok_or_else(|| StoreError::Corrupt {
                reason: "not 32 bytes in hex".into(),
                key,
            })
    }

    async fn fire(&self, batch: Vec<Firing>) -> Result<Vec<Fired>, StoreError> {
        let ids: Vec<TaskId> = batch.iter().map(|f| f.task_id.clone()).collect();
        // On error some firings of the batch may have applied: the caller
        // retries the batch with the retry flag, which answers those as
        // before.
        self.steps(&ids, true, || Fired::Stale, |i, stored| {
            let version = stored.record.version;
            let mut fired = stored.fire(batch[i].clone());
            // A retry answered from the applied firing (its reply was
            // lost) writes nothing: it is answered whoever owns the shard
            // now, so the run it dispatched is handed out, not orphaned.
            let replayed = stored.record.version == version;
            // A replayed answer is another replica's (two replicas armed
            // one slot across an ownership move and both retried): it
            // starts nothing and records nothing here; that replica does.
            if replayed
                && let Fired::Done(fire) | Fired::AlreadyClaimed(fire) = &mut fired
                && stored
                    .last_fire
                    .as_ref()
                    .is_some_and(|last| !last.node.is_empty() && last.node != self.node)
            {
                fire.dispatch = Dispatch::None;
                fire.passed = 0;
                fire.cancel.clear();
                fire.dropped.clear();
                fire.ended = false;
            }
            let wrote = match &fired {
                Fired::Stale | Fired::NotAhead => Wrote::No,
                _ if replayed => Wrote::No,
                // Runs to cancel may be going on other replicas.
                Fired::Done(fire) | Fired::AlreadyClaimed(fire) if !fire.cancel.is_empty() => {
                    Wrote::Notice(changes::cancel_notice(&fire.cancel))
                }
                _ => Wrote::Quiet,
            };
            (fired, wrote)
        })
        .await
    }

    async fn trigger(
        &self,
        id: &TaskId,
        occurrence_id: String,
        now: DateTime<Utc>,
    ) -> Result<Triggered, StoreError> {
        let answer = self
            .step_one(id, |stored| {
                let triggered = stored.trigger(occurrence_id.clone(), now);
                let wrote = match &triggered {
                    Triggered::Done(fire) if !fire.cancel.is_empty() => {
                        Wrote::Notice(changes::cancel_notice(&fire.cancel))
                    }
                    // The task's version moved: its owner arms it again.
                    Triggered::Done(_) => Wrote::control(true),
                    _ => Wrote::No,
                };
                (triggered, wrote)
            })
            .await?;
        Ok(answer.unwrap_or(Triggered::NotFound))
    }

    async fn halt(
        &self,
        id: &TaskId,
        halt: Halt,
        now: DateTime<Utc>,
    ) -> Result<Halted, StoreError> {
        let answer = self
            .step_one(id, |stored| {
                let halted = stored.halt(halt.clone(), now);
                let changed = matches!(halted, Halted::Done { .. });
                (halted, Wrote::control(changed))
            })
            .await?;
        Ok(answer.unwrap_or(Halted::NotFound))
    }

    async fn halt_dropped(
        &self,
        id: &TaskId,
        call: &str,
    ) -> Result<Option<(Vec<RunRecord>, bool)>, StoreError> {
        Ok(self
            .load_one(id)
            .await?
            .and_then(|(_, stored)| stored.halt_dropped(call)))
    }

    async fn applied_trigger(
        &self,
        id: &TaskId,
        occurrence_id: &str,
    ) -> Result<Option<super::Fire>, StoreError> {
        Ok(self
            .load_one(id)
            .await?
            .and_then(|(_, stored)| stored.applied_trigger(occurrence_id)))
    }

    async fn abandon_runs(&self, ids: &[TaskId]) -> Result<Vec<Abandoned>, StoreError> {
        // All in one round of steps (the sweep asks for every task with
        // runs, most of them of live replicas: nothing to give up).
        let taken = self
            .steps(ids, false, || None, |_, stored| {
                let (runs, lost, promoted) = stored.abandon(|runner| self.leases.gone(runner));
                let changed = !runs.is_empty() || lost > 0;
                (
                    Some((runs, lost, promoted)),
                    if changed { Wrote::Quiet } else { Wrote::No },
                )
            })
            .await?;
        Ok(ids
            .iter()
            .zip(taken)
            .filter_map(|(id, taken)| {
                let (runs, lost_results, promoted) = taken?;
                (!runs.is_empty() || lost_results > 0).then(|| Abandoned {
                    task_id: id.clone(),
                    runs,
                    lost_results,
                    promoted,
                })
            })
            .collect())
    }

    async fn start_runs(&self, runs: &[RunStart]) -> Result<Vec<bool>, StoreError> {
        // Each task once, with the indexes of its runs.
        let mut by_task: HashMap<&TaskId, Vec<usize>> = HashMap::new();
        for (i, start) in runs.iter().enumerate() {
            by_task.entry(&start.record.task_id).or_default().push(i);
        }
        let (ids, of_task): (Vec<TaskId>, Vec<Vec<usize>>) = by_task
            .into_iter()
            .map(|(id, runs)| (id.clone(), runs))
            .unzip();
        let started = self
            .steps(&ids, false, Vec::new, |t, stored| {
                let started: Vec<(usize, bool)> = of_task[t]
                    .iter()
                    .map(|&i| (i, stored.start(runs[i].record.run)))
                    .collect();
                let changed = started.iter().any(|(_, s)| *s);
                (started, if changed { Wrote::Quiet } else { Wrote::No })
            })
            .await?;
        let mut answers = vec![false; runs.len()];
        for (i, s) in started.into_iter().flatten() {
            answers[i] = s;
        }
        Ok(answers)
    }

    async fn record(&self, batch: &[Recording]) -> Result<Recorded, StoreError> {
        self.record_batch(batch).await
    }

    async fn results_after(
        &self,
        after: Option<&str>,
        tasks: &[TaskId],
        limit: usize,
    ) -> Result<Vec<Arc<TaskResult>>, StoreError> {
        self.results_after_cursor(after, tasks, limit).await
    }

    async fn head_cursor(&self) -> Result<String, StoreError> {
        self.head().await
    }

    async fn check(&self) -> Result<Checked, StoreError> {
        self.check_epoch().await
    }

    async fn server_time(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut conn = self.conn().await?;
        let (secs, micros): (i64, u32) = redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(DateTime::from_timestamp(secs, micros.saturating_mul(1_000)))
    }

    fn tails_log(&self) -> bool {
        true
    }

    fn lease_every(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.lease_ms / 5).max(Duration::from_millis(50)))
    }

    async fn lease(&self, mode: LeaseMode) -> Result<Option<LeaseChange>, StoreError> {
        self.lease_step(mode).await.map(Some)
    }

    fn owns(&self, id: &TaskId) -> bool {
        self.leases.fence(self.keys.shard_of(id.as_str())).is_some()
    }

    async fn follow_changes(
        &self,
        sink: tokio::sync::mpsc::UnboundedSender<Change>,
        stop: CancellationToken,
    ) {
        self.follow_channel(sink, stop).await;
    }

    async fn take_stream_slot(
        &self,
        namespace: &str,
        holder: &str,
        max: usize,
    ) -> Result<Option<bool>, StoreError> {
        let mut conn = self.conn().await?;
        let taken: i64 = self
            .stream_slots
            .key(self.keys.stream_slots(namespace))
            .arg("take")
            .arg(crate::store::STREAM_SLOT_TTL.as_millis() as u64)
            .arg(holder)
            .arg(max)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(Some(taken == 1))
    }

    async fn keep_stream_slots(&self, slots: &[(Arc<str>, String)]) -> Result<(), StoreError> {
        if slots.is_empty() {
            return Ok(());
        }
        let mut call = self.stream_slots.prepare_invoke();
        call.arg("keep")
            .arg(crate::store::STREAM_SLOT_TTL.as_millis() as u64);
        for (namespace, holder) in slots {
            call.key(self.keys.stream_slots(namespace)).arg(holder);
        }
        let mut conn = self.conn().await?;
        let _: i64 = call.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(())
    }

    async fn release_stream_slots(&self, slots: &[(Arc<str>, String)]) -> Result<(), StoreError> {
        if slots.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (namespace, holder) in slots {
            pipe.zrem(self.keys.stream_slots(namespace), holder).ignore();
        }
        let mut conn = self.conn().await?;
        let _: () = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(())
    }

    async fn append_ends(&self, ends: &[TaskId]) -> Result<(), StoreError> {
        self.append_end_entries(ends).await
    }

    async fn tail(&self, after: String, sink: LogSink, drain: CancellationToken) {
        self.tail_log(after, sink, drain).await;
    }

    fn cursor_seq(&self, cursor: &str) -> Option<u64> {
        // Millisecond and sequence packed in one number that orders as the
        // ids do: 22 bits of sequence are four million entries in one ms.
        let (ms, seq) = self.parse_cursor(cursor).ok()?;
        Some((ms << 22) | seq.min((1 << 22) - 1))
    }
}

#[cfg(test)]
mod tests {
    use redis::ToRedisArgs;

    use super::OrEmpty;

    #[test]
    fn a_due_time_is_always_one_argument() {
        // Not due: an empty argument, not none (the script reads the
        // arguments by position).
        assert_eq!(OrEmpty::<i64>(None).to_redis_args(), vec![Vec::<u8>::new()]);
        assert_eq!(
            OrEmpty(Some(1_764_597_600_123i64)).to_redis_args(),
            vec![b"1764597600123".to_vec()]
        );
    }
}
