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
        for (shard, writes) in by_shard {
            for chunk in writes.chunks(512) {
                let mut invocation = self.write_call(shard, chunk.len(), None);
                for write in chunk {
                    match write {
                        Restoring::Task(id, task) => {
                            // Starting above every rev it had: a step that
                            // read it before the loss cannot match.
                            let start_rev = Some(task.rev + 1);
                            let record = &task.stored.record;
                            let stamp = (record.created_at.timestamp_millis(), record.version);
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
                        // Another replica held a newer state: read it next.
                        self.held.doubt(id, task.rev);
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
        Ok(Checked::Restored {
            tasks: restored,
            lost_epoch,
            epoch,
        })
    }
}
