//! One reader's result stream: replay from the store after a cursor, then
//! the live part from its [`Subscription`], with no gap and no duplicate at
//! the seam (the subscription is taken before the store is read, and live
//! results at or before the last one replayed are dropped by cursor, once, at
//! the seam: live batches come in cursor order). The
//! stream is pulled by the reader's own call; nothing is spawned for it, so
//! a reader that goes away takes its stream with it.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::fanout::{Delivery, Subscription};
use crate::{
    scheduler::{Error, Scheduler},
    store::{Store, StoreError},
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
    /// Only results of tasks whose id starts with this (the caller's
    /// namespace): filtered here, on the server, never by the client.
    pub namespace: Option<Arc<str>>,
}

/// Why a stream ended.
#[derive(Debug)]
pub enum StreamEnd {
    /// Replay done (history_only), or every named task ended.
    Finished,
    /// The reader fell behind its bound; resume after `resume`.
    Lagged {
        /// Cursor of the last result sent to the reader.
        resume: String,
    },
    /// The server is shutting down; resume after `resume`.
    ShuttingDown {
        /// Cursor of the last result sent to the reader.
        resume: String,
    },
    /// Reading the store failed midway.
    Failed {
        /// What failed.
        error: Error,
        /// Cursor of the last result sent to the reader.
        resume: String,
    },
}

/// Counts open streams; each stream holds one unit until it is dropped.
#[derive(Debug, Default, Clone)]
pub struct StreamGauge(Arc<Gauges>);

#[derive(Debug, Default)]
struct Gauges {
    /// Streams open now.
    open: AtomicUsize,
    /// Streams ended because their reader fell behind (RESOURCE_EXHAUSTED
    /// with a resume cursor), since start: for `/metrics`.
    lag_ends: std::sync::atomic::AtomicU64,
}

impl StreamGauge {
    /// Streams open now.
    pub fn get(&self) -> usize {
        self.0.open.load(Ordering::SeqCst)
    }

    /// Streams ended since start because their reader fell behind.
    pub fn lag_ends(&self) -> u64 {
        self.0.lag_ends.load(Ordering::Relaxed)
    }

    fn lagged(&self) {
        self.0.lag_ends.fetch_add(1, Ordering::Relaxed);
    }

    fn enter(&self) -> GaugeGuard {
        self.0.open.fetch_add(1, Ordering::SeqCst);
        GaugeGuard(self.clone())
    }
}

/// Holds one open stream; the gauge itself counts how streams end.
struct GaugeGuard(StreamGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.0).0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An open stream; pull it with [`ResultStream::next`].
pub struct ResultStream {
    store: Arc<dyn Store>,
    subscription: Subscription,
    request: StreamRequest,
    /// Named tasks that have not ended yet.
    remaining: HashSet<TaskId>,
    /// Where the stream started: the resume point until a result is sent.
    start: String,
    /// The last result sent; its cursor is the resume point.
    last_sent: Option<Arc<TaskResult>>,
    /// The last result taken from a page or batch, sent or skipped (another
    /// namespace's): replay pages on from here, or a page of nothing but
    /// skipped results would be read again and again.
    read_to: Option<Arc<TaskResult>>,
    /// Set once a live result newer than everything replayed was seen:
    /// from there on live results (in cursor order) are all new, and none
    /// needs its cursor read.
    seam_crossed: bool,
    /// Still reading history from the store.
    replaying: bool,
    /// The page or live batch being sent, and the next index in it.
    current: Option<(Arc<[Arc<TaskResult>]>, usize)>,
    /// Set once the end was handed out: nothing follows.
    done: bool,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
    /// Counts the stream open while it lives, and how it ended.
    gauge: GaugeGuard,
}

/// Checks the request (unknown task: NOT_FOUND; bad or expired cursor) and
/// opens the stream. Failing checks open nothing.
pub async fn open(
    scheduler: &Scheduler,
    request: StreamRequest,
    shutdown: CancellationToken,
    permit: OwnedSemaphorePermit,
    gauge: &StreamGauge,
) -> Result<ResultStream, Error> {
    // Subscribe before reading anything, so nothing recorded from here on
    // can fall between the replay and the live part.
    let subscription = scheduler.subscribe(&request.tasks);
    let mut remaining = HashSet::new();
    for id in &request.tasks {
        let task = scheduler.get(id).await?;
        if !task.has_ended() {
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
    Ok(ResultStream {
        store,
        subscription,
        request,
        remaining,
        start,
        last_sent: None,
        read_to: None,
        seam_crossed: false,
        replaying: true,
        current: None,
        done: false,
        shutdown,
        _permit: permit,
        gauge: gauge.enter(),
    })
}

impl ResultStream {
    /// The next result, then at most one end; None after the end.
    pub async fn next(&mut self) -> Option<Result<Arc<TaskResult>, StreamEnd>> {
        if self.done {
            return None;
        }
        let item = self.step().await;
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }

    async fn step(&mut self) -> Result<Arc<TaskResult>, StreamEnd> {
        loop {
            if let Some(result) = self.take_current() {
                return Ok(result);
            }
            if self.replaying {
                if self.shutdown.is_cancelled() {
                    return Err(self.shutting_down());
                }
                self.read_page().await?;
                continue;
            }
            if self.request.history_only
                || (!self.request.tasks.is_empty() && self.remaining.is_empty())
            {
                return Err(StreamEnd::Finished);
            }
            let delivery = tokio::select! {
                biased;
                delivery = self.subscription.recv() => delivery,
                _ = self.shutdown.cancelled() => Some(Delivery::Closed),
            };
            match delivery {
                Some(Delivery::Results(results)) => self.take_live(results),
                Some(Delivery::Ended(task)) => {
                    self.remaining.remove(&task);
                }
                Some(Delivery::Lagged) => {
                    self.gauge.0.lagged();
                    return Err(StreamEnd::Lagged {
                        resume: self.resume(),
                    });
                }
                Some(Delivery::Lost { resume }) => {
                    let cursor = self.resume();
                    return Err(StreamEnd::Failed {
                        error: Error::Store(StoreError::CursorExpired {
                            cursor,
                            oldest: String::new(),
                            resume: resume.clone(),
                        }),
                        resume,
                    });
                }
                Some(Delivery::Closed) | None => return Err(self.shutting_down()),
            }
        }
    }

    /// Where reading goes on from: after the last result taken.
    fn read_point(&self) -> String {
        match &self.read_to {
            Some(result) => result.cursor.clone(),
            None => self.resume(),
        }
    }

    /// Where the stream starts: the cursor it replays after, or the newest
    /// when it opened live; empty for a whole-history replay.
    pub fn start_cursor(&self) -> &str {
        &self.start
    }

    /// Where a reader resumes: after the last result sent.
    fn resume(&self) -> String {
        self.last_sent
            .as_ref()
            .map_or_else(|| self.start.clone(), |r| r.cursor.clone())
    }

    /// Takes a live batch. Until the seam is crossed, results the replay
    /// already sent (at or before the resume point) are skipped; they come
    /// first, since batches are in cursor order.
    fn take_live(&mut self, results: Arc<[Arc<TaskResult>]>) {
        let mut from = 0;
        if !self.seam_crossed {
            let seen = self.store.cursor_seq(&self.read_point()).unwrap_or(0);
            from = results.partition_point(|r| self.store.cursor_seq(&r.cursor).unwrap_or(0) <= seen);
            if from == results.len() {
                return;
            }
            self.seam_crossed = true;
        }
        self.current = Some((results, from));
    }

    /// The next result of the current page or batch.
    fn take_current(&mut self) -> Option<Arc<TaskResult>> {
        loop {
            let (results, index) = self.current.as_mut()?;
            let Some(result) = results.get(*index) else {
                self.current = None;
                return None;
            };
            *index += 1;
            let result = result.clone();
            // Another namespace's result is skipped, not sent: a reader
            // resuming from the last one sent reads past it again and skips
            // it again.
            if let Some(ns) = &self.request.namespace {
                self.read_to = Some(result.clone());
                if !result.task_id.as_str().starts_with(&**ns) {
                    continue;
                }
            }
            self.last_sent = Some(result.clone());
            return Some(result);
        }
    }

    async fn read_page(&mut self) -> Result<(), StreamEnd> {
        let from = self.read_point();
        let after = (!from.is_empty()).then_some(from);
        let page = self
            .store
            .results_after(after.as_deref(), &self.request.tasks, REPLAY_PAGE)
            .await
            .map_err(|error| self.failed(error))?;
        if page.len() < REPLAY_PAGE {
            self.replaying = false;
        }
        if !page.is_empty() {
            self.current = Some((page.into(), 0));
        }
        Ok(())
    }

    fn shutting_down(&self) -> StreamEnd {
        StreamEnd::ShuttingDown {
            resume: self.resume(),
        }
    }

    fn failed(&self, error: StoreError) -> StreamEnd {
        StreamEnd::Failed {
            error: error.into(),
            resume: self.resume(),
        }
    }
}
