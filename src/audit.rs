//! The audit trail (`--audit-log PATH`): one JSON line per call that
//! changes a task (and per read with `--audit-reads`), in a file of its own
//! so the main log stays quiet at scale. Written by one thread that owns
//! the file; callers hand events over a bounded channel and wait when it
//! is full, so an event is never dropped to keep up.

use std::{
    io::{BufWriter, Write},
    path::Path,
    sync::Arc,
};

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::mpsc;

/// Events waiting for the writer; beyond it, callers wait (backpressure
/// rather than loss).
const QUEUE: usize = 8192;

/// One audited call.
#[derive(Debug, Clone)]
pub struct Event {
    /// When the call was answered.
    pub at: DateTime<Utc>,
    /// The token name or certificate subject.
    pub caller: Arc<str>,
    /// The caller's namespace, if confined to one.
    pub namespace: Option<Arc<str>>,
    /// The RPC, such as `RegisterTask`.
    pub method: &'static str,
    /// The task, when the call names one (or created one).
    pub task_id: Option<String>,
    /// The gRPC status code name, such as `OK` or `NOT_FOUND`.
    pub outcome: &'static str,
}

impl Event {
    fn to_json(&self) -> String {
        serde_json::json!({
            "time": self.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "caller": &*self.caller,
            "namespace": self.namespace.as_deref(),
            "method": self.method,
            "task_id": self.task_id,
            "outcome": self.outcome,
        })
        .to_string()
    }
}

/// Where audit events go; cheap to clone. Off unless a path is given.
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    tx: Option<mpsc::Sender<Event>>,
    /// Reads are audited too.
    reads: bool,
    /// The writer thread, joined by [`AuditLog::finish`].
    writer: Option<Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>>,
}

/// How long shutdown waits for the audit writer to write what is queued.
const FINISH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the audit log cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("--audit-log {path}: {source}")]
pub struct AuditError {
    /// The file.
    pub path: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl AuditLog {
    /// Opens `path` for appending and starts its writer thread, which ends
    /// (having written everything) once every handle is dropped.
    pub fn open(path: &Path, reads: bool) -> Result<AuditLog, AuditError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| AuditError {
                path: path.display().to_string(),
                source,
            })?;
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
        let shown = path.display().to_string();
        let spawned = std::thread::Builder::new()
            .name("recur-audit".into())
            .spawn(move || {
                let mut out = BufWriter::new(file);
                while let Some(event) = rx.blocking_recv() {
                    let mut written = writeln!(out, "{}", event.to_json());
                    // Everything already queued goes out in the same write.
                    while let Ok(event) = rx.try_recv() {
                        written = written.and_then(|()| writeln!(out, "{}", event.to_json()));
                    }
                    if let Err(e) = written.and_then(|()| out.flush()) {
                        tracing::error!(path = %shown, error = %e, "writing the audit log failed; events are being lost");
                    }
                }
            });
        match spawned {
            Ok(handle) => Ok(AuditLog {
                tx: Some(tx),
                reads,
                writer: Some(Arc::new(std::sync::Mutex::new(Some(handle)))),
            }),
            Err(source) => Err(AuditError {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Waits until the writer has written every event and closed the file,
    /// once every other handle is gone (shutdown calls it last), for at
    /// most [`FINISH_WAIT`]; events still queued after it are reported.
    pub async fn finish(self) {
        let AuditLog { tx, writer, .. } = self;
        drop(tx);
        let Some(handle) = writer.and_then(|w| w.lock().ok().and_then(|mut h| h.take())) else {
            return;
        };
        let joined = tokio::task::spawn_blocking(move || handle.join());
        if tokio::time::timeout(FINISH_WAIT, joined).await.is_err() {
            tracing::error!("the audit log was not finished in time; its last events may be lost");
        }
    }

    /// Hands a refused call's event to the writer without waiting: when
    /// its queue is full (a flood of refusals), the event is dropped and
    /// the drop logged, so refusals cannot slow anyone down. Changes that
    /// landed always go through [`AuditLog::record`], which waits.
    pub fn record_refusal(&self, event: Event) {
        if let Some(tx) = &self.tx
            && tx.try_send(event).is_err()
        {
            tracing::warn!("audit queue full: a refused call's audit event was dropped");
        }
    }

    /// Whether a call of this kind is audited.
    pub fn wants(&self, read: bool) -> bool {
        self.tx.is_some() && (!read || self.reads)
    }

    /// Hands `event` to the writer, waiting while its queue is full.
    pub async fn record(&self, event: Event) {
        if let Some(tx) = &self.tx
            && tx.send(event).await.is_err()
        {
            tracing::error!("the audit writer has stopped; an audit event was lost");
        }
    }
}
