//! The gRPC edge: `recur.v1.TaskService` as thin handlers (convert, call the
//! scheduler, convert back). The only module that knows both the generated
//! types and the domain.

pub mod convert;
pub mod mask;
pub mod status;

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    access::Caller,
    audit::{self, AuditLog},
    pb::v1::{self as pb, task_service_server::TaskService},
    results::stream::{self, StreamGauge, StreamRequest},
    scheduler::{Error, Scheduler},
    store::TaskFilter,
};
use convert::SpecContext;

/// Default ListTasks page.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest ListTasks page.
pub const MAX_PAGE_SIZE: usize = 1000;
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
}

/// The TaskService implementation.
pub struct TaskApi {
    scheduler: Scheduler,
    settings: ApiSettings,
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
            scheduler,
            settings,
            streams: Arc::new(Semaphore::new(max_open_streams)),
            max_open_streams,
            gauge,
            streams_shutdown,
        }
    }

    fn spec_context(&self) -> SpecContext<'_> {
        SpecContext {
            min_interval: self.settings.min_interval,
            default_timeout: self.settings.default_timeout,
            max_timeout: self.settings.max_timeout,
            key_prefix: &self.settings.key_prefix,
            actions: self.scheduler.actions(),
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
        let spec = convert::spec("spec", req.spec, &self.spec_context())?;
        let namespace = caller.namespace.as_deref().unwrap_or("");
        // Request ids are scoped to the namespace like task ids, so one
        // tenant's retry can never be answered with another tenant's task.
        let request_id = (!request_id.is_empty()).then(|| format!("{namespace}{request_id}"));
        let task = self
            .scheduler
            .register_in(namespace, id, spec, request_id)
            .await?;
        Ok(convert::task_to_proto(&task))
    }

    async fn update(&self, caller: &Caller, req: pb::UpdateTaskRequest) -> Result<pb::Task, Status> {
        let id = visible_task(caller, "task_id", &req.task_id)?;
        let paths = mask::parse(&req.update_mask.unwrap_or_default().paths)?;
        let task = if paths.is_empty() {
            let spec = convert::spec("spec", req.spec, &self.spec_context())?;
            self.scheduler.update(&id, spec).await?
        } else {
            let patch = req.spec.ok_or_else(|| Error::InvalidArgument {
                field: "spec".into(),
                reason: "is required".into(),
            })?;
            // The merge runs inside the scheduler's compare-and-set, on the
            // spec as stored at that moment: an update landing in between
            // makes it run again, never lose that update's other fields.
            let ctx = self.spec_context();
            self.scheduler
                .update_with(&id, |stored| {
                    let stored = convert::spec_to_proto_unredacted(stored);
                    convert::spec("spec", Some(mask::apply(stored, &patch, &paths)), &ctx)
                })
                .await?
        };
        Ok(convert::task_to_proto(&task))
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
        Ok(pb::ListTasksResponse {
            tasks: tasks.iter().map(convert::task_to_proto).collect(),
            next_page_token,
        })
    }

    async fn stream(&self, caller: &Caller, req: pb::StreamResultsRequest) -> Result<ResultStream, Status> {
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
        let permit =
            self.streams
                .clone()
                .try_acquire_owned()
                .map_err(|_| Error::TooManyStreams {
                    limit: self.max_open_streams,
                })?;
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
        let out = futures::stream::unfold(opened, |mut opened| async move {
            match opened.next().await? {
                Ok(result) => Some((Ok(convert::result_to_wire(&result)), opened)),
                Err(end) => status::stream_end(end).map(|s| (Err(s), opened)),
            }
        });
        Ok(Box::pin(out))
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
        let result = self.register(&caller, req).await;
        let id = match &result {
            Ok(task) => task.task_id.clone(),
            Err(_) => named,
        };
        audit(&self.audit, &caller, "RegisterTask", false, Some(id), &result).await;
        result.map(Response::new)
    }

    async fn update_task(
        &self,
        request: Request<pb::UpdateTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let id = req.task_id.clone();
        let result = self.update(&caller, req).await;
        audit(&self.audit, &caller, "UpdateTask", false, Some(id), &result).await;
        result.map(Response::new)
    }

    async fn delete_task(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        let caller = caller(&request)?;
        let raw = request.into_inner().task_id;
        let result = async {
            let id = visible_task(&caller, "task_id", &raw)?;
            self.scheduler.delete(&id).await?;
            Ok(pb::DeleteTaskResponse {})
        }
        .await;
        audit(&self.audit, &caller, "DeleteTask", false, Some(raw), &result).await;
        result.map(Response::new)
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = caller(&request)?;
        let raw = request.into_inner().task_id;
        let result = async {
            let id = visible_task(&caller, "task_id", &raw)?;
            let task = self.scheduler.get(&id).await?;
            Ok(convert::task_to_proto(&task))
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
        let result = async {
            let id = visible_task(&caller, "task_id", &req.task_id)?;
            let reason = convert::text("reason", req.reason, convert::MAX_REASON)?;
            let task = self.scheduler.pause(&id, reason).await?;
            Ok(convert::task_to_proto(&task))
        }
        .await;
        audit(&self.audit, &caller, "PauseTask", false, Some(raw), &result).await;
        result.map(Response::new)
    }

    async fn resume_task(
        &self,
        request: Request<pb::ResumeTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = caller(&request)?;
        let raw = request.into_inner().task_id;
        let result = async {
            let id = visible_task(&caller, "task_id", &raw)?;
            let task = self.scheduler.resume(&id).await?;
            Ok(convert::task_to_proto(&task))
        }
        .await;
        audit(&self.audit, &caller, "ResumeTask", false, Some(raw), &result).await;
        result.map(Response::new)
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let raw = req.task_id.clone();
        let result = async {
            let id = visible_task(&caller, "task_id", &req.task_id)?;
            let reason = convert::text("reason", req.reason, convert::MAX_REASON)?;
            let task = self.scheduler.cancel(&id, reason).await?;
            Ok(convert::task_to_proto(&task))
        }
        .await;
        audit(&self.audit, &caller, "CancelTask", false, Some(raw), &result).await;
        result.map(Response::new)
    }

    async fn trigger_task(
        &self,
        request: Request<pb::TriggerTaskRequest>,
    ) -> Result<Response<pb::TriggerTaskResponse>, Status> {
        let caller = caller(&request)?;
        let raw = request.into_inner().task_id;
        let result = async {
            let id = visible_task(&caller, "task_id", &raw)?;
            let run = self.scheduler.trigger(&id).await?;
            Ok(pb::TriggerTaskResponse { run })
        }
        .await;
        audit(&self.audit, &caller, "TriggerTask", false, Some(raw), &result).await;
        result.map(Response::new)
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
        result.map(Response::new)
    }
}
