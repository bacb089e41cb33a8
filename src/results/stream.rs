//! One result stream: replay from the store after a cursor, then live events,
//! with no gap and no duplicate at the seam (the broadcast is subscribed
//! before the store is read, and results are de-duplicated by cursor). A
//! forwarder task feeds a bounded queue; it never waits on a slow reader
//! for live results, it ends that reader's stream with a resume cursor.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::sync::{OwnedSemaphorePermit, broadcast::error::RecvError, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Event;
use crate::{
    scheduler::{Error, Scheduler},
    store::StoreError,
    task::{TaskId, TaskResult},
};

/// Results read from the store per replay step.
const REPLAY_PAGE: usize = 256;

/// What a reader asked for.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    /// Only these tasks; empty for all.
    pub tasks: Vec<TaskId>,
    /// Replay after this cursor.
    pub after: Option<String>,
    /// Replay only.
    pub history_only: bool,
}

/// Why a stream ended (a reader that went away gets nothing).
#[derive(Debug)]
pub enum StreamEnd {
    /// Replay done (history_only), or every named task ended.
    Finished,
    /// The reader fell behind its buffer; resume after `resume`.
    Lagged {
        /// Cursor of the last result queued for the reader.
        resume: String,
    },
    /// The server is shutting down; resume after `resume`.
    ShuttingDown {
        /// Cursor of the last result queued for the reader.
        resume: String,
    },
    /// Reading the store failed midway.
    Failed {
        /// The error.
        error: Error,
        /// Cursor of the last result queued for the reader.
        resume: String,
    },
}

/// Counts open streams; each forwarder holds one unit until it exits.
#[derive(Debug, Default, Clone)]
pub struct StreamGauge(Arc<AtomicUsize>);

impl StreamGauge {
    /// Streams open now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    fn enter(&self) -> GaugeGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        GaugeGuard(self.0.clone())
    }
}

struct GaugeGuard(Arc<AtomicUsize>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The reader's side: results, then at most one end.
pub struct Opened {
    /// Results in cursor order.
    pub results: mpsc::Receiver<TaskResult>,
    /// Sent once the forwarder stops for a reason the reader must hear.
    pub end: oneshot::Receiver<StreamEnd>,
}

/// Checks the request (unknown task: NOT_FOUND; bad or expired cursor) and
/// starts the forwarder. Failing checks start nothing.
pub async fn open(
    scheduler: &Scheduler,
    request: StreamRequest,
    buffer: usize,
    shutdown: CancellationToken,
    permit: OwnedSemaphorePermit,
    gauge: &StreamGauge,
) -> Result<Opened, Error> {
    // Subscribe before reading anything, so nothing published from here on
    // can fall between the replay and the live part.
    let events = scheduler.subscribe();
    let mut remaining = HashSet::new();
    for id in &request.tasks {
        let task = scheduler.get(id).await?;
        if !scheduler.is_finished(&task) {
            remaining.insert(id.clone());
        }
    }
    let store = scheduler.store().clone();
    // Validates the cursor (INVALID_ARGUMENT / DATA_LOSS) before any result goes out.
    store
        .results_after(request.after.as_deref(), &request.tasks, 0)
        .await?;
    let start = match &request.after {
        Some(cursor) => cursor.clone(),
        None if request.history_only => String::new(),
        None => store.head_cursor().await?,
    };
    let (tx, rx) = mpsc::channel(buffer.max(1));
    let (end_tx, end_rx) = oneshot::channel();
    let forwarder = Forwarder {
        scheduler: scheduler.clone(),
        request,
        remaining,
        last_seq: store.cursor_seq(&start).unwrap_or(0),
        last: start,
        tx,
        shutdown,
        _permit: permit,
        _gauge: gauge.enter(),
    };
    tokio::spawn(async move {
        if let Some(end) = forwarder.run(events).await {
            let _ = end_tx.send(end);
        }
    });
    Ok(Opened {
        results: rx,
        end: end_rx,
    })
}

struct Forwarder {
    scheduler: Scheduler,
    request: StreamRequest,
    /// Named tasks that have not ended yet.
    remaining: HashSet<TaskId>,
    /// Cursor of the last result queued (or the start point).
    last: String,
    /// Its position in the log, kept so live results compare by number
    /// without parsing `last` again for each one.
    last_seq: u64,
    tx: mpsc::Sender<TaskResult>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
    _gauge: GaugeGuard,
}

/// How a step of the forwarder ended early.
enum Stop {
    /// The reader went away.
    Gone,
    /// End the stream with this.
    End(StreamEnd),
}

impl Forwarder {
    async fn run(
        mut self,
        mut events: tokio::sync::broadcast::Receiver<Event>,
    ) -> Option<StreamEnd> {
        match self.go(&mut events).await {
            Ok(()) => Some(StreamEnd::Finished),
            Err(Stop::Gone) => None,
            Err(Stop::End(end)) => Some(end),
        }
    }

    fn seq(&self, cursor: &str) -> u64 {
        self.scheduler.store().cursor_seq(cursor).unwrap_or(0)
    }

    fn wanted(&self, result: &TaskResult) -> bool {
        self.request.tasks.is_empty() || self.request.tasks.contains(&result.task_id)
    }

    async fn go(
        &mut self,
        events: &mut tokio::sync::broadcast::Receiver<Event>,
    ) -> Result<(), Stop> {
        self.replay().await?;
        if self.request.history_only {
            return Ok(());
        }
        loop {
            if !self.request.tasks.is_empty() && self.remaining.is_empty() {
                // Every named task has ended; its last result was announced
                // before its end, so deliver what is queued and finish.
                while let Ok(event) = events.try_recv() {
                    if let Event::Result(result) = event {
                        self.offer(&result)?;
                    }
                }
                return Ok(());
            }
            let event = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    // Results announced before the end (runs that finished in
                    // the grace period) still go out, if the reader has room.
                    while let Ok(event) = events.try_recv() {
                        if let Event::Result(result) = event
                            && self.offer(&result).is_err()
                        {
                            break;
                        }
                    }
                    return Err(Stop::End(StreamEnd::ShuttingDown { resume: self.last.clone() }));
                }
                _ = self.tx.closed() => return Err(Stop::Gone),
                event = events.recv() => event,
            };
            match event {
                Ok(Event::Result(result)) => self.offer(&result)?,
                Ok(Event::TaskEnded(id)) => {
                    self.remaining.remove(&id);
                }
                // This forwarder fell behind the broadcast; the store still
                // has what it missed.
                Err(RecvError::Lagged(_)) => self.replay().await?,
                Err(RecvError::Closed) => {
                    return Err(Stop::End(StreamEnd::ShuttingDown {
                        resume: self.last.clone(),
                    }));
                }
            }
        }
    }

    /// Queues a live result without waiting: a full queue ends the stream.
    fn offer(&mut self, result: &TaskResult) -> Result<(), Stop> {
        let seq = self.seq(&result.cursor);
        if !self.wanted(result) || seq <= self.last_seq {
            return Ok(());
        }
        match self.tx.try_send(result.clone()) {
            Ok(()) => {
                self.last = result.cursor.clone();
                self.last_seq = seq;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(Stop::End(StreamEnd::Lagged {
                resume: self.last.clone(),
            })),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Stop::Gone),
        }
    }

    /// Sends every retained result after `last`, at the reader's pace.
    async fn replay(&mut self) -> Result<(), Stop> {
        loop {
            let after = (!self.last.is_empty()).then(|| self.last.clone());
            let page = self
                .scheduler
                .store()
                .results_after(after.as_deref(), &self.request.tasks, REPLAY_PAGE)
                .await
                .map_err(|error| self.failed(error))?;
            let done = page.len() < REPLAY_PAGE;
            for result in page {
                let seq = self.seq(&result.cursor);
                tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => {
                        return Err(Stop::End(StreamEnd::ShuttingDown { resume: self.last.clone() }));
                    }
                    sent = self.tx.send(result.clone()) => {
                        if sent.is_err() {
                            return Err(Stop::Gone);
                        }
                        self.last = result.cursor;
                        self.last_seq = seq;
                    }
                }
            }
            if done {
                return Ok(());
            }
        }
    }

    fn failed(&self, error: StoreError) -> Stop {
        Stop::End(StreamEnd::Failed {
            error: error.into(),
            resume: self.last.clone(),
        })
    }
}
