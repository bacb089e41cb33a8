//! The key layout of the Redis store; the README's table mirrors it.
//!
//! Every key starts with the configured prefix (default `recur:`) and
//! carries a hash tag, so keys that one script touches together share a
//! Redis Cluster hash slot:
//!
//! - `{meta}`: the store format and epoch;
//! - `{s<N>}`: shard N of the tasks: their hashes, the shard's due index and
//!   id index, and the request ids that hash to it;
//! - `{log}`: the result log and its retention bookkeeping.

use crate::task::TaskId;

/// The store format this build writes. Bump it with any change of what is
/// stored or how replicas share it; see format.lua and the README's
/// "Upgrades" for how builds of two formats share a store.
///
/// 2: replicas (run records name their runner; shard leases fence firing).
pub(crate) const STORE_FORMAT: u32 = 2;

/// The oldest format whose replicas may run beside this build's. Format 1
/// builds fire without leases and give up every run at their start, so
/// none may share a store with a replica of format 2.
pub(crate) const STORE_COMPAT: u32 = 2;

/// The oldest store format this build reads (and raises to its own): a
/// format 1 store has the same records, its runs without a runner.
pub(crate) const STORE_READS_FROM: u32 = 1;

/// How long a deleted task's tombstone is kept, in Redis and in each
/// replica's memory.
pub(crate) const TOMBSTONE_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The shard of `shards` a task id (or request id) belongs to: FNV-1a of
/// the id, stable across processes and versions. Public so operators'
/// tools (and the tests) can tell which replica fires a task: the owner
/// of `{s<N>}:lease`.
pub fn shard_of(id: &str, shards: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % shards.max(1)
}

/// Names of the store's keys under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    shards: u32,
}

impl Keys {
    pub(crate) fn new(prefix: &str, shards: u32) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            shards: shards.max(1),
        }
    }

    pub(crate) fn shards(&self) -> u32 {
        self.shards
    }

    /// The shard a task (or request id) belongs to; see [`shard_of`].
    pub(crate) fn shard_of(&self, id: &str) -> u32 {
        shard_of(id, self.shards)
    }

    /// `<prefix>{meta}:format`: the store format (a number).
    pub(crate) fn format(&self) -> String {
        format!("{}{{meta}}:format", self.prefix)
    }

    /// `<prefix>{meta}:compat`: the oldest format that may still run
    /// against the store (see format.lua).
    pub(crate) fn compat(&self) -> String {
        format!("{}{{meta}}:compat", self.prefix)
    }

    /// `<prefix>{meta}:epoch`: created when the store is first initialised;
    /// every cursor carries it, so an emptied Redis is told apart.
    pub(crate) fn epoch(&self) -> String {
        format!("{}{{meta}}:epoch", self.prefix)
    }

    /// `<prefix>{meta}:fingerprint-key`: the random key of spec
    /// fingerprints (hex), made by the first process that needs it.
    pub(crate) fn fingerprint_key(&self) -> String {
        format!("{}{{meta}}:fingerprint-key", self.prefix)
    }

    /// `<prefix>{meta}:streams:<namespace>`: zset of the namespace's open
    /// result streams (holder ids) by slot expiry (ms, Redis's clock).
    pub(crate) fn stream_slots(&self, namespace: &str) -> String {
        format!("{}{{meta}}:streams:{}", self.prefix, namespace)
    }

    /// `<prefix>{meta}:members`: zset of the replicas that may own shards,
    /// by lease expiry (ms, Redis's clock).
    pub(crate) fn members(&self) -> String {
        format!("{}{{meta}}:members", self.prefix)
    }

    /// `<prefix>{meta}:runners`: zset of the replicas that may have runs
    /// going (members, and those stopping that finish their runs), by
    /// lease expiry; a run whose runner is not here is given up.
    pub(crate) fn runners(&self) -> String {
        format!("{}{{meta}}:runners", self.prefix)
    }

    /// `<prefix>{meta}:quiet`: until when (ms, Redis's clock) no shard
    /// may be taken: one lease after a Redis that came back empty was
    /// written back, so every replica has written back what it holds
    /// before any fires from it.
    pub(crate) fn quiet(&self) -> String {
        format!("{}{{meta}}:quiet", self.prefix)
    }

    /// `<prefix>{meta}:changes`: the pub/sub channel of task changes and
    /// ownership moves (see `changes.rs`).
    pub(crate) fn changes(&self) -> String {
        format!("{}{{meta}}:changes", self.prefix)
    }

    /// `<prefix>{s<N>}:lease`: hash of the shard's lease: `owner` (node
    /// id), `until` (ms, Redis's clock) and `fence` (grows by one per
    /// owner, never reset); firing steps check it.
    pub(crate) fn lease(&self, shard: u32) -> String {
        format!("{}{{s{}}}:lease", self.prefix, shard)
    }

    /// `<prefix>{s<N>}:task:<id>`: hash of `rev` (compare-and-set counter),
    /// `rec` (the task, protobuf), `lc` (its last result's log id), `state`
    /// and `next` (plain text for operators).
    pub(crate) fn task(&self, id: &TaskId) -> String {
        format!(
            "{}{{s{}}}:task:{}",
            self.prefix,
            self.shard_of(id.as_str()),
            id
        )
    }

    /// `<prefix>{s<N>}:tomb:<id>`: a deleted task's stamp (registration
    /// ms and last version plus one), kept for [`TOMBSTONE_TTL`] so a
    /// restore by a replica that missed the delete cannot bring it back.
    pub(crate) fn tomb(&self, id: &TaskId) -> String {
        format!(
            "{}{{s{}}}:tomb:{}",
            self.prefix,
            self.shard_of(id.as_str()),
            id
        )
    }

    /// `<prefix>{s<N>}:due`: zset of the shard's active tasks by next fire
    /// time (ms since the epoch).
    pub(crate) fn due(&self, shard: u32) -> String {
        format!("{}{{s{}}}:due", self.prefix, shard)
    }

    /// `<prefix>{s<N>}:ids`: zset of the shard's task ids (score 0), for
    /// listing in id order.
    pub(crate) fn ids(&self, shard: u32) -> String {
        format!("{}{{s{}}}:ids", self.prefix, shard)
    }

    /// `<prefix>{s<N>}:req:<request id>`: the task a RegisterTask request
    /// id created.
    pub(crate) fn request(&self, request_id: &str) -> String {
        format!(
            "{}{{s{}}}:req:{}",
            self.prefix,
            self.shard_of(request_id),
            request_id
        )
    }

    /// `<prefix>{log}:results`: the result log, a stream of entries `t`
    /// (task id), `n` (output bytes), `r` (the result, protobuf).
    pub(crate) fn log(&self) -> String {
        format!("{}{{log}}:results", self.prefix)
    }

    /// `<prefix>{log}:meta`: hash of `bytes` (output bytes held), `last`
    /// (id of the newest result), `evicted` (highest id retention dropped).
    pub(crate) fn log_meta(&self) -> String {
        format!("{}{{log}}:meta", self.prefix)
    }

    /// `<prefix>{log}:evicted`: hash task id -> highest id of it retention
    /// dropped, so a reader of one task resuming before it gets DATA_LOSS.
    pub(crate) fn evicted(&self) -> String {
        format!("{}{{log}}:evicted", self.prefix)
    }

    /// `<prefix>{log}:applied:<token>`: set (with a TTL) by the script that
    /// recorded the batch `token`, so a retry after a lost reply is told
    /// instead of appending the batch twice.
    pub(crate) fn applied(&self, token: u64) -> String {
        format!("{}{{log}}:applied:{token:016x}", self.prefix)
    }

    /// `<prefix>{log}:hist:<id>`: list of the log ids of the task's held
    /// results, oldest first (per-task retention and per-task reads).
    pub(crate) fn history(&self, id: &TaskId) -> String {
        format!("{}{}", self.history_prefix(), id)
    }

    pub(crate) fn history_prefix(&self) -> String {
        format!("{}{{log}}:hist:", self.prefix)
    }
}
