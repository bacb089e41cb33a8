//! The domain model: what a task is, what a run produced. Plain data shared
//! by the scheduler, the store and the API conversions; no behaviour that
//! needs I/O lives here.

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::scheduler::schedule::Schedule;

/// Longest task id; ids are also Redis key parts, so they stay short.
pub const MAX_TASK_ID_LEN: usize = 128;

/// A validated task id: `[A-Za-z0-9._-]{1,128}`. Shared, not copied: an
/// id travels with every slot, run and result, and a clone of it on those
/// paths is a reference count, not an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(Arc<str>);

impl TaskId {
    /// Checks `raw` against the id grammar; the error says what is wrong.
    pub fn parse(raw: &str) -> Result<TaskId, String> {
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        if raw.len() > MAX_TASK_ID_LEN {
            return Err(format!("longer than {MAX_TASK_ID_LEN} characters"));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "character {bad:?} is not allowed (use [A-Za-z0-9._-])"
            ));
        }
        Ok(TaskId(Arc::from(raw)))
    }

    /// A fresh server-generated id.
    pub fn generate() -> TaskId {
        TaskId::generate_in("")
    }

    /// A fresh server-generated id starting with `namespace` (itself a
    /// valid id prefix, so the result is a valid id).
    pub fn generate_in(namespace: &str) -> TaskId {
        TaskId(Arc::from(format!(
            "{namespace}t-{}",
            uuid::Uuid::new_v4().simple()
        )))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lifecycle state of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Runs on its schedule.
    Active,
    /// Starts no scheduled run until resumed.
    Paused,
    /// Cancelled by a client; terminal.
    Cancelled,
    /// Reached end_at or max_runs; terminal.
    Completed,
}

impl TaskState {
    /// Whether the task can never run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Cancelled | TaskState::Completed)
    }

    /// Lowercase name for messages and logs.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Active => "active",
            TaskState::Paused => "paused",
            TaskState::Cancelled => "cancelled",
            TaskState::Completed => "completed",
        }
    }
}

/// What happens when a slot comes while a run is still in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverlapPolicy {
    /// Do not start; count the slot as skipped.
    #[default]
    Skip,
    /// Start alongside.
    Allow,
    /// Cancel the running run, then start.
    CancelRunning,
    /// Keep one pending run, started when the current one ends.
    BufferOne,
}

/// Retries of failed attempts within one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, at least 1.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub initial_backoff: Duration,
    /// Cap of the delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `next_attempt` (2 for the first retry).
    pub fn backoff(&self, next_attempt: u32) -> Duration {
        let doublings = next_attempt.saturating_sub(2);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// An HTTP call.
#[derive(Clone, PartialEq)]
pub struct HttpAction {
    /// Upper-case method.
    pub method: reqwest::Method,
    /// Absolute http(s) URL.
    pub url: reqwest::Url,
    /// Headers as given; values are secret (never logged, redacted on read).
    pub headers: BTreeMap<String, String>,
    /// Headers whose values are server-side secrets: lower-case header
    /// name -> secret name, resolved at run time.
    pub secret_headers: BTreeMap<String, String>,
    /// Request body.
    pub body: Bytes,
}

/// Header values are secrets (API keys, tokens): Debug shows names only, so
/// no log line or panic message can carry them.
impl fmt::Debug for HttpAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpAction")
            .field("method", &self.method)
            .field("url", &crate::action::http::redact(&self.url))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("secret_headers", &self.secret_headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// One Redis command.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisAction {
    /// Command and arguments.
    pub args: Vec<String>,
}

/// A handler registered by the embedding program.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomAction {
    /// Registered name of the handler.
    pub kind: String,
    /// Opaque input.
    pub payload: Bytes,
}

/// What a run does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Call a URL.
    Http(HttpAction),
    /// Run a Redis command.
    Redis(RedisAction),
    /// Run a custom handler.
    Custom(CustomAction),
}

/// A task's spec with every default filled in, so two specs compare equal
/// exactly when they behave the same.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// When it runs.
    pub schedule: Schedule,
    /// What it does.
    pub action: Action,
    /// Bound of each attempt.
    pub timeout: Duration,
    /// Overlap policy.
    pub overlap: OverlapPolicy,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Labels for filtering.
    pub labels: BTreeMap<String, String>,
    /// How late a missed slot may still run (proto `catchup_window`): None
    /// runs the latest missed slot however late; zero runs none (only slots
    /// on time run); otherwise the latest runs if at most this late.
    pub catchup_window: Option<Duration>,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Id.
    pub id: TaskId,
    /// Spec; shared, since it changes only on update and every firing and
    /// run reads it.
    pub spec: Arc<TaskSpec>,
    /// State.
    pub state: TaskState,
    /// Registration time; anchors interval schedules without start_at.
    pub created_at: DateTime<Utc>,
    /// Last change of spec or state.
    pub updated_at: DateTime<Utc>,
    /// Nominal time of the next scheduled slot; None when paused or terminal.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Run numbers handed out, scheduled and manual; the next run's number
    /// is this + 1. A number is never reused: a run dropped before it
    /// started keeps it, and its result carries it.
    pub run_count: u64,
    /// Scheduled runs dispatched and not dropped before they started;
    /// compared with max_runs.
    pub scheduled_run_count: u64,
    /// Slots not run because of overlap or catch-up.
    pub skipped_count: u64,
    /// Result of the most recent run; kept by the store as results are
    /// recorded (not written back by runs), filled in on read.
    pub last_result: Option<Arc<TaskResult>>,
    /// Runs dispatched and not yet recorded (queued, running or buffered),
    /// plus results decided and not yet recorded (a skipped slot, a dropped
    /// run); filled in by the store on read. A terminal task with none has
    /// ended.
    pub active_runs: usize,
    /// Reason given to pause or cancel.
    pub reason: String,
    /// Incremented on every write; stores use it for compare-and-set.
    pub version: u64,
    /// How its runs went; kept by the store as results are recorded (like
    /// `last_result`), filled in on read. Shared: every firing step hands
    /// out the record, and health changes only per result.
    pub health: Arc<Health>,
}

/// How a task's runs have gone: what an operator looks at first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    /// Runs whose final outcome was FAILED or TIMED_OUT.
    pub failure_count: u64,
    /// FAILED or TIMED_OUT runs since the last SUCCEEDED one.
    pub consecutive_failures: u64,
    /// When the last SUCCEEDED run finished.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last runs that finished, oldest first, at most [`Health::RECENT`].
    pub recent: Vec<RunSummary>,
}

/// A finished run, in brief.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Run number.
    pub run: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Nominal slot, or the time of the trigger.
    pub scheduled_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// What started it.
    pub trigger: Trigger,
}

impl Health {
    /// Runs kept in `recent`.
    pub const RECENT: usize = 5;

    /// Takes in the result that finished a run (not a skipped slot's, which
    /// started none).
    pub fn note(&mut self, result: &TaskResult) {
        match result.outcome {
            Outcome::Failed | Outcome::TimedOut => {
                self.failure_count += 1;
                self.consecutive_failures += 1;
            }
            Outcome::Succeeded => {
                self.consecutive_failures = 0;
                self.last_success_at = Some(
                    self.last_success_at
                        .map_or(result.finished_at, |t| t.max(result.finished_at)),
                );
            }
            Outcome::Cancelled | Outcome::Skipped | Outcome::Abandoned => {}
        }
        // By run number: runs side by side (ALLOW) may finish out of order.
        let at = self
            .recent
            .iter()
            .rposition(|r| r.run < result.run)
            .map_or(0, |i| i + 1);
        self.recent.insert(
            at,
            RunSummary {
                run: result.run,
                outcome: result.outcome,
                scheduled_at: result.scheduled_at,
                finished_at: result.finished_at,
                trigger: result.trigger,
            },
        );
        if self.recent.len() > Self::RECENT {
            self.recent.remove(0);
        }
    }
}

impl TaskRecord {
    /// A task as registered at `now`: active, first slot `next_run_at`,
    /// nothing run yet, version 0.
    pub fn new(
        id: TaskId,
        spec: Arc<TaskSpec>,
        now: DateTime<Utc>,
        next_run_at: DateTime<Utc>,
    ) -> TaskRecord {
        TaskRecord {
            id,
            spec,
            state: TaskState::Active,
            created_at: now,
            updated_at: now,
            next_run_at: Some(next_run_at),
            run_count: 0,
            scheduled_run_count: 0,
            skipped_count: 0,
            last_result: None,
            active_runs: 0,
            reason: String::new(),
            version: 0,
            health: Default::default(),
        }
    }

    /// Terminal, and its last run has been recorded: nothing of it will
    /// ever happen again (streams naming it finish; it can be deleted).
    pub fn has_ended(&self) -> bool {
        self.state.is_terminal() && self.active_runs == 0
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The action succeeded.
    Succeeded,
    /// Every attempt failed.
    Failed,
    /// The last attempt exceeded the timeout.
    TimedOut,
    /// The run was aborted.
    Cancelled,
    /// The slot was not run: overlap policy, a pause, or catch-up.
    Skipped,
    /// Its process stopped during the run; it may have had its effect.
    Abandoned,
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The schedule.
    Scheduled,
    /// A TriggerTask call.
    Manual,
}

/// Result of one run, as appended to the result log.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    /// Task.
    pub task_id: TaskId,
    /// Run number (0 for a skipped slot, which started no run).
    pub run: u64,
    /// Position in the result log; set by the store on append.
    pub cursor: String,
    /// Nominal slot.
    pub scheduled_at: DateTime<Utc>,
    /// Start of the first attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// End of the run.
    pub finished_at: DateTime<Utc>,
    /// Outcome.
    pub outcome: Outcome,
    /// Attempts made.
    pub attempts: u32,
    /// What started it.
    pub trigger: Trigger,
    /// Why it did not succeed.
    pub error: String,
    /// Output of the last attempt, capped.
    pub output: Bytes,
    /// Whether output was cut.
    pub output_truncated: bool,
    /// HTTP status of the last attempt, or 0.
    pub http_status: u16,
    /// Unique per run: task id and nominal slot for a scheduled run (the
    /// same on every replica), see [`manual_occurrence_id`] for manual ones.
    pub occurrence_id: String,
    /// Duration of the last attempt.
    pub latency: Duration,
    /// On the SKIPPED result of a catch-up decision, how many missed slots
    /// it passed over (`scheduled_at` is the first of them); 0 otherwise.
    pub skipped_slots: u64,
    /// Recorded late by a replica whose claim on the run had lapsed (the
    /// run was reported ABANDONED meanwhile); see the proto.
    pub claim_lapsed: bool,
    /// The process that decided it (its node id), stamped by the result
    /// writer; shared, not copied, per result.
    pub executor: Arc<str>,
    /// The result in its wire form, made once by the first stream that
    /// sends it and shared by every other (see [`WireCache`]).
    pub wire: WireCache,
}

/// Values derived from a result once and shared by every reader of the
/// same `Arc<TaskResult>`: the API keeps the result's protobuf form here,
/// so a hundred streams convert it once, not a hundred times; a store
/// keeps its encoded form here, so the result is encoded once for its log
/// entry and for every later write of its task that carries it as the last
/// result (profiled: each write encoded it again). Type-erased because the
/// domain must not know the generated types; ignored by equality, cloning
/// and Debug.
#[derive(Default)]
pub struct WireCache {
    wire: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
    stored: std::sync::OnceLock<Arc<[u8]>>,
}

impl WireCache {
    /// The cached value of type `T`, made by `make` on first use.
    pub fn get_or_init<T: Send + Sync + 'static>(&self, make: impl FnOnce() -> T) -> Option<&T> {
        self.wire.get_or_init(|| Box::new(make())).downcast_ref()
    }

    /// The result's stored encoding, made by `make` on first use.
    pub fn stored_or_init(&self, make: impl FnOnce() -> Vec<u8>) -> &[u8] {
        self.stored.get_or_init(|| make().into())
    }

    /// A cache for a copy of the result that differs only in its cursor,
    /// which the stored encoding leaves out: it keeps that encoding.
    pub fn for_cursor_copy(&self) -> WireCache {
        let copy = WireCache::default();
        if let Some(stored) = self.stored.get() {
            let _ = copy.stored.set(stored.clone());
        }
        copy
    }
}

impl Clone for WireCache {
    fn clone(&self) -> Self {
        WireCache::default()
    }
}

impl PartialEq for WireCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for WireCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.wire.get().is_some() { "cached" } else { "empty" })
    }
}

/// The id of one scheduled occurrence of a task: the same on every replica
/// and on a retry, so targets can deduplicate.
pub fn occurrence_id(task_id: &TaskId, slot: DateTime<Utc>) -> String {
    format!(
        "{}@{}",
        task_id,
        slot.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

/// The id of a manual run: `<task>@<call time, ms>~<random>`. Two calls in
/// the same millisecond are two runs, so a target must not drop either as a
/// duplicate; the random part keeps them apart (and apart from the scheduled
/// occurrence of a slot at the same instant).
pub fn manual_occurrence_id(task_id: &TaskId, at: DateTime<Utc>) -> String {
    format!(
        "{}~{}",
        occurrence_id(task_id, at),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_id_grammar() {
        assert!(TaskId::parse("nightly.report_v2-eu").is_ok());
        assert!(TaskId::parse("").is_err());
        assert!(TaskId::parse("a b").unwrap_err().contains("' '"));
        assert!(TaskId::parse(&"x".repeat(129)).is_err());
        assert!(TaskId::parse(&"x".repeat(128)).is_ok());
        assert!(TaskId::parse("é").is_err());
    }

    #[test]
    fn debug_never_shows_header_values() {
        let action = HttpAction {
            method: reqwest::Method::GET,
            url: reqwest::Url::parse("https://user:pw@example.com/x?token=abc").unwrap(),
            headers: [("authorization".to_string(), "Bearer s3cr3t".to_string())].into(),
            body: Bytes::new(),
            secret_headers: Default::default(),
        };
        let shown = format!("{action:?}");
        assert!(shown.contains("authorization"));
        for secret in ["s3cr3t", "pw", "token=abc"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn the_wire_cache_makes_its_value_once() {
        let cache = WireCache::default();
        let mut made = 0;
        for _ in 0..3 {
            let value = cache.get_or_init(|| {
                made += 1;
                String::from("wire form")
            });
            assert_eq!(value.map(String::as_str), Some("wire form"));
        }
        assert_eq!(made, 1);
        assert_eq!(format!("{cache:?}"), "cached");
        assert_eq!(format!("{:?}", cache.clone()), "empty", "a copy starts empty");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let retry = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        assert_eq!(retry.backoff(2), Duration::from_millis(100));
        assert_eq!(retry.backoff(3), Duration::from_millis(200));
        assert_eq!(retry.backoff(4), Duration::from_millis(400));
        assert_eq!(retry.backoff(5), Duration::from_millis(500));
        assert_eq!(retry.backoff(u32::MAX), Duration::from_millis(500));
    }
}
