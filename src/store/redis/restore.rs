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
        // Write back every definition held, by shard; a task already there
        // (written since Redis came back) is newer and stays.
        let held: Vec<(TaskId, Arc<Held>)> = self.held.all();
        let mut by_shard: BTreeMap<u32, Vec<&(TaskId, Arc<Held>)>> = BTreeMap::new();
        for task in &held {
            by_shard
                .entry(self.keys.shard_of(task.0.as_str()))
                .or_default()
                .push(task);
        }
        let mut restored = 0;
        for (shard, tasks) in by_shard {
            for chunk in tasks.chunks(512) {
                let mut invocation = self.write_call(shard, chunk.len(), None);
                for (id, task) in chunk {
                    // Starting above every rev it had: a step that read it
                    // before the loss cannot match.
                    let start_rev = Some(task.rev + 1);
                    self.add_task(&mut invocation, id, None, Some((&task.stored, &task.spec_field)), start_rev, "");
                }
                let lost: Vec<usize> = invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                restored += chunk.len() - lost.len();
                for (i, (id, task)) in chunk.iter().enumerate() {
                    if lost.contains(&(i + 1)) {
                        continue;
                    }
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
