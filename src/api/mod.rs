//! The gRPC edge: `recur.v1.TaskService` as thin handlers (convert, call the
//! scheduler, convert back). The only module that knows both the generated
//! types and the domain.

pub mod convert;
pub mod fingerprint;
pub mod mask;
pub mod status;
pub mod stream_slots;
pub mod watch;

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    access::{Caller, quota::Quota},
    scheduler::schedule::{Cadence, Schedule},
    task::TaskSpec,
    audit::{self, AuditLog},
    pb::v1::{self as pb, task_service_server::TaskService},
    results::stream::{self, StreamGauge, StreamRequest},
    scheduler::{Error, Scheduler},
    store::TaskFilter,
};
use convert::{SpecContext, TaskView};
use fingerprint::Fingerprints;

/// Default ListTasks page.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest ListTasks page.
pub const MAX_PAGE_SIZE: usize = 1000;
/// When a namespace's streams are all open, how long a client is told to
/// wait before trying again (streams end when their readers go).
const STREAM_RETRY: Duration = Duration::from_secs(1);

/// Most task ids one StreamResults may name.
pub const MAX_STREAM_TASKS: usize = 1000;

/// Limits of the edge, from [`crate::Config`].
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Shortest interval.
    pub min_interval: Duration,
    /// Timeout when a task gives none.
    pub default_timeout: Duration,
    /// Longest timeout.
    pub max_timeout: Duration,
    /// The server's Redis key prefix.
    pub key_prefix: String,
    /// Secrets that `secret_headers` may name.
    pub secrets: crate::secrets::NamedSecrets,
    /// The access file in force, for namespace quotas.
    pub access: crate::access::AccessHandle,
}

/// The TaskService implementation; cheap to clone (shared parts), so an
/// audited call can run as a task of its own.
#[derive(Clone)]
pub struct TaskApi {
    scheduler: Scheduler,
    settings: Arc<ApiSettings>,
    /// Caps open result streams; a concurrency limit would not, since it
    /// releases its slot once response headers are out.
    streams: Arc<Semaphore>,
    /// The semaphore's size, for the error message.
    max_open_streams: usize,
    gauge: StreamGauge,
    /// Cancelled at shutdown: every stream ends with UNAVAILABLE.
    streams_shutdown: CancellationToken,
    /// Where each call's audit event goes (off unless `--audit-log`).
    audit: AuditLog,
    /// Namespaces' open result streams (`max_streams`).
    stream_slots: stream_slots::StreamSlots,
    /// Spec fingerprints, with the store's key once it has been read.
    fingerprints: Arc<tokio::sync::OnceCell<Arc<Fingerprints>>>,
    /// Task changes for WatchTasks.
    watch: watch::WatchHub,
}

impl TaskApi {
    /// The service over `scheduler`.
    pub fn new(
        scheduler: Scheduler,
        settings: ApiSettings,
        max_open_streams: usize,
        gauge: StreamGauge,
        streams_shutdown: CancellationToken,
        audit: AuditLog,
    ) -> Self {
        Self {
            audit,
            stream_slots: stream_slots::StreamSlots::new(
                scheduler.store().clone(),
                streams_shutdown.clone(),
            ),
            fingerprints: Default::default(),
            watch: watch::WatchHub::new(scheduler.clone(), streams_shutdown.clone()),
            scheduler,
            settings: Arc::new(settings),
            streams: Arc::new(Semaphore::new(max_open_streams)),
            max_open_streams,
            gauge,
            streams_shutdown,
        }
    }

    /// How tasks are answered: with `next_runs` upcoming fire times and
    /// the store's fingerprint key (read from the store once).
    async fn view(&self, next_runs: usize) -> Result<TaskView<'_>, Status> {
        Ok(TaskView {
            fingerprints: self.fingerprints().await?,
            next_runs,
        })
    }

    /// Spec fingerprints with the store's key, read from the store once.
    async fn fingerprints(&self) -> Result<&Arc<Fingerprints>, Status> {
        let store = self.scheduler.store();
        self.fingerprints
            .get_or_try_init(|| async {
                let mut candidate = [0u8; 32];
                aws_lc_rs::rand::fill(&mut candidate).map_err(|_| status::no_randomness())?;
                let key = store.fingerprint_key(candidate).await.map_err(Error::from)?;
                Ok::<_, Status>(Arc::new(Fingerprints::new(&key)))
            })
            .await
    }

    fn spec_context<'a>(&'a self, caller: &'a Caller) -> SpecContext<'a> {
        SpecContext {
            min_interval: self.settings.min_interval,
            default_timeout: self.settings.default_timeout,
            max_timeout: self.settings.max_timeout,
            key_prefix: &self.settings.key_prefix,
            actions: self.scheduler.actions(),
            secrets: Some(&self.settings.secrets),
            namespace: caller.namespace.as_deref(),
        }
    }
}

/// The caller the access layer put on the request. Its absence means the
/// layer was bypassed, and the call is refused rather than let through.
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(status::no_caller)
}

/// Parses the task id in `field` and checks it is in the caller's
/// namespace: another namespace's task is NOT_FOUND, the same answer as a
/// task that does not exist, so a tenant learns nothing of the others.
fn visible_task(caller: &Caller, field: &str, raw: &str) -> Result<crate::task::TaskId, Status> {
    let id = convert::task_id(field, raw)?;
    if !caller.sees(id.as_str()) {
        return Err(Error::NotFound {
            task_id: id.to_string(),
        }
        .into());
    }
    Ok(id)
}

/// The quota binding `caller`, if confined to a namespace.
fn quota_of(settings: &ApiSettings, caller: &Caller) -> Option<(Arc<str>, Quota)> {
    let ns = caller.namespace.clone()?;
    let quota = settings.access.current()?.quota(&ns);
    Some((ns, quota))
}

/// The shortest time between two fires of `schedule` from `now`: exact for
/// `every`, the smallest gap among the next [`GAP_SAMPLES`] fires for cron.
fn shortest_gap(schedule: &Schedule, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    if let Cadence::Every(every) = schedule.cadence {
        return Some(every);
    }
    let mut previous = schedule.next_slot_after(now, now)?;
    let mut shortest: Option<Duration> = None;
    for _ in 0..GAP_SAMPLES {
        let Some(next) = schedule.next_slot_after(now, previous) else {
            break;
        };
        let gap = (next - previous).to_std().unwrap_or_default();
        shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
        previous = next;
    }
    shortest
}

/// Fires of a cron schedule sampled for its shortest gap.
const GAP_SAMPLES: usize = 100;

/// Checks a spec against its namespace's `min_interval` quota.
fn check_min_interval(ns: &str, quota: &Quota, spec: &TaskSpec) -> Result<(), Error> {
    let Some(min) = quota.min_interval else {
        return Ok(());
    };
    match shortest_gap(&spec.schedule, chrono::Utc::now()) {
        Some(gap) if gap < min => Err(Error::QuotaExceeded {
            quota: "min_interval",
            namespace: ns.to_string(),
            detail: format!(
                "spec.schedule fires {gap:?} apart, the namespace allows at least {min:?}"
            ),
        }),
        _ => Ok(()),
    }
}

/// Where an HTTP action's URL points (host and port), and whether the
/// action carries header values or secret references; `None` otherwise.
fn http_destination(spec: &pb::TaskSpec) -> Option<(String, bool)> {
    let Some(pb::action::Kind::Http(http)) = spec.action.as_ref().and_then(|a| a.kind.as_ref())
    else {
        return None;
    };
    let url = reqwest::Url::parse(&http.url).ok()?;
    let host = format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    );
    Some((host, !http.headers.is_empty() || !http.secret_headers.is_empty()))
}

type ResultStream = Pin<Box<dyn Stream<Item = Result<pb::TaskResult, Status>> + Send>>;

/// The gRPC name of a status code, as the audit log records it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// One audited answer: `task_id` is the id the call named, or the one it
/// created.
async fn audit<T>(
    log: &AuditLog,
    caller: &Caller,
    method: &'static str,
    read: bool,
    task_id: Option<String>,
    result: &Result<T, Status>,
) {
    if !log.wants(read) {
        return;
    }
    let outcome = match result {
        Ok(_) => "OK",
        Err(status) => code_name(status.code()),
    };
    record(log, caller, method, task_id, outcome).await;
}

async fn record(
    log: &AuditLog,
    caller: &Caller,
    method: &'static str,
    task_id: Option<String>,
    outcome: &'static str,
) {
    log.record(audit::Event {
        at: chrono::Utc::now(),
        caller: caller.name.clone(),
        namespace: caller.namespace.clone(),
        method,
        task_id: task_id.filter(|id| !id.is_empty()),
        outcome,
    })
    .await;
}

/// The calls, each taking the caller the access layer established; the
/// trait methods below only add the caller and the audit event.
impl TaskApi {
    async fn register(&self, caller: &Caller, req: pb::RegisterTaskRequest) -> Result<pb::Task, Status> {
        // Before anything is written: a change that landed is never
        // answered with an error for want of the fingerprint key.
        let view = self.view(0).await?;
        let id = if req.task_id.is_empty() {
            None
        } else {
            let id = convert::task_id("task_id", &req.task_id)?;
            if !caller.sees(id.as_str()) {
                return Err(status::outside_namespace(caller, "task_id"));
            }
            Some(id)
        };
        let request_id = convert::text("request_id", req.request_id, convert::MAX_REQUEST_ID)?;
        let spec = convert::spec("spec", req.spec, &self.spec_context(caller))?;
        let namespace = caller.namespace.as_deref().unwrap_or("");
        // Request ids are scoped to the namespace like task ids, so one
        // tenant's retry can never be answered with another tenant's task.
        // The namespace's length comes first, so no two (namespace, id)
        // pairs make the same key ("a." + "b.x" and "a.b." + "x" differ).
        let request_id = (!request_id.is_empty()).then(|| match namespace {
            "" => request_id,
            ns => format!("{}:{ns}{request_id}", ns.len()),
        });
        if req.validate_only {
            if let Some((ns, quota)) = quota_of(&self.settings, caller) {
                check_min_interval(&ns, &quota, &spec)?;
            }
            let task = self
                .scheduler
                .preview_register_in(namespace, id, spec, request_id)
                .await?;
            return Ok(convert::task_to_proto(&task, &view));
        }
        if let Some((ns, quota)) = quota_of(&self.settings, caller) {
            check_min_interval(&ns, &quota, &spec)?;
            if let Some(max) = quota.max_tasks {
                let store = self.scheduler.store();
                let count = store.count_tasks_in(&ns).await.map_err(Error::from)?;
                // At the cap, a retry of a registration that landed is
                // still answered by the scheduler (with its task).
                let retry = count >= max
                    && match (&id, &request_id) {
                        (Some(id), _) => store.get_task(id).await.map_err(Error::from)?.is_some(),
                        (None, Some(rid)) => store
                            .task_for_request(rid)
                            .await
                            .map_err(Error::from)?
                            .is_some(),
                        (None, None) => false,
                    };
                if count >= max && !retry {
                    return Err(Error::QuotaExceeded {
                        quota: "max_tasks",
                        namespace: ns.to_string(),
                        detail: format!("{count} of {max} tasks exist; delete some first"),
                    }
                    .into());
                }
            }
        }
        let task = self
            .scheduler
            .register_in(namespace, id, spec, request_id)
            .await?;
        // Belt and braces: whatever the store answers with must be the
        // caller's to see.
        if !caller.sees(task.id.as_str()) {
            return Err(status::outside_namespace(caller, "request_id"));
        }
        Ok(convert::task_to_proto(&task, &view))
    }

    async fn update(&self, caller: &Caller, req: pb::UpdateTaskRequest) -> Result<pb::Task, Status> {
        let view = self.view(0).await?;
        let id = visible_task(caller, "task_id", &req.task_id)?;
        let paths = mask::parse(&req.update_mask.unwrap_or_default().paths)?;
        let quota = quota_of(&self.settings, caller);
        let task = if paths.is_empty() {
            let spec = convert::spec("spec", req.spec, &self.spec_context(caller))?;
            if let Some((ns, quota)) = &quota {
                check_min_interval(ns, quota, &spec)?;
            }
            if req.validate_only {
                self.scheduler
                    .preview_update_with(&id, |_| Ok(spec.clone()))
                    .await?
            } else {
                self.scheduler.update(&id, spec).await?
            }
        } else {
            let patch = req.spec.ok_or_else(|| Error::InvalidArgument {
                field: "spec".into(),
                reason: "is required".into(),
            })?;
            // The merge runs inside the scheduler's compare-and-set, on the
            // spec as stored at that moment: an update landing in between
            // makes it run again, never lose that update's other fields.
            let ctx = self.spec_context(caller);
            let merge = |stored: &TaskSpec| {
                let stored = convert::spec_to_proto_unredacted(stored);
                let before = http_destination(&stored);
                let merged = mask::apply(stored, &patch, &paths);
                // Stored header values go where the URL goes: moving
                // the task to another host takes resending them.
                if let Some((host, true)) = before
                    && mask::keeps_headers(&paths)
                    && http_destination(&merged).is_some_and(|(h, _)| h != host)
                {
                    return Err(Error::InvalidArgument {
                        field: "update_mask".into(),
                        reason: "moving action.http.url to another host would send the stored header values there; name action.http.headers (and action.http.secret_headers) in the mask and send them".into(),
                    });
                }
                let spec = convert::spec("spec", Some(merged), &ctx)?;
                if let Some((ns, quota)) = &quota {
                    check_min_interval(ns, quota, &spec)?;
                }
                Ok(spec)
            };
            if req.validate_only {
                self.scheduler.preview_update_with(&id, merge).await?
            } else {
                self.scheduler.update_with(&id, merge).await?
            }
        };
        Ok(convert::task_to_proto(&task, &view))
    }

    async fn list(&self, caller: &Caller, req: pb::ListTasksRequest) -> Result<pb::ListTasksResponse, Status> {
        let limit = match req.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(Error::InvalidArgument {
                    field: "page_size".into(),
                    reason: format!("must be at most {MAX_PAGE_SIZE}"),
                }
                .into());
            }
            n => n,
        };
        let after = convert::parse_page_token(&req.page_token)?;
        let next_runs = convert::next_run_count("next_run_count", req.next_run_count)?;
        let filter = TaskFilter {
            state: convert::state_filter(req.state)?,
            labels: convert::labels("labels", req.labels)?,
            id_prefix: caller.namespace.clone(),
        };
        let (tasks, more) = self.scheduler.list(after.as_ref(), limit, &filter).await?;
        let next_page_token = match tasks.last() {
            Some(last) if more => convert::page_token(&last.id),
            _ => String::new(),
        };
        let view = self.view(next_runs).await?;
        Ok(pb::ListTasksResponse {
            tasks: tasks.iter().map(|t| convert::task_to_proto(t, &view)).collect(),
            next_page_token,
        })
    }

    /// Runs a call that changes a task and writes its audit event. With
    /// the audit trail on, the two run as a task of their own: a client
    /// that goes away mid-call drops only its wait, never the event of a
    /// change that landed. `created` gives the task id from the answer
    /// (RegisterTask's generated id), else `task_id` is recorded.
    async fn audited<T, Fut>(
        &self,
        caller: Caller,
        method: &'static str,
        task_id: String,
        created: fn(&T) -> Option<String>,
        call: impl FnOnce(TaskApi, Caller) -> Fut + Send + 'static,
    ) -> Result<T, Status>
    where
        T: Send + 'static,
        Fut: std::future::Future<Output = Result<T, Status>> + Send + 'static,
    {
        if !self.audit.wants(false) {
            return call(self.clone(), caller).await;
        }
        let api = self.clone();
        let handle = tokio::spawn(async move {
            let result = call(api.clone(), caller.clone()).await;
            let id = result.as_ref().ok().and_then(created).unwrap_or(task_id);
            // Only the outcome is held across the await: `T` need not be Sync.
            let outcome = result.as_ref().map_or_else(|s| code_name(s.code()), |_| "OK");
            record(&api.audit, &caller, method, Some(id), outcome).await;
            result
        });
        handle
            .await
            .map_err(|e| Status::internal(format!("{method} failed: {e}")))?
    }

    /// The two slots a server stream holds while open: one of the server's
    /// `max_open_streams`, and one of the namespace's `max_streams` for a
    /// confined caller whose quota sets it. WatchTasks counts like
    /// StreamResults: both are streams a client keeps open.
    async fn stream_slots(
        &self,
        caller: &Caller,
    ) -> Result<(tokio::sync::OwnedSemaphorePermit, Option<stream_slots::SlotGuard>), Status> {
        let namespace_stream = match quota_of(&self.settings, caller) {
            Some((ns, quota)) => match quota.max_streams {
                Some(max) => match self.stream_slots.take(&ns, max).await.map_err(Error::from)? {
                    Some(slot) => Some(slot),
                    None => {
                        return Err(status::quota_exceeded(
                            "max_streams",
                            &ns,
                            &format!("{max} result streams are open"),
                            Some(STREAM_RETRY),
                        ));
                    }
                },
                None => None,
            },
            None => None,
        };
        let permit =
            self.streams
                .clone()
                .try_acquire_owned()
                .map_err(|_| Error::TooManyStreams {
                    limit: self.max_open_streams,
                })?;
        Ok((permit, namespace_stream))
    }

    /// The stream and its start cursor (for the `recur-start-cursor` header).
    async fn stream(
        &self,
        caller: &Caller,
        req: pb::StreamResultsRequest,
    ) -> Result<(String, ResultStream), Status> {
        if req.task_ids.len() > MAX_STREAM_TASKS {
            return Err(Error::InvalidArgument {
                field: "task_ids".into(),
                reason: format!("more than {MAX_STREAM_TASKS} ids"),
            }
            .into());
        }
        let tasks = req
            .task_ids
            .iter()
            .enumerate()
            .map(|(i, raw)| visible_task(caller, &format!("task_ids[{i}]"), raw))
            .collect::<Result<Vec<_>, _>>()?;
        let (permit, namespace_stream) = self.stream_slots(caller).await?;
        let opened = stream::open(
            &self.scheduler,
            StreamRequest {
                tasks,
                after: (!req.after_cursor.is_empty()).then_some(req.after_cursor),
                history_only: req.history_only,
                namespace: caller.namespace.clone(),
            },
            self.streams_shutdown.clone(),
            permit,
            &self.gauge,
        )
        .await?;
        let start = opened.start_cursor().to_string();
        // The namespace's count goes with the stream, released when it ends.
        let out = futures::stream::unfold((opened, namespace_stream), |(mut opened, held)| async move {
            match opened.next().await? {
                Ok(result) => Some((Ok(convert::result_to_wire(&result)), (opened, held))),
                Err(end) => status::stream_end(end).map(|s| (Err(s), (opened, held))),
            }
        });
        Ok((start, Box::pin(out)))
    }
}

#[tonic::async_trait]
impl TaskService for TaskApi {
    async fn register_task(
        &self,
        request: Request<pb::RegisterTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let named = req.task_id.clone();
        // A dry run is audited as one, so nobody reads it as a change.
        let method = if req.validate_only {
            "RegisterTask (validate_only)"
        } else {
            "RegisterTask"
        };
        self.audited(
            caller,
            method,
            named,
            |task: &pb::Task| Some(task.task_id.clone()),
            |api, caller| async move { api.register(&caller, req).await },
        )
        .await
        .map(Response::new)
    }

    async fn update_task(
        &self,
        request: Request<pb::UpdateTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let id = req.task_id.clone();
        let method = if req.validate_only {
            "UpdateTask (validate_only)"
        } else {
            "UpdateTask"
        };
        self.audited(caller, method, id, |_| None, |api, caller| async move {
            api.update(&caller, req).await
        })
        .await
        .map(Response::new)
    }

    async fn delete_task(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        let caller = caller(&request)?;
        let raw = request.into_inner().task_id;
        self.audited(caller, "DeleteTask", raw.clone(), |_| None, |api, caller| async move {
            let id = visible_task(&caller, "task_id", &raw)?;
            api.scheduler.delete(&id).await?;
            Ok(pb::DeleteTaskResponse {})
        })
        .await
        .map(Response::new)
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let raw = req.task_id;
        let result = async {
            let id = visible_task(&caller, "task_id", &raw)?;
            let next_runs = convert::next_run_count("next_run_count", req.next_run_count)?;
            let task = self.scheduler.get(&id).await?;
            Ok(convert::task_to_proto(&task, &self.view(next_runs).await?))
        }
        .await;
        audit(&self.audit, &caller, "GetTask", true, Some(raw), &result).await;
        result.map(Response::new)
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let caller = caller(&request)?;
        let result = self.list(&caller, request.into_inner()).await;
        audit(&self.audit, &caller, "ListTasks", true, None, &result).await;
        result.map(Response::new)
    }

    async fn pause_task(
        &self,
        request: Request<pb::PauseTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let raw = req.task_id.clone();
        self.audited(caller, "PauseTask", raw, |_| None, |api, caller| async move {
            let id = visible_task(&caller, "task_id", &req.task_id)?;
            let reason = convert::text("reason", req.reason, convert::MAX_REASON)?;
            let view = api.view(0).await?;
            let task = api.scheduler.pause(&id, reason).await?;
            Ok(convert::task_to_proto(&task, &view))
        })
        .await
        .map(Response::new)
    }

    async fn resume_task(
        &self,
        request: Request<pb::ResumeTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = caller(&request)?;
        let raw = request.into_inner().task_id;
        self.audited(caller, "ResumeTask", raw.clone(), |_| None, |api, caller| async move {
            let id = visible_task(&caller, "task_id", &raw)?;
            let view = api.view(0).await?;
            let task = api.scheduler.resume(&id).await?;
            Ok(convert::task_to_proto(&task, &view))
        })
        .await
        .map(Response::new)
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let raw = req.task_id.clone();
        self.audited(caller, "CancelTask", raw, |_| None, |api, caller| async move {
            let id = visible_task(&caller, "task_id", &req.task_id)?;
            let reason = convert::text("reason", req.reason, convert::MAX_REASON)?;
            let view = api.view(0).await?;
            let task = api.scheduler.cancel(&id, reason).await?;
            Ok(convert::task_to_proto(&task, &view))
        })
        .await
        .map(Response::new)
    }

    async fn trigger_task(
        &self,
        request: Request<pb::TriggerTaskRequest>,
    ) -> Result<Response<pb::TriggerTaskResponse>, Status> {
        let caller = caller(&request)?;
        let raw = request.into_inner().task_id;
        self.audited(caller, "TriggerTask", raw.clone(), |_| None, |api, caller| async move {
            let id = visible_task(&caller, "task_id", &raw)?;
            let run = api.scheduler.trigger(&id).await?;
            Ok(pb::TriggerTaskResponse { run })
        })
        .await
        .map(Response::new)
    }

    type StreamResultsStream = ResultStream;

    async fn stream_results(
        &self,
        request: Request<pb::StreamResultsRequest>,
    ) -> Result<Response<Self::StreamResultsStream>, Status> {
        let caller = caller(&request)?;
        let result = self.stream(&caller, request.into_inner()).await;
        if self.audit.wants(true) {
            // The stream itself is not Sync: only its outcome is kept across the await.
            let outcome = result.as_ref().map_or_else(|s| code_name(s.code()), |_| "OK");
            record(&self.audit, &caller, "StreamResults", None, outcome).await;
        }
        let (start, stream) = result?;
        let mut response = Response::new(stream);
        // Cursors are ASCII; one that were not would only lose the header.
        if !start.is_empty()
            && let Ok(value) = start.parse()
        {
            response.metadata_mut().insert(status::START_CURSOR_HEADER, value);
        }
        Ok(response)
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = caller(&request)?;
        use crate::access::Scope;
        let scopes = [
            (Scope::Read, pb::Scope::Read),
            (Scope::Write, pb::Scope::Write),
            (Scope::Admin, pb::Scope::Admin),
        ]
        .into_iter()
        .filter(|(scope, _)| caller.scopes.contains(*scope))
        .map(|(_, wire)| wire as i32)
        .collect();
        Ok(Response::new(pb::WhoAmIResponse {
            name: caller.name.to_string(),
            scopes,
            namespace: caller.namespace.as_deref().unwrap_or_default().to_string(),
        }))
    }

    type WatchTasksStream = watch::EventStream;

    async fn watch_tasks(
        &self,
        request: Request<pb::WatchTasksRequest>,
    ) -> Result<Response<Self::WatchTasksStream>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let result = async {
            let next_runs = convert::next_run_count("next_run_count", req.next_run_count)?;
            let fingerprints = self.fingerprints().await?.clone();
            let held = self.stream_slots(&caller).await?;
            Ok(self.watch.open(caller.clone(), next_runs, fingerprints, held))
        }
        .await;
        if self.audit.wants(true) {
            let outcome = result.as_ref().map_or_else(|s: &Status| code_name(s.code()), |_| "OK");
            record(&self.audit, &caller, "WatchTasks", None, outcome).await;
        }
        result.map(Response::new)
    }
}
