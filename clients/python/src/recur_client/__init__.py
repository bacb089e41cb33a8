"""Typed Python client for recur, the periodic-task service (recur.v1).

    from datetime import timedelta
    from recur_client import Client

    with Client("127.0.0.1:50051") as recur:
        recur.register("ping", every=timedelta(seconds=30), http_url="http://127.0.0.1:8080/")
        for result in recur.results(["ping"]):
            print(result.run, result.outcome)

The generated messages and stub are ``recur_client.recur_pb2`` and
``recur_client.recur_pb2_grpc``; errors are :class:`RecurError` subclasses.
"""

from recur_client._client import DEFAULT_TARGET, Client, PemSource
from recur_client._errors import (
    RESUME_CURSOR_TRAILER,
    STATUS_DETAILS_TRAILER,
    AbortedError,
    AlreadyExistsError,
    CallCancelledError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    PreconditionViolation,
    RecurError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    error_from_rpc,
)
from recur_client._gen.google.rpc import error_details_pb2, status_pb2
from recur_client._gen.recur.v1 import recur_pb2, recur_pb2_grpc
from recur_client._spec import (
    DurationLike,
    OverlapLike,
    build_spec,
    to_datetime,
    to_duration,
    to_timedelta,
    to_timestamp,
)
from recur_client._streams import EventStream, ResultStream, is_resumable

# The enums and messages people use most, at the top level.
Task = recur_pb2.Task
TaskSpec = recur_pb2.TaskSpec
TaskResult = recur_pb2.TaskResult
TaskEvent = recur_pb2.TaskEvent
TaskState = recur_pb2.TaskState
TaskEventType = recur_pb2.TaskEventType
Outcome = recur_pb2.Outcome
OverlapPolicy = recur_pb2.OverlapPolicy
Scope = recur_pb2.Scope
Trigger = recur_pb2.Trigger

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TARGET",
    "RESUME_CURSOR_TRAILER",
    "STATUS_DETAILS_TRAILER",
    "AbortedError",
    "AlreadyExistsError",
    "CallCancelledError",
    "Client",
    "DataLossError",
    "DeadlineExceededError",
    "DurationLike",
    "EventStream",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "Outcome",
    "OutOfRangeError",
    "OverlapLike",
    "OverlapPolicy",
    "PemSource",
    "PermissionDeniedError",
    "PreconditionViolation",
    "RecurError",
    "ResourceExhaustedError",
    "ResultStream",
    "Scope",
    "Task",
    "TaskEvent",
    "TaskEventType",
    "TaskResult",
    "TaskSpec",
    "TaskState",
    "Trigger",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "build_spec",
    "error_details_pb2",
    "error_from_rpc",
    "is_resumable",
    "recur_pb2",
    "recur_pb2_grpc",
    "status_pb2",
    "to_datetime",
    "to_duration",
    "to_timedelta",
    "to_timestamp",
]
