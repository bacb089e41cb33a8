//! Replicas sharing one Redis: membership and the shards' leases
//! (lease.lua), as this process last took them.
//!
//! Each replica takes one lease step per tick. It owns the shards the step
//! says it owns, with the fence each was taken under; firing steps carry
//! that fence and Redis refuses them once it is no longer current or the
//! lease expired by Redis's clock (write_tasks.lua). So a replica paused
//! or cut off past its lease fires nothing, whatever its own clock says.

use std::{
    collections::HashSet,
    sync::{
        RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::{RedisStore, unavailable};
use crate::store::{LeaseChange, LeaseMode, StoreError};

/// The shards this process owns and the replicas known to be running.
pub(super) struct Leases {
    /// Per shard, the fence it is owned under; 0: not owned (fences start
    /// at 1).
    fences: Vec<AtomicU64>,
    /// Replicas whose runs are going (their lease holds), as of the last
    /// step, and when that step was; None before the first.
    runners: RwLock<Option<(HashSet<String>, Instant)>>,
    /// How old that may be and still be trusted to say a replica is gone:
    /// half a lease (an older one may miss a replica that joined since).
    fresh_for: Duration,
}

impl Leases {
    pub(super) fn new(shards: u32, lease: Duration) -> Leases {
        Leases {
            fences: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            runners: RwLock::new(None),
            fresh_for: lease / 2,
        }
    }

    /// Forgets shard `shard` if it is still held under `fence`: Redis
    /// refused a step under it (the lease lapsed, this process was paused
    /// or cut off). The next lease step takes it again if it can, and
    /// reports it gained, so its tasks are armed again.
    pub(super) fn refused(&self, shard: u32, fence: u64) {
        if let Some(held) = self.fences.get(shard as usize) {
            let _ = held.compare_exchange(fence, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Whether `me` is the only replica running, as a recent lease step
    /// says: then nobody follows the changes it would tell. A replica that
    /// starts registers as a runner first and that step tells the others,
    /// which step at once, so they stop being alone before it arms
    /// anything.
    pub(super) fn alone(&self, me: &str) -> bool {
        let runners = self.runners.read().unwrap_or_else(|e| e.into_inner());
        matches!(
            runners.as_ref(),
            Some((live, at)) if at.elapsed() <= self.fresh_for
                && live.len() == 1
                && live.contains(me)
        )
    }

    /// Whether the last lease step, however old, showed `me` alone: then
    /// no other replica holds a state of the tasks that a Redis which came
    /// back empty could be written back from.
    pub(super) fn was_alone(&self, me: &str) -> bool {
        let runners = self.runners.read().unwrap_or_else(|e| e.into_inner());
        matches!(runners.as_ref(), Some((live, _)) if live.len() == 1 && live.contains(me))
    }

    /// Forgets every shard: Redis lost its leases (it came back empty).
    pub(super) fn forget_all(&self) {
        for held in &self.fences {
            held.store(0, Ordering::Release);
        }
    }

    /// The fence shard `shard` is owned under, None when not owned.
    pub(super) fn fence(&self, shard: u32) -> Option<u64> {
        let fence = self.fences.get(shard as usize)?.load(Ordering::Acquire);
        (fence != 0).then_some(fence)
    }

    /// Whether runs claimed by `runner` are gone: its replica's lease
    /// lapsed (or it left), or the run predates replicas (no runner). Only
    /// a recent lease step says so: with none, nothing is gone.
    pub(super) fn gone(&self, runner: &str) -> bool {
        let runners = self.runners.read().unwrap_or_else(|e| e.into_inner());
        match runners.as_ref() {
            Some((live, at)) if at.elapsed() <= self.fresh_for => {
                runner.is_empty() || !live.contains(runner)
            }
            _ => false,
        }
    }
}

/// What lease.lua answers: owned (shard, fence) pairs, lapsed runners,
/// runners that left, live runners.
type LeaseReply = (Vec<u64>, Vec<String>, Vec<String>, Vec<String>);

impl RedisStore {
    /// One lease step (see lease.lua) in `mode`; returns what changed for
    /// this process.
    pub(super) async fn lease_step(&self, mode: LeaseMode) -> Result<LeaseChange, StoreError> {
        let mut call = super::script::ScriptCall::new(&self.lease);
        call.key(self.keys.members())
            .key(self.keys.runners())
            .key(self.keys.compat())
            .key(self.keys.quiet())
            .key(self.keys.epoch());
        for shard in 0..self.keys.shards() {
            call.key(self.keys.lease(shard));
        }
        let mode_name = match mode {
            LeaseMode::Member => "member",
            LeaseMode::Draining => "draining",
            LeaseMode::Leave => "leave",
        };
        call.arg(&self.node)
            .arg(self.lease_ms)
            .arg(mode_name)
            .arg(self.keys.changes())
            .arg(super::STORE_FORMAT)
            .arg(self.epoch());
        let mut conn = self.conn().await?;
        let (owned, dead, left, runners): LeaseReply =
            call.invoke_async(&mut conn).await.map_err(unavailable)?;
        let mut now_owned = vec![0u64; self.keys.shards() as usize];
        for pair in owned.chunks_exact(2) {
            if let Some(slot) = now_owned.get_mut(pair[0] as usize) {
                *slot = pair[1];
            }
        }
        let mut change = LeaseChange {
            dead,
            left,
            ..LeaseChange::default()
        };
        for (shard, (held, fence)) in self.leases.fences.iter().zip(now_owned).enumerate() {
            let before = held.swap(fence, Ordering::AcqRel);
            match (before != 0, fence != 0) {
                (false, true) => change.gained.push(shard as u32),
                (true, false) => change.lost.push(shard as u32),
                // Owned still; a new fence means it was lost and taken
                // back in between, which the caller treats as a gain.
                (true, true) if before != fence => change.gained.push(shard as u32),
                _ => {}
            }
        }
        *self.leases.runners.write().unwrap_or_else(|e| e.into_inner()) =
            Some((runners.into_iter().collect(), Instant::now()));
        Ok(change)
    }
}
