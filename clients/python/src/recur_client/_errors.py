"""Readable errors built from the gRPC status and its details.

The server puts a google.rpc.Status in the ``grpc-status-details-bin``
trailer: INVALID_ARGUMENT carries a BadRequest naming fields by their proto
paths (``spec.schedule.every``), RESOURCE_EXHAUSTED and UNAVAILABLE a
RetryInfo where waiting helps, FAILED_PRECONDITION a PreconditionFailure.
:func:`error_from_rpc` turns a ``grpc.RpcError`` into a :class:`RecurError`
subclass with those details decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Union

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message as ProtoMessage

from recur_client._gen.google.rpc import error_details_pb2, status_pb2

__all__ = [
    "RESUME_CURSOR_TRAILER",
    "STATUS_DETAILS_TRAILER",
    "AbortedError",
    "AlreadyExistsError",
    "CallCancelledError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "PreconditionViolation",
    "RecurError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "error_from_rpc",
]

STATUS_DETAILS_TRAILER = "grpc-status-details-bin"
RESUME_CURSOR_TRAILER = "recur-resume-cursor"

MetadataValue = Union[str, bytes]

_DETAIL_TYPES: tuple[type[ProtoMessage], ...] = (
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.ErrorInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RequestInfo,
    error_details_pb2.DebugInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
)


@dataclass(frozen=True)
class FieldViolation:
    """One offending request field (google.rpc.BadRequest.FieldViolation)."""

    field: str
    """Proto path of the field, e.g. ``spec.schedule.every``."""
    description: str
    reason: str = ""


@dataclass(frozen=True)
class PreconditionViolation:
    """One failed precondition (google.rpc.PreconditionFailure.Violation)."""

    type: str
    subject: str
    description: str


class RecurError(Exception):
    """A failed call. Subclasses exist per gRPC status code.

    Attributes:
        code: the gRPC status code.
        message: the server's message, meant for people.
        field_violations: from a google.rpc.BadRequest detail.
        precondition_violations: from a google.rpc.PreconditionFailure.
        retry_delay: from a google.rpc.RetryInfo: how long to wait before
            trying again, or None.
        error_info: a google.rpc.ErrorInfo detail, if any.
        details: every detail of the status, decoded where the type is
            known (google.rpc error details), else the raw ``Any``.
        resume_cursor: the ``recur-resume-cursor`` trailer of a result
            stream that ended (RESOURCE_EXHAUSTED, UNAVAILABLE), or None.
        trailers: the call's trailing metadata.
    """

    code: grpc.StatusCode
    message: str
    field_violations: tuple[FieldViolation, ...]
    precondition_violations: tuple[PreconditionViolation, ...]
    retry_delay: timedelta | None
    error_info: error_details_pb2.ErrorInfo | None
    details: tuple[ProtoMessage, ...]
    resume_cursor: str | None
    trailers: tuple[tuple[str, MetadataValue], ...]

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        details: tuple[ProtoMessage, ...] = (),
        trailers: tuple[tuple[str, MetadataValue], ...] = (),
    ) -> None:
        self.code = code
        self.message = message
        self.details = details
        self.trailers = trailers
        fields: list[FieldViolation] = []
        preconditions: list[PreconditionViolation] = []
        self.retry_delay = None
        self.error_info = None
        for d in details:
            if isinstance(d, error_details_pb2.BadRequest):
                fields.extend(
                    FieldViolation(v.field, v.description, v.reason) for v in d.field_violations
                )
            elif isinstance(d, error_details_pb2.PreconditionFailure):
                preconditions.extend(
                    PreconditionViolation(v.type, v.subject, v.description) for v in d.violations
                )
            elif isinstance(d, error_details_pb2.RetryInfo):
                self.retry_delay = d.retry_delay.ToTimedelta()
            elif isinstance(d, error_details_pb2.ErrorInfo):
                self.error_info = d
        self.field_violations = tuple(fields)
        self.precondition_violations = tuple(preconditions)
        self.resume_cursor = None
        for key, value in trailers:
            if key == RESUME_CURSOR_TRAILER:
                self.resume_cursor = value.decode() if isinstance(value, bytes) else value
        super().__init__(self._describe())

    def field_violation(self, field: str) -> FieldViolation | None:
        """The violation naming ``field`` (a proto path), if any."""
        for v in self.field_violations:
            if v.field == field:
                return v
        return None

    def _describe(self) -> str:
        text = f"{self.code.name}: {self.message}"
        # What the message does not already say.
        extra = [
            f"{v.field}: {v.description}"
            for v in self.field_violations
            if v.description not in self.message
        ]
        extra += [
            f"{v.type} {v.subject}: {v.description}"
            for v in self.precondition_violations
            if v.description not in self.message
        ]
        if extra:
            text += " [" + "; ".join(extra) + "]"
        if self.retry_delay is not None:
            text += f" (retry after {self.retry_delay.total_seconds():g}s)"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r})"


class CallCancelledError(RecurError):
    """CANCELLED: the call was cancelled (usually by the client)."""


class UnknownError(RecurError):
    """UNKNOWN."""


class InvalidArgumentError(RecurError):
    """INVALID_ARGUMENT: see ``field_violations`` for the fields."""


class DeadlineExceededError(RecurError):
    """DEADLINE_EXCEEDED."""


class NotFoundError(RecurError):
    """NOT_FOUND: an unknown task (or one outside the caller's namespace)."""


class AlreadyExistsError(RecurError):
    """ALREADY_EXISTS: a task id reused with a different spec."""


class PermissionDeniedError(RecurError):
    """PERMISSION_DENIED: the credentials lack a scope or the namespace."""


class ResourceExhaustedError(RecurError):
    """RESOURCE_EXHAUSTED: a server limit or quota; see ``retry_delay``."""


class FailedPreconditionError(RecurError):
    """FAILED_PRECONDITION: see ``precondition_violations``."""


class AbortedError(RecurError):
    """ABORTED."""


class OutOfRangeError(RecurError):
    """OUT_OF_RANGE."""


class UnimplementedError(RecurError):
    """UNIMPLEMENTED: the server does not know this call."""


class InternalError(RecurError):
    """INTERNAL."""


class UnavailableError(RecurError):
    """UNAVAILABLE: the server is unreachable or shutting down."""


class DataLossError(RecurError):
    """DATA_LOSS: a result cursor older than the retained results."""


class UnauthenticatedError(RecurError):
    """UNAUTHENTICATED: no or an unknown token."""


_BY_CODE: dict[grpc.StatusCode, type[RecurError]] = {
    grpc.StatusCode.CANCELLED: CallCancelledError,
    grpc.StatusCode.UNKNOWN: UnknownError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DATA_LOSS: DataLossError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
}


_DETAIL_BY_NAME: dict[str, type[ProtoMessage]] = {
    cls.DESCRIPTOR.full_name: cls for cls in _DETAIL_TYPES
}


def _unpack(detail: any_pb2.Any) -> ProtoMessage:
    cls = _DETAIL_BY_NAME.get(detail.TypeName())
    if cls is None:
        return detail
    msg = cls()
    try:
        detail.Unpack(msg)
    except Exception:  # a broken detail must not hide the error
        return detail
    return msg


def make_error(
    code: grpc.StatusCode,
    message: str,
    trailers: tuple[tuple[str, MetadataValue], ...] = (),
) -> RecurError:
    """Builds the RecurError subclass for ``code`` from a call's trailers."""
    details: tuple[ProtoMessage, ...] = ()
    for key, value in trailers:
        if key == STATUS_DETAILS_TRAILER and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except Exception:  # a broken detail must not hide the error
                continue
            details = tuple(_unpack(d) for d in status.details)
            if status.message and not message:
                message = status.message
    cls = _BY_CODE.get(code, RecurError)
    return cls(code, message, details=details, trailers=trailers)


def error_from_rpc(error: grpc.RpcError) -> RecurError:
    """Converts an error raised by a grpc call into a :class:`RecurError`."""
    if isinstance(error, grpc.Call):
        code = error.code()
        text = error.details() or ""
        trailers = tuple((k, v) for k, v in (error.trailing_metadata() or ()))
    else:  # pragma: no cover - grpc always raises Call errors for RPCs
        code, text, trailers = grpc.StatusCode.UNKNOWN, str(error), ()
    return make_error(code, text, trailers)
