//! The scheduler driven directly (no gRPC, no sockets) on tokio's paused
//! clock: a probe handler that records its calls, and a harness that
//! subscribes to every result and task end. Shared by scheduler_logic.rs
//! and engine.rs.
//!
//! Wall time follows tokio time exactly (`Clock::tokio_at`): a slot fires at
//! its instant, a 300 ms handler ends 300 ms later, and time only moves when
//! every task is idle. Waits are bounded by [`WAIT`] of paused time, so a
//! missing event fails the test instead of hanging it.

#![allow(dead_code, unused_imports)]

pub use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use chrono::{DateTime, TimeZone, Utc};
pub use recur::{
    HandlerContext, HandlerError, TaskHandler,
    action::{
        Actions,
        http::{HttpRunner, HttpSettings},
    },
    results::fanout::{Delivery, Subscription},
    scheduler::{
        Error, FireAhead, Scheduler, SchedulerSettings,
        clock::Clock,
        schedule::{Limits, Schedule, ScheduleInput},
    },
    store::{
        Store,
        memory::{MemoryStore, Retention},
    },
    task::{
        Action, CustomAction, Outcome, OverlapPolicy, RetryPolicy, TaskId, TaskRecord, TaskResult,
        TaskSpec, TaskState, Trigger, occurrence_id,
    },
};
pub use tokio::time::Instant;
pub use tokio_util::sync::CancellationToken;

/// Longest wait for an expected event, in paused time. Far above any
/// schedule used here; only reached when a test is about to fail.
pub const WAIT: Duration = Duration::from_secs(600);

/// Output cap of the actions runner.
pub const OUTPUT_CAP: usize = 64 * 1024;

/// A fixed wall time for the start of every test.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
        .single()
        .expect("valid test time")
}

pub fn ms(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn id(raw: &str) -> TaskId {
    TaskId::parse(raw).expect("valid test id")
}

/// What the probe handler does in each attempt.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Sleeps (tokio time), then succeeds.
    Sleep(Duration),
    /// Fails attempts 1..=n of every run, succeeds from attempt n + 1.
    FailFirst(u32),
    /// Waits until the run's token is cancelled.
    UntilCancelled,
    /// Panics (a buggy custom handler).
    Panic,
}

/// One call of the probe handler: what it was told and when (tokio time).
#[derive(Debug, Clone)]
pub struct Call {
    pub task_id: TaskId,
    pub run: u64,
    pub attempt: u32,
    pub occurrence_id: String,
    pub scheduled_at: DateTime<Utc>,
    pub started: Instant,
    pub cancel: CancellationToken,
}

/// A custom task kind that records every call and how many overlap.
pub struct Probe {
    behaviour: Behaviour,
    calls: Mutex<Vec<Call>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Probe {
    pub fn new(behaviour: Behaviour) -> Arc<Probe> {
        Arc::new(Probe {
            behaviour,
            calls: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        })
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls lock").clone()
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

/// Counts an attempt as in flight until it returns or is dropped (a
/// cancelled or timed-out attempt is dropped by the runner).
pub struct InFlight<'a>(&'a Probe);

impl<'a> InFlight<'a> {
    pub fn enter(probe: &'a Probe) -> Self {
        let now = probe.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        probe.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(probe)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl TaskHandler for Probe {
    async fn run(&self, ctx: HandlerContext) -> Result<Bytes, HandlerError> {
        self.calls.lock().expect("calls lock").push(Call {
            task_id: ctx.task_id.clone(),
            run: ctx.run,
            attempt: ctx.attempt,
            occurrence_id: ctx.occurrence_id.clone(),
            scheduled_at: ctx.scheduled_at,
            started: Instant::now(),
            cancel: ctx.cancel.clone(),
        });
        let _in_flight = InFlight::enter(self);
        match self.behaviour {
            Behaviour::Sleep(duration) => {
                tokio::time::sleep(duration).await;
                Ok(Bytes::from(format!("run {}", ctx.run)))
            }
            Behaviour::FailFirst(failures) if ctx.attempt <= failures => {
                Err(format!("attempt {} failed", ctx.attempt).into())
            }
            Behaviour::FailFirst(_) => Ok(Bytes::from_static(b"ok")),
            Behaviour::Panic => panic!("probe handler bug"),
            Behaviour::UntilCancelled => {
                ctx.cancel.cancelled().await;
                Err("saw the cancellation".into())
            }
        }
    }
}

/// What the harness sees: results and task ends, flattened from deliveries.
#[derive(Debug)]
pub enum Event {
    Result(Arc<TaskResult>),
    TaskEnded(TaskId),
}

/// An HTTP runner for actions runners built by tests.
pub fn http_runner() -> HttpRunner {
    HttpRunner::new(HttpSettings {
        connect_timeout: secs(5),
        read_timeout: secs(5),
        total_timeout: secs(5),
        max_redirects: 0,
        output_cap: OUTPUT_CAP,
        addresses: Default::default(),
        secrets: Default::default(),
    })
    .expect("http client")
}

/// A memory store that keeps everything a test produces.
pub fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new(Retention {
        per_task: 10_000,
        total: 100_000,
        max_bytes: usize::MAX,
    }))
}

/// A started scheduler on the paused clock, subscribed to its events.
pub struct Harness {
    pub scheduler: Scheduler,
    pub events: Subscription,
    /// Events of a delivery not handed out yet.
    pending: VecDeque<Event>,
    /// Tokio instant at which wall time was `t0()`.
    base: Instant,
}

impl Harness {
    pub async fn start(handlers: &[(&str, &Arc<Probe>)]) -> Harness {
        Self::start_with(handlers, memory_store(), 1000).await
    }

    /// A harness over `store` with a cap of `max_runs_in_flight`, herds
    /// fired ahead as the server does.
    pub async fn start_with(
        handlers: &[(&str, &Arc<Probe>)],
        store: Arc<dyn Store>,
        max_runs_in_flight: usize,
    ) -> Harness {
        let ahead = FireAhead::for_cap(max_runs_in_flight);
        Self::start_full(handlers, store, max_runs_in_flight, Some(ahead)).await
    }

    /// A harness firing herds of `fire_ahead.min` tasks and more ahead,
    /// with a cap of `max_runs_in_flight`.
    pub async fn start_ahead(
        handlers: &[(&str, &Arc<Probe>)],
        fire_ahead: FireAhead,
        max_runs_in_flight: usize,
    ) -> Harness {
        Self::start_full(
            handlers,
            memory_store(),
            max_runs_in_flight,
            Some(fire_ahead),
        )
        .await
    }

    async fn start_full(
        handlers: &[(&str, &Arc<Probe>)],
        store: Arc<dyn Store>,
        max_runs_in_flight: usize,
        fire_ahead: Option<FireAhead>,
    ) -> Harness {
        let base = Instant::now();
        let http = http_runner();
        let handlers: HashMap<String, Arc<dyn TaskHandler>> = handlers
            .iter()
            .map(|(kind, probe)| (kind.to_string(), Arc::clone(*probe) as Arc<dyn TaskHandler>))
            .collect();
        let actions = Actions::new(http, None, handlers, OUTPUT_CAP);
        let scheduler = Scheduler::new(
            store,
            actions,
            Clock::tokio_at(t0()),
            SchedulerSettings {
                max_tasks: 100,
                // Long enough that the sweeper never removes a task under test.
                terminal_retention: secs(86_400),
                subscriber_bound: 100_000,
                max_runs_in_flight,
                store_check_interval: None,
                fire_ahead,
                executor: "engine-test".into(),
            },
            CancellationToken::new(),
        );
        let events = scheduler.subscribe(&[]);
        scheduler.start().await.expect("scheduler starts");
        Harness {
            scheduler,
            events,
            pending: VecDeque::new(),
            base,
        }
    }

    pub async fn register(&self, raw_id: &str, spec: TaskSpec) -> TaskRecord {
        self.scheduler
            .register(Some(id(raw_id)), spec, None)
            .await
            .expect("registration accepted")
    }

    pub async fn get(&self, raw_id: &str) -> TaskRecord {
        self.scheduler.get(&id(raw_id)).await.expect("task exists")
    }

    /// Tokio instant `offset` after the start of the test.
    pub fn at(&self, offset: Duration) -> Instant {
        self.base + offset
    }

    pub async fn next_event(&mut self) -> Event {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            match tokio::time::timeout(WAIT, self.events.recv()).await {
                Ok(Some(delivery)) => self.unpack(delivery),
                Ok(None) => panic!("event stream broke"),
                Err(_) => panic!("no event within {WAIT:?} of paused time"),
            }
        }
    }

    /// Every event delivered so far (up to the end of the subscription).
    pub fn drain(&mut self) -> Vec<Event> {
        while let Some(delivery) = self.events.try_recv() {
            if matches!(delivery, Delivery::Closed) {
                break;
            }
            self.unpack(delivery);
        }
        self.pending.drain(..).collect()
    }

    fn unpack(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Results(results) => self
                .pending
                .extend(results.iter().cloned().map(Event::Result)),
            Delivery::Ended(task) => self.pending.push_back(Event::TaskEnded(task)),
            other => panic!("subscription ended: {other:?}"),
        }
    }

    pub async fn next_result(&mut self) -> Arc<TaskResult> {
        match self.next_event().await {
            Event::Result(result) => result,
            Event::TaskEnded(task) => panic!("expected a result, got the end of task {task}"),
        }
    }

    pub async fn results(&mut self, n: usize) -> Vec<Arc<TaskResult>> {
        let mut results = Vec::with_capacity(n);
        for _ in 0..n {
            results.push(self.next_result().await);
        }
        results
    }

    /// Lets `duration` of paused time pass and checks nothing was announced.
    pub async fn assert_quiet_for(&mut self, duration: Duration) {
        tokio::time::sleep(duration).await;
        if let Some(delivery) = self.events.try_recv() {
            self.unpack(delivery);
        }
        if let Some(event) = self.pending.front() {
            panic!("expected no event for {duration:?}, got {event:?}");
        }
    }
}

pub fn spec(kind: &str, every: Duration) -> TaskSpec {
    spec_with(
        kind,
        ScheduleInput {
            every: Some(every),
            ..ScheduleInput::default()
        },
    )
}

pub fn spec_with(kind: &str, schedule: ScheduleInput) -> TaskSpec {
    TaskSpec {
        schedule: Schedule::from_input(schedule, &Limits::default()).expect("valid schedule"),
        action: Action::Custom(CustomAction {
            kind: kind.to_string(),
            payload: Bytes::new(),
        }),
        timeout: secs(3600),
        overlap: OverlapPolicy::Skip,
        retry: RetryPolicy::default(),
        labels: BTreeMap::new(),
        catchup_window: None,
    }
}
