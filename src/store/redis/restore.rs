//! Noticing a Redis that came back empty, and writing back what this
//! process holds: every task as it last wrote or read it (held.rs), under
//! a new epoch so every earlier cursor is DATA_LOSS.

use std::{collections::BTreeMap, sync::Arc};

use redis::AsyncCommands;

use super::{Held, RedisStore, unavailable};
use crate::{
    store::{Checked, StoreError},
    task::TaskId,
};

/// One write of a restore: a held task, or a tombstone.
enum Restoring<'a> {
    Task(&'a TaskId, &'a Arc<Held>),
    Tomb(&'a TaskId, (i64, u64)),
}

impl Restoring<'_> {
    fn id(&self) -> &TaskId {
        match self {
            Restoring::Task(id, _) | Restoring::Tomb(id, _) => id,
        }
    }
}

impl RedisStore {
    /// Opens (`take`: every shard taken from its owner too) or extends the
    /// write-back window; see quiet.lua.
    async fn window(
        &self,
        conn: &mut crate::redis_pool::RedisConnection,
        take: bool,
    ) -> Result<(), StoreError> {
        let mut quiet = super::script::ScriptCall::new(&self.quiet);
        quiet.key(self.keys.quiet());
        for shard in 0..self.keys.shards() {
            quiet.key(self.keys.lease(shard));
        }
        quiet.arg(self.lease_ms).arg(if take { "1" } else { "0" });
        let _till: i64 = quiet.invoke_async(conn).await.map_err(unavailable)?;
        Ok(())
    }

    /// See [`crate::store::Store::check`].
    pub(super) async fn check_epoch(&self) -> Result<Checked, StoreError> {
        let mut conn = self.conn().await?;
        let found: Option<String> = conn.get(self.keys.epoch()).await.map_err(unavailable)?;
        if found.as_deref() == Some(self.epoch().as_str()) {
            return Ok(Checked::Same);
        }
        let _restoring = self.restoring.lock().await;
        let lost_epoch = self.epoch();
        super::check_format(&mut conn, &self.keys).await?;
        // The write-back window (quiet.lua): no replica takes a shard, and
        // nothing but the write-back writes, until one lease after the last
        // replica finished writing back what it holds: a replica that took
        // a shard while Redis was empty would fire from the first state
        // written back, which may be older than what another replica holds
        // (a slot fired before the loss would fire again). Opened once per
        // loss by this replica, on its first try (a write-back that keeps
        // failing does not hold the window open), extended while it goes on
        // and when it is done. This process's
        // leases went with Redis: the next step that takes a shard reports
        // it gained, and its tasks are read again.
        // A process that was alone (the one process of a store) needs no
        // window: nobody else holds a state to write back.
        let window = !self.leases.was_alone(&self.node);
        let first_try = self
            .quiet_for
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            != Some(lost_epoch.as_str());
        if window && first_try {
            self.window(&mut conn, true).await?;
            *self.quiet_for.lock().unwrap_or_else(|e| e.into_inner()) = Some(lost_epoch.clone());
        }
        self.leases.forget_all();
        // The fingerprint key goes back first, so a fingerprint read after
        // the loss matches one read before it, on every replica.
        if let Some(key) = self.fingerprint_key.get() {
            redis::cmd("SET")
                .arg(self.keys.fingerprint_key())
                .arg(crate::hex::encode(key))
                .arg("NX")
                .query_async::<()>(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        // Kept open while this write-back lasts (it may outlast a lease).
        let mut extended = std::time::Instant::now();
        let half_lease = std::time::Duration::from_millis(self.lease_ms / 2);
        // Write back every definition held and every tombstone, by shard.
        // Other replicas do the same from what they hold: each write lands
        // only over an older state of its task (write_tasks.lua), so the
        // newest any of them held wins, and a deleted task stays deleted.
        // Each write that lands is told to the others, whose older state
        // of it is then read again.
        let held: Vec<(TaskId, Arc<Held>)> = self.held.all();
        let tombs = self.held.tombs();
        let mut by_shard: BTreeMap<u32, Vec<Restoring<'_>>> = BTreeMap::new();
        for (id, task) in &held {
            by_shard
                .entry(self.keys.shard_of(id.as_str()))
                .or_default()
                .push(Restoring::Task(id, task));
        }
        for (id, tomb) in &tombs {
            by_shard
                .entry(self.keys.shard_of(id.as_str()))
                .or_default()
                .push(Restoring::Tomb(id, tomb.stamp));
        }
        let mut restored = 0;
        let mut superseded: Vec<TaskId> = Vec::new();
        for (shard, writes) in by_shard {
            for chunk in writes.chunks(512) {
                if window && extended.elapsed() >= half_lease {
                    self.window(&mut conn, false).await?;
                    extended = std::time::Instant::now();
                }
                let mut invocation = self.write_call(shard, chunk.len(), None);
                for write in chunk {
                    match write {
                        Restoring::Task(id, task) => {
                            // Starting above every rev it had: a step that
                            // read it before the loss cannot match.
                            let start_rev = Some(task.rev + 1);
                            let record = &task.stored.record;
                            let stamp = (record.created_at.timestamp_millis(), record.version);
                            // Ordered by (registration, version, rev): two
                            // replicas may hold one version, the later
                            // write (a run started, a result settled) with
                            // the higher rev.
                            self.add_task(
                                &mut invocation,
                                id,
                                super::Expected::Older,
                                Some((&task.stored, &task.spec_field)),
                                start_rev,
                                super::changes::CHANGED,
                                stamp,
                            );
                        }
                        Restoring::Tomb(id, stamp) => self.add_task(
                            &mut invocation,
                            id,
                            super::Expected::Older,
                            None,
                            None,
                            super::changes::CHANGED,
                            *stamp,
                        ),
                    }
                }
                self.add_tombs(&mut invocation, chunk.iter().map(Restoring::id));
                let lost: Vec<usize> = invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                for (i, write) in chunk.iter().enumerate() {
                    let Restoring::Task(id, task) = write else { continue };
                    if lost.contains(&(i + 1)) {
                        // Another replica held a newer state: read below.
                        superseded.push((*id).clone());
                        continue;
                    }
                    restored += 1;
                    if let Some(request_id) = &task.stored.request_id {
                        let _: bool = conn
                            .set_nx(self.keys.request(request_id), id.as_str())
                            .await
                            .map_err(unavailable)?;
                    }
                    self.held.keep(
                        id,
                        Held::new(task.rev + 1, task.stored.clone(), task.spec_field.clone()),
                    );
                }
            }
        }
        if window {
            self.window(&mut conn, false).await?;
        }
        // The epoch last: until it is there every step answers UNAVAILABLE,
        // and a crash midway leaves no epoch, so the next start does not
        // take a half-restored store for a whole one without saying so.
        let fresh = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let _: bool = conn
            .set_nx(self.keys.epoch(), &fresh)
            .await
            .map_err(unavailable)?;
        let epoch: String = conn.get(self.keys.epoch()).await.map_err(unavailable)?;
        *self.epoch.write().unwrap_or_else(|e| e.into_inner()) = epoch.clone();
        // What another replica wrote back over this one's: held again as
        // read (revs of the lost store are no longer comparable with the
        // new ones, so the held state is replaced, not kept by rev).
        for id in &superseded {
            self.held.drop_for_read(id);
        }
        for chunk in superseded.chunks(512) {
            // A failed read leaves them to be read by the next step.
            let _ = self.load_rows(chunk).await;
        }
        Ok(Checked::Restored {
            tasks: restored,
            lost_epoch,
            epoch,
        })
    }
}
