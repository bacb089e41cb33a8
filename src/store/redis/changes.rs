//! Task changes made by the other replicas. Every control write publishes
//! `<node> <id> <rev> <notice>` on the changes channel in the script that
//! writes it (write_tasks.lua), and a lease step that moved anything
//! publishes `<node> !` (lease.lua). A connection of its own follows the
//! channel and hands each message on, so a replica arms, disarms, pauses
//! or cancels what another replica's call changed within milliseconds.
//!
//! Pub/sub delivers at most once: a message published while this
//! connection was down is lost. So each (re)subscription is followed by a
//! [`Change::Resync`], and the scheduler's periodic reconciliation re-reads
//! every task as the backstop.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::RedisStore;
use crate::{store::Change, task::TaskId};

/// Wait before connecting again after the channel's connection failed.
const RECONNECT: Duration = Duration::from_millis(500);

impl RedisStore {
    /// Follows the changes channel until `stop`, sending what other
    /// replicas changed to `sink`.
    pub(super) async fn follow_channel(
        &self,
        sink: mpsc::UnboundedSender<Change>,
        stop: CancellationToken,
    ) {
        let mut failing = false;
        loop {
            let subscribed = async {
                let client = redis::Client::open(self.url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(self.keys.changes()).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = tokio::select! {
                _ = stop.cancelled() => return,
                subscribed = subscribed => subscribed,
            };
            match pubsub {
                Ok(pubsub) => {
                    if failing {
                        debug!("following task changes again");
                    }
                    failing = false;
                    // Whatever was published while not subscribed is lost.
                    if sink.send(Change::Resync).is_err() {
                        return;
                    }
                    let mut messages = pubsub.into_on_message();
                    loop {
                        let message = tokio::select! {
                            _ = stop.cancelled() => return,
                            message = messages.next() => message,
                        };
                        let Some(message) = message else { break };
                        let Some(change) = parse(message.get_payload_bytes(), &self.node) else {
                            continue;
                        };
                        if let Change::Task { id, .. } = &change {
                            // Whatever this process holds of it is older.
                            self.held.doubt_any(id);
                        }
                        if sink.send(change).is_err() {
                            return;
                        }
                    }
                }
                Err(error) => {
                    if !failing {
                        warn!(%error, "cannot follow task changes; reconciling until it can");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RECONNECT) => {}
            }
        }
    }
}

/// A message of the changes channel; None for this process's own and for
/// one it cannot read (a newer replica's, during an upgrade).
fn parse(payload: &[u8], me: &str) -> Option<Change> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut words = text.split(' ');
    let node = words.next()?;
    if node == me {
        return None;
    }
    let what = words.next()?;
    if what == "!" {
        return Some(Change::Moved);
    }
    let id = TaskId::parse(what).ok()?;
    let _rev = words.next()?;
    let cancel = match words.next() {
        Some(notice) => notice
            .strip_prefix("c:")
            .map(|runs| runs.split(',').filter_map(|r| r.parse().ok()).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    Some(Change::Task { id, cancel })
}

/// The notice of a write that cancels running runs (CANCEL_RUNNING), read
/// back by [`parse`].
pub(super) fn cancel_notice(runs: &[u64]) -> String {
    let runs: Vec<String> = runs.iter().map(u64::to_string).collect();
    format!("c:{}", runs.join(","))
}

/// The notice of any other control write.
pub(super) const CHANGED: &str = ".";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back_and_own_ones_are_skipped() {
        let id = TaskId::parse("a.b-c").unwrap();
        assert!(matches!(
            parse(b"n2 a.b-c 7 .", "n1"),
            Some(Change::Task { id: got, cancel }) if got == id && cancel.is_empty()
        ));
        let notice = cancel_notice(&[3, 4]);
        let message = format!("n2 a.b-c 9 {notice}");
        assert!(matches!(
            parse(message.as_bytes(), "n1"),
            Some(Change::Task { cancel, .. }) if cancel == vec![3, 4]
        ));
        assert!(matches!(parse(b"n2 !", "n1"), Some(Change::Moved)));
        assert!(parse(b"n1 a.b-c 7 .", "n1").is_none(), "its own");
        assert!(parse(b"n2 bad/id 7 .", "n1").is_none());
    }
}
