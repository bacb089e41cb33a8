//! Proto <-> domain. Every check of client input that can name a field
//! happens here, so a bad request is refused whole, before anything changes,
//! with the field's proto path in the message.

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderName, HeaderValue};

use crate::{
    action::{Actions, http::ALLOWED_METHODS},
    pb::v1 as pb,
    scheduler::{
        Error,
        schedule::{Cadence, Limits, Schedule, ScheduleInput},
    },
    task::{
        Action, CustomAction, HttpAction, OverlapPolicy, RedisAction, RetryPolicy, RunSummary,
        TaskId, TaskRecord, TaskResult, TaskSpec, TaskState, Trigger,
    },
};

use super::fingerprint::Fingerprints;

/// Most labels on a task.
pub const MAX_LABELS: usize = 32;
/// Longest label key.
pub const MAX_LABEL_KEY: usize = 63;
/// Longest label value.
pub const MAX_LABEL_VALUE: usize = 255;
/// Most headers on an HTTP action.
pub const MAX_HEADERS: usize = 64;
/// Longest pause or cancel reason, and request id.
pub const MAX_REASON: usize = 1024;
/// Longest request id.
pub const MAX_REQUEST_ID: usize = 128;
/// Most arguments of a Redis action.
pub const MAX_REDIS_ARGS: usize = 1024;
/// Most attempts per run.
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest delay between two attempts of a run. Retries stop at the next
/// slot anyway; a longer wait would only hold a run (and its slot under the
/// cap of runs in flight) for a daily task's whole day.
pub const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(3600);
/// What header values read back as.
pub const REDACTED: &str = "<redacted>";

/// What validating a spec needs to know about this server.
pub struct SpecContext<'a> {
    /// Shortest interval.
    pub min_interval: Duration,
    /// Timeout when none is given.
    pub default_timeout: Duration,
    /// Longest timeout.
    pub max_timeout: Duration,
    /// The server's Redis key prefix.
    pub key_prefix: &'a str,
    /// Registered handlers and whether Redis is there.
    pub actions: &'a Actions,
    /// Secrets that `secret_headers` may name; `None` skips the check
    /// (a stored task stays readable after its secret was removed: the
    /// run fails instead, naming it).
    pub secrets: Option<&'a crate::secrets::NamedSecrets>,
    /// The namespace of the caller whose spec this is (`None`: not
    /// confined): it may only name secrets given to it.
    pub namespace: Option<&'a str>,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Parses a task id field.
pub fn task_id(field: &str, raw: &str) -> Result<TaskId, Error> {
    TaskId::parse(raw).map_err(|reason| invalid(field, reason))
}

/// Checks a free-text field's length.
pub fn text(field: &str, raw: String, max: usize) -> Result<String, Error> {
    if raw.len() > max {
        return Err(invalid(field, format!("longer than {max} bytes")));
    }
    Ok(raw)
}

fn duration(field: &str, d: &prost_types::Duration) -> Result<Duration, Error> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(invalid(field, "must be a non-negative duration"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

fn timestamp(field: &str, t: &prost_types::Timestamp) -> Result<DateTime<Utc>, Error> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(invalid(field, "nanos out of range"));
    }
    DateTime::from_timestamp(t.seconds, t.nanos as u32)
        .ok_or_else(|| invalid(field, "out of range"))
}

/// Converts and validates a spec; `field` is its path (`spec`).
pub fn spec(
    field: &str,
    raw: Option<pb::TaskSpec>,
    ctx: &SpecContext<'_>,
) -> Result<TaskSpec, Error> {
    let raw = raw.ok_or_else(|| invalid(field, "is required"))?;
    let schedule = schedule(&format!("{field}.schedule"), raw.schedule, ctx)?;
    let action = action(&format!("{field}.action"), raw.action, ctx)?;
    let timeout = match raw.timeout {
        Some(t) => {
            let t = duration(&format!("{field}.timeout"), &t)?;
            if t.is_zero() {
                ctx.default_timeout
            } else if t > ctx.max_timeout {
                return Err(invalid(
                    format!("{field}.timeout"),
                    format!("must be at most {:?}", ctx.max_timeout),
                ));
            } else {
                t
            }
        }
        None => ctx.default_timeout,
    };
    let overlap = match pb::OverlapPolicy::try_from(raw.overlap) {
        Ok(pb::OverlapPolicy::Unspecified | pb::OverlapPolicy::Skip) => OverlapPolicy::Skip,
        Ok(pb::OverlapPolicy::Allow) => OverlapPolicy::Allow,
        Ok(pb::OverlapPolicy::CancelRunning) => OverlapPolicy::CancelRunning,
        Ok(pb::OverlapPolicy::BufferOne) => OverlapPolicy::BufferOne,
        Err(_) => {
            return Err(invalid(
                format!("{field}.overlap"),
                format!("unknown value {}", raw.overlap),
            ));
        }
    };
    let retry = retry(&format!("{field}.retry"), raw.retry)?;
    let labels = labels(&format!("{field}.labels"), raw.labels)?;
    let catchup_window = raw
        .catchup_window
        .map(|w| duration(&format!("{field}.catchup_window"), &w))
        .transpose()?;
    Ok(TaskSpec {
        schedule,
        action,
        timeout,
        overlap,
        retry,
        labels,
        catchup_window,
    })
}

fn schedule(
    field: &str,
    raw: Option<pb::Schedule>,
    ctx: &SpecContext<'_>,
) -> Result<Schedule, Error> {
    let raw = raw.ok_or_else(|| invalid(field, "is required"))?;
    let (every, cron) = match raw.cadence {
        Some(pb::schedule::Cadence::Every(d)) => {
            (Some(duration(&format!("{field}.every"), &d)?), None)
        }
        Some(pb::schedule::Cadence::Cron(c)) => (None, Some(c)),
        None => (None, None),
    };
    let input = ScheduleInput {
        every,
        cron,
        time_zone: raw.time_zone,
        jitter: raw
            .jitter
            .map(|j| duration(&format!("{field}.jitter"), &j))
            .transpose()?
            .unwrap_or_default(),
        start_at: raw
            .start_at
            .map(|t| timestamp(&format!("{field}.start_at"), &t))
            .transpose()?,
        end_at: raw
            .end_at
            .map(|t| timestamp(&format!("{field}.end_at"), &t))
            .transpose()?,
        max_runs: raw.max_runs,
    };
    Schedule::from_input(
        input,
        &Limits {
            min_interval: ctx.min_interval,
        },
    )
    .map_err(|e| invalid(e.field, e.reason))
}

fn action(field: &str, raw: Option<pb::Action>, ctx: &SpecContext<'_>) -> Result<Action, Error> {
    let raw = raw.ok_or_else(|| invalid(field, "is required"))?;
    match raw.kind {
        None => Err(invalid(field, "set one of http, redis or custom")),
        Some(pb::action::Kind::Http(http)) => {
            Ok(Action::Http(http_action(
                &format!("{field}.http"),
                http,
                ctx.secrets.map(|s| (s, ctx.namespace)),
            )?))
        }
        Some(pb::action::Kind::Redis(redis)) => {
            let field = format!("{field}.redis");
            if redis.args.len() > MAX_REDIS_ARGS {
                return Err(invalid(
                    format!("{field}.args"),
                    format!("more than {MAX_REDIS_ARGS} arguments"),
                ));
            }
            ctx.actions
                .check_redis(&redis.args, ctx.key_prefix)
                .map_err(|e| {
                    let at = e.arg().map(|i| format!("[{i}]")).unwrap_or_default();
                    invalid(format!("{field}.args{at}"), e.to_string())
                })?;
            if !ctx.actions.has_redis() {
                return Err(Error::Unsupported {
                    field,
                    reason: "this server has no Redis configured for actions (start it with --redis-url or --redis-action-url)"
                        .into(),
                });
            }
            Ok(Action::Redis(RedisAction { args: redis.args }))
        }
        Some(pb::action::Kind::Custom(custom)) => {
            let field = format!("{field}.custom");
            let Some(handler) = ctx.actions.handler(&custom.kind) else {
                return Err(invalid(
                    format!("{field}.kind"),
                    format!("unknown custom kind {:?}", custom.kind),
                ));
            };
            handler
                .validate(&custom.payload)
                .map_err(|r| invalid(format!("{field}.payload"), r))?;
            Ok(Action::Custom(CustomAction {
                kind: custom.kind,
                payload: Bytes::from(custom.payload),
            }))
        }
    }
}

fn http_action(
    field: &str,
    raw: pb::HttpAction,
    secrets: Option<(&crate::secrets::NamedSecrets, Option<&str>)>,
) -> Result<HttpAction, Error> {
    let method = if raw.method.is_empty() {
        "GET".to_string()
    } else {
        raw.method.to_ascii_uppercase()
    };
    if !ALLOWED_METHODS.contains(&method.as_str()) {
        return Err(invalid(
            format!("{field}.method"),
            format!(
                "{:?} is not one of {}",
                raw.method,
                ALLOWED_METHODS.join(", ")
            ),
        ));
    }
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| invalid(format!("{field}.method"), "not a method"))?;
    let url = reqwest::Url::parse(&raw.url)
        .map_err(|e| invalid(format!("{field}.url"), format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            format!("{field}.url"),
            format!(
                "scheme {:?} is not supported (use http or https)",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("{field}.url"), "has no host"));
    }
    // Credentials in a URL end up in logs, proxies and error messages;
    // they belong in a header.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            format!("{field}.url"),
            "must not carry user info (user:password@); send credentials in a header",
        ));
    }
    if raw.headers.len() > MAX_HEADERS {
        return Err(invalid(
            format!("{field}.headers"),
            format!("more than {MAX_HEADERS} headers"),
        ));
    }
    let mut headers = BTreeMap::new();
    for (name, value) in raw.headers {
        // Names are case-insensitive: two spellings of one name would make
        // which value is sent depend on map order.
        if headers.contains_key(&name.to_ascii_lowercase()) {
            return Err(invalid(
                format!("{field}.headers"),
                format!("{name:?} is given twice (names are case-insensitive)"),
            ));
        }
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid(
                format!("{field}.headers"),
                format!("{name:?} is not a valid header name"),
            ));
        }
        // A client that read the task back and sent it whole would
        // otherwise store the placeholder in place of its secret.
        if value == REDACTED {
            return Err(invalid(
                format!("{field}.headers[{name:?}]"),
                format!(
                    "is the placeholder {REDACTED:?} that reads return, not a value; \
                     send the real value, or leave action.http.headers out of \
                     UpdateTask's update_mask to keep the stored one"
                ),
            ));
        }
        // Such a value would be taken for an encrypted one when read back.
        if crate::secrets::SecretKeys::is_sealed(&value) {
            return Err(invalid(
                format!("{field}.headers[{name:?}]"),
                "must not start with \"enc:v1:\", which marks values encrypted at rest",
            ));
        }
        // The value is secret: name the header, never echo the value.
        if HeaderValue::from_str(&value).is_err() {
            return Err(invalid(
                format!("{field}.headers"),
                format!("the value of {name:?} is not a valid header value"),
            ));
        }
        headers.insert(name.to_ascii_lowercase(), value);
    }
    let secret_headers = secret_headers(field, raw.secret_headers, &headers, secrets)?;
    Ok(HttpAction {
        method,
        url,
        headers,
        secret_headers,
        body: Bytes::from(raw.body),
    })
}

/// Checks `secret_headers`: header names as for `headers`, never both, and
/// secret names the server knows.
fn secret_headers(
    field: &str,
    raw: std::collections::HashMap<String, String>,
    headers: &BTreeMap<String, String>,
    secrets: Option<(&crate::secrets::NamedSecrets, Option<&str>)>,
) -> Result<BTreeMap<String, String>, Error> {
    if raw.len() + headers.len() > MAX_HEADERS {
        return Err(invalid(
            format!("{field}.secret_headers"),
            format!("more than {MAX_HEADERS} headers with headers"),
        ));
    }
    let mut out = BTreeMap::new();
    // Sorted, so the first error is the same on every call.
    let mut raw: Vec<_> = raw.into_iter().collect();
    raw.sort();
    for (name, secret) in raw {
        let at = format!("{field}.secret_headers[{name:?}]");
        let lower = name.to_ascii_lowercase();
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid(at, "is not a valid header name"));
        }
        if headers.contains_key(&lower) || out.contains_key(&lower) {
            return Err(invalid(
                at,
                "is given twice (in headers too, or in another spelling)",
            ));
        }
        crate::secrets::named::check_name(&secret)
            .map_err(|r| invalid(at.clone(), format!("secret name {secret:?}: {r}")))?;
        // Unknown and not given to the caller read the same, so a tenant
        // learns nothing of others' secret names.
        if let Some((secrets, namespace)) = secrets
            && !secrets.allows(&secret, namespace)
        {
            return Err(invalid(
                at,
                format!(
                    "names secret {secret:?}, which this server does not have for this caller (in --secrets-file, given to its namespace, or {}{secret} for unconfined callers)",
                    crate::secrets::named::ENV_PREFIX
                ),
            ));
        }
        out.insert(lower, secret);
    }
    Ok(out)
}

fn retry(field: &str, raw: Option<pb::RetryPolicy>) -> Result<RetryPolicy, Error> {
    let defaults = RetryPolicy::default();
    let Some(raw) = raw else { return Ok(defaults) };
    if raw.max_attempts > MAX_ATTEMPTS {
        return Err(invalid(
            format!("{field}.max_attempts"),
            format!("must be at most {MAX_ATTEMPTS}"),
        ));
    }
    let initial_backoff = match raw.initial_backoff {
        Some(d) => duration(&format!("{field}.initial_backoff"), &d)?,
        None => defaults.initial_backoff,
    };
    let max_backoff = match raw.max_backoff {
        Some(d) => duration(&format!("{field}.max_backoff"), &d)?,
        None => defaults.max_backoff,
    };
    if max_backoff > MAX_BACKOFF {
        return Err(invalid(
            format!("{field}.max_backoff"),
            format!("must be at most {}s", MAX_BACKOFF.as_secs()),
        ));
    }
    if initial_backoff > max_backoff {
        return Err(invalid(
            format!("{field}.initial_backoff"),
            "must not exceed max_backoff",
        ));
    }
    Ok(RetryPolicy {
        max_attempts: raw.max_attempts.max(1),
        initial_backoff,
        max_backoff,
    })
}

/// Checks a label map (task labels, or a ListTasks filter).
pub fn labels(
    field: &str,
    raw: std::collections::HashMap<String, String>,
) -> Result<BTreeMap<String, String>, Error> {
    if raw.len() > MAX_LABELS {
        return Err(invalid(field, format!("more than {MAX_LABELS} labels")));
    }
    for (key, value) in &raw {
        if key.is_empty() || key.len() > MAX_LABEL_KEY {
            return Err(invalid(
                field,
                format!("key {key:?} must be 1 to {MAX_LABEL_KEY} bytes"),
            ));
        }
        if value.len() > MAX_LABEL_VALUE {
            return Err(invalid(
                field,
                format!("value of {key:?} is longer than {MAX_LABEL_VALUE} bytes"),
            ));
        }
    }
    Ok(raw.into_iter().collect())
}

/// Parses a ListTasks state filter.
pub fn state_filter(raw: i32) -> Result<Option<TaskState>, Error> {
    match pb::TaskState::try_from(raw) {
        Ok(pb::TaskState::Unspecified) => Ok(None),
        Ok(pb::TaskState::Active) => Ok(Some(TaskState::Active)),
        Ok(pb::TaskState::Paused) => Ok(Some(TaskState::Paused)),
        Ok(pb::TaskState::Cancelled) => Ok(Some(TaskState::Cancelled)),
        Ok(pb::TaskState::Completed) => Ok(Some(TaskState::Completed)),
        Err(_) => Err(invalid("state", format!("unknown value {raw}"))),
    }
}

/// Page tokens are the last id of the previous page, behind a version tag
/// so the format can change without breaking old tokens silently.
const PAGE_TOKEN_PREFIX: &str = "p1.";

/// Encodes a page token.
pub fn page_token(last: &TaskId) -> String {
    format!("{PAGE_TOKEN_PREFIX}{last}")
}

/// Decodes a page token.
pub fn parse_page_token(raw: &str) -> Result<Option<TaskId>, Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    raw.strip_prefix(PAGE_TOKEN_PREFIX)
        .and_then(|id| TaskId::parse(id).ok())
        .map(Some)
        .ok_or_else(|| invalid("page_token", "not a token this server issued"))
}

fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs().min(i64::MAX as u64) as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn proto_time(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos().min(999_999_999) as i32,
    }
}

/// Reads specs back from the Redis store through the validation a client's
/// spec goes through, with the limits relaxed: a task stored under looser
/// limits (a shorter interval, a longer timeout) stays readable after they
/// were tightened.
pub fn stored_spec_decoder(
    default_timeout: Duration,
    key_prefix: String,
    actions: Actions,
) -> crate::store::redis::SpecDecoder {
    std::sync::Arc::new(move |raw| {
        let ctx = SpecContext {
            min_interval: Duration::from_millis(1),
            default_timeout,
            max_timeout: Duration::from_secs(u64::from(u32::MAX)),
            key_prefix: &key_prefix,
            actions: &actions,
            secrets: None,
            namespace: None,
        };
        spec("spec", Some(raw), &ctx).map_err(|e| e.to_string())
    })
}

/// The spec as clients read it: defaults filled in, header values redacted.
pub fn spec_to_proto(spec: &TaskSpec) -> pb::TaskSpec {
    spec_to_proto_with(spec, HeaderValues::Redacted)
}

/// The stored spec with its real header values, for merging a masked update
/// onto it. Never for a response: header values are secrets.
pub(crate) fn spec_to_proto_unredacted(spec: &TaskSpec) -> pb::TaskSpec {
    spec_to_proto_with(spec, HeaderValues::Revealed)
}

/// What header values read back as.
#[derive(Clone, Copy)]
enum HeaderValues {
    /// [`REDACTED`], for everything a client reads.
    Redacted,
    /// The real values, for the server's own read-merge-write.
    Revealed,
}

fn spec_to_proto_with(spec: &TaskSpec, header_values: HeaderValues) -> pb::TaskSpec {
    let s = &spec.schedule;
    let cadence = match &s.cadence {
        Cadence::Every(d) => pb::schedule::Cadence::Every(proto_duration(*d)),
        Cadence::Cron(c) => pb::schedule::Cadence::Cron(c.source().to_string()),
    };
    let action = match &spec.action {
        Action::Http(h) => pb::action::Kind::Http(pb::HttpAction {
            method: h.method.to_string(),
            url: h.url.to_string(),
            headers: h
                .headers
                .iter()
                .map(|(name, value)| {
                    let value = match header_values {
                        HeaderValues::Redacted => REDACTED,
                        HeaderValues::Revealed => value,
                    };
                    (name.clone(), value.to_string())
                })
                .collect(),
            body: h.body.to_vec(),
            secret_headers: h
                .secret_headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
        Action::Redis(r) => pb::action::Kind::Redis(pb::RedisAction {
            args: r.args.clone(),
        }),
        Action::Custom(c) => pb::action::Kind::Custom(pb::CustomAction {
            kind: c.kind.clone(),
            payload: c.payload.to_vec(),
        }),
    };
    pb::TaskSpec {
        schedule: Some(pb::Schedule {
            cadence: Some(cadence),
            // The zone only applies to cron; echoing "UTC" for an interval
            // would suggest otherwise.
            time_zone: match s.cadence {
                Cadence::Cron(_) => s.time_zone.name().to_string(),
                Cadence::Every(_) => String::new(),
            },
            jitter: (!s.jitter.is_zero()).then(|| proto_duration(s.jitter)),
            start_at: s.start_at.map(proto_time),
            end_at: s.end_at.map(proto_time),
            max_runs: s.max_runs.unwrap_or(0),
        }),
        action: Some(pb::Action { kind: Some(action) }),
        timeout: Some(proto_duration(spec.timeout)),
        overlap: match spec.overlap {
            OverlapPolicy::Skip => pb::OverlapPolicy::Skip,
            OverlapPolicy::Allow => pb::OverlapPolicy::Allow,
            OverlapPolicy::CancelRunning => pb::OverlapPolicy::CancelRunning,
            OverlapPolicy::BufferOne => pb::OverlapPolicy::BufferOne,
        } as i32,
        retry: Some(pb::RetryPolicy {
            max_attempts: spec.retry.max_attempts,
            initial_backoff: Some(proto_duration(spec.retry.initial_backoff)),
            max_backoff: Some(proto_duration(spec.retry.max_backoff)),
        }),
        labels: spec.labels.clone().into_iter().collect(),
        // Unset stays unset: it means "however late", not a window.
        catchup_window: spec.catchup_window.map(proto_duration),
    }
}

/// Most upcoming fire times one Task carries (`next_run_count`).
pub const MAX_NEXT_RUNS: u32 = 10;

/// What a Task answer carries beyond the record, computed per answer.
pub struct TaskView<'a> {
    /// Hashes specs into `spec_fingerprint`.
    pub fingerprints: &'a Fingerprints,
    /// Upcoming fire times to compute (`next_run_count`, checked).
    pub next_runs: usize,
}

/// Checks a `next_run_count` field.
pub fn next_run_count(field: &str, n: u32) -> Result<usize, Error> {
    if n > MAX_NEXT_RUNS {
        return Err(Error::InvalidArgument {
            field: field.into(),
            reason: format!("must be at most {MAX_NEXT_RUNS}"),
        });
    }
    Ok(n as usize)
}

/// The next `n` fire times of `task` from its next slot on: none while
/// paused or terminal, fewer when end_at or max_runs ends the schedule.
pub fn next_run_times(task: &TaskRecord, n: usize) -> Vec<DateTime<Utc>> {
    let schedule = &task.spec.schedule;
    let left = schedule
        .max_runs
        .map_or(n, |max| n.min(max.saturating_sub(task.scheduled_run_count) as usize));
    let mut out = Vec::with_capacity(left);
    let mut next = task.next_run_at.filter(|_| task.state == TaskState::Active);
    while let Some(at) = next {
        if out.len() >= left {
            break;
        }
        out.push(at);
        next = schedule.next_slot_after(task.created_at, at);
    }
    out
}

/// An outcome as clients read it.
fn outcome_to_proto(outcome: crate::task::Outcome) -> pb::Outcome {
    use crate::task::Outcome;
    match outcome {
        Outcome::Succeeded => pb::Outcome::Succeeded,
        Outcome::Failed => pb::Outcome::Failed,
        Outcome::TimedOut => pb::Outcome::TimedOut,
        Outcome::Cancelled => pb::Outcome::Cancelled,
        Outcome::Skipped => pb::Outcome::Skipped,
        Outcome::Abandoned => pb::Outcome::Abandoned,
    }
}

/// A trigger as clients (and the Redis store) keep it.
pub(crate) fn trigger_to_proto(trigger: Trigger) -> pb::Trigger {
    match trigger {
        Trigger::Scheduled => pb::Trigger::Scheduled,
        Trigger::Manual => pb::Trigger::Manual,
    }
}

/// A finished run in brief, as clients (and the Redis store) keep it.
pub(crate) fn summary_to_proto(r: &RunSummary) -> pb::RunSummary {
    pb::RunSummary {
        run: r.run,
        outcome: outcome_to_proto(r.outcome) as i32,
        scheduled_at: Some(proto_time(r.scheduled_at)),
        finished_at: Some(proto_time(r.finished_at)),
        trigger: trigger_to_proto(r.trigger) as i32,
    }
}

/// A task as clients read it.
pub fn task_to_proto(task: &TaskRecord, view: &TaskView<'_>) -> pb::Task {
    let health = &task.health;
    pb::Task {
        task_id: task.id.to_string(),
        spec: Some(spec_to_proto(&task.spec)),
        state: match task.state {
            TaskState::Active => pb::TaskState::Active,
            TaskState::Paused => pb::TaskState::Paused,
            TaskState::Cancelled => pb::TaskState::Cancelled,
            TaskState::Completed => pb::TaskState::Completed,
        } as i32,
        created_at: Some(proto_time(task.created_at)),
        next_run_at: task.next_run_at.map(proto_time),
        run_count: task.run_count,
        last_result: task.last_result.as_deref().map(result_to_proto),
        pause_reason: task.reason.clone(),
        skipped_count: task.skipped_count,
        scheduled_run_count: task.scheduled_run_count,
        updated_at: Some(proto_time(task.updated_at)),
        spec_fingerprint: view.fingerprints.of(&task.spec),
        failure_count: health.failure_count,
        consecutive_failures: health.consecutive_failures,
        last_success_at: health.last_success_at.map(proto_time),
        next_run_times: next_run_times(task, view.next_runs)
            .into_iter()
            .map(proto_time)
            .collect(),
        recent_runs: health.recent.iter().map(summary_to_proto).collect(),
        schedule_description: task.spec.schedule.describe(),
    }
}

/// A result as streams send it: converted once per result (by the first
/// stream), then cloned per stream; the output is shared, not copied.
pub fn result_to_wire(r: &TaskResult) -> pb::TaskResult {
    match r.wire.get_or_init(|| result_to_proto(r)) {
        Some(wire) => wire.clone(),
        // Only if something else cached another type; never silently wrong.
        None => result_to_proto(r),
    }
}

/// A result as clients read it.
pub fn result_to_proto(r: &TaskResult) -> pb::TaskResult {
    pb::TaskResult {
        task_id: r.task_id.to_string(),
        run: r.run,
        cursor: r.cursor.clone(),
        scheduled_at: Some(proto_time(r.scheduled_at)),
        started_at: r.started_at.map(proto_time),
        finished_at: Some(proto_time(r.finished_at)),
        outcome: outcome_to_proto(r.outcome) as i32,
        attempts: r.attempts,
        trigger: trigger_to_proto(r.trigger) as i32,
        error: r.error.clone(),
        output: r.output.clone(),
        output_truncated: r.output_truncated,
        http_status: r.http_status as u32,
        occurrence_id: r.occurrence_id.clone(),
        latency: Some(proto_duration(r.latency)),
        skipped_slots: r.skipped_slots,
        claim_lapsed: r.claim_lapsed,
        executor: r.executor.to_string(),
    }
}

#[cfg(test)]
mod tests;
