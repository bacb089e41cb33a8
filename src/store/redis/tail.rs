//! The log's tailing reader: one per process, on a connection of its own
//! (a blocking XREAD would stall every command behind it on a pooled
//! connection), feeding the process's result fan-out from the log itself,
//! its own results included. A reader thus sees every result appended to
//! the log in log order, whichever process appended it, and a task's end
//! where its end entry is.

use std::{sync::Arc, time::Duration};

use redis::{self, AsyncConnectionConfig, Value, aio::MultiplexedConnection, streams::StreamReadOptions};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{RedisStore, codec};
use crate::{
    store::LogSink,
    task::{TaskId, TaskResult},
};

/// How long one XREAD blocks waiting for new entries: also how soon the
/// reader notices it is asked to drain.
const BLOCK: Duration = Duration::from_millis(250);

/// Most entries one read takes.
const READ_COUNT: usize = 4096;

/// Pause before reconnecting after a failure; doubles up to the maximum.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(1);

impl RedisStore {
    /// See [`crate::store::Store::tail`]. Its connection is closed (QUIT)
    /// before this returns, so Redis has forgotten it when the server has.
    pub(super) async fn tail_log(&self, after: String, sink: LogSink, drain: CancellationToken) {
        let mut conn: Option<MultiplexedConnection> = None;
        self.follow(after, sink, drain, &mut conn).await;
        if let Some(mut conn) = conn {
            let quit = redis::cmd("QUIT");
            let _ = tokio::time::timeout(Duration::from_secs(1), quit.query_async::<()>(&mut conn))
                .await;
        }
    }

    async fn follow(
        &self,
        after: String,
        sink: LogSink,
        drain: CancellationToken,
        conn: &mut Option<MultiplexedConnection>,
    ) {
        let mut epoch = self.epoch();
        let mut last = after
            .strip_prefix(&format!("{epoch}-"))
            .unwrap_or("0-0")
            .to_string();
        let mut pause = RECONNECT_FIRST;
        let mut failing = false;
        loop {
            let draining = drain.is_cancelled();
            // A Redis that came back empty starts a new log: read it from
            // its start (its ids may be below the old log's).
            let now_epoch = self.epoch();
            if now_epoch != epoch {
                epoch = now_epoch;
                last = "0-0".to_string();
                sink.lost(&format!("{epoch}-0-0"));
            }
            let reply = match self.read(conn, &last, draining).await {
                Ok(reply) => reply,
                Err(error) => {
                    *conn = None;
                    if draining {
                        warn!(%error, "log reader stops without draining: redis failed");
                        return;
                    }
                    if !failing {
                        warn!(%error, "log reader cannot read redis, reconnecting");
                        failing = true;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RECONNECT_MAX);
                    continue;
                }
            };
            if self.epoch() != epoch {
                // Restored while this read was waiting: what it read may be
                // of the new log, which is read from its start after the
                // loss is told.
                continue;
            }
            if failing {
                info!("log reader reading again");
                failing = false;
                pause = RECONNECT_FIRST;
            }
            let entries = log_entries(reply);
            if entries.is_empty() {
                if draining {
                    return;
                }
                continue;
            }
            let read = entries.len();
            let mut results: Vec<Arc<TaskResult>> = Vec::with_capacity(read);
            for entry in entries {
                if let Some(ended) = entry.ended {
                    // Results before the end go first, then the end.
                    if let Ok(task) = std::str::from_utf8(&ended).map_err(drop).and_then(|t| TaskId::parse(t).map_err(drop)) {
                        sink.publish(&std::mem::take(&mut results), &[task]);
                    }
                } else {
                    match codec::decode_result_bytes(&entry.result) {
                        Ok(mut result) => {
                            result.cursor = format!("{epoch}-{}", entry.id);
                            results.push(Arc::new(result));
                        }
                        Err(reason) => {
                            warn!(id = %entry.id, %reason, "log entry unreadable, not delivered");
                        }
                    }
                }
                last = entry.id;
            }
            if !results.is_empty() {
                sink.publish(&results, &[]);
            }
            if draining && read < READ_COUNT {
                return;
            }
        }
    }

    /// One read of the log after `last`, on the reader's connection (made
    /// first if there is none); blocking for new entries unless draining.
    async fn read(
        &self,
        conn: &mut Option<MultiplexedConnection>,
        last: &str,
        draining: bool,
    ) -> Result<Value, redis::RedisError> {
        let connection = match conn {
            Some(c) => c,
            None => conn.insert(self.tail_connection().await?),
        };
        let mut options = StreamReadOptions::default().count(READ_COUNT);
        if !draining {
            options = options.block(BLOCK.as_millis() as usize);
        }
        redis::cmd("XREAD")
            .arg(&options)
            .arg("STREAMS")
            .arg(self.keys.log())
            .arg(last)
            .query_async(connection)
            .await
    }

    /// A named connection of the reader's own, with a reply bound above
    /// the blocking time.
    async fn tail_connection(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        let client = redis::Client::open(self.url.as_str())?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("{}:log", self.client_name))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(conn)
    }
}

/// One log entry as the reader needs it.
struct Entry {
    id: String,
    /// The result (`r`), encoded.
    result: Vec<u8>,
    /// The task whose end this entry is (`e`).
    ended: Option<Vec<u8>>,
}

/// The entries of an XREAD reply on the log (one stream), taken apart by
/// hand: redis-rs' typed stream reply copies every field into a map of
/// values, which was a tenth of the server's CPU under a herd (profiled).
/// Nil (the block timed out) and anything unexpected read as no entries.
fn log_entries(reply: Value) -> Vec<Entry> {
    let lists: Vec<Value> = match reply {
        // RESP2: one [name, entries] pair per stream.
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        // RESP3: a map of stream name to entries.
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for list in lists {
        let Value::Array(entries) = list else {
            continue;
        };
        for entry in entries {
            let Value::Array(mut entry) = entry else {
                continue;
            };
            let (Some(fields), Some(id)) = (entry.pop(), entry.pop()) else {
                continue;
            };
            let Some(id) = text(id) else {
                continue;
            };
            let fields = match fields {
                Value::Array(fields) => fields,
                Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                _ => continue,
            };
            let mut result = Vec::new();
            let mut ended = None;
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                match (bytes(name).as_deref(), bytes(value)) {
                    (Some(b"r"), Some(value)) => result = value,
                    (Some(b"e"), Some(value)) => ended = Some(value),
                    _ => {}
                }
            }
            out.push(Entry { id, result, ended });
        }
    }
    out
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}

fn text(value: Value) -> Option<String> {
    bytes(value).and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// Two entries: a result and an end.
    fn entries() -> Value {
        Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("t"), bulk("a"), bulk("r"), bulk("payload")]),
            ]),
            Value::Array(vec![bulk("1-1"), Value::Array(vec![bulk("e"), bulk("a")])]),
        ])
    }

    fn read(reply: Value) -> Vec<(String, Vec<u8>, Option<Vec<u8>>)> {
        log_entries(reply)
            .into_iter()
            .map(|e| (e.id, e.result, e.ended))
            .collect()
    }

    #[test]
    fn xread_replies_read_the_same_in_resp2_and_resp3() {
        let want = vec![
            ("1-0".to_string(), b"payload".to_vec(), None),
            ("1-1".to_string(), Vec::new(), Some(b"a".to_vec())),
        ];
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("log"), entries()])]);
        assert_eq!(read(resp2), want);
        // Two entries in a RESP3 map value must not pass for a RESP2
        // [name, entries] pair.
        let resp3 = Value::Map(vec![(bulk("log"), entries())]);
        assert_eq!(read(resp3), want);
        assert!(read(Value::Nil).is_empty(), "a block that timed out");
    }
}
