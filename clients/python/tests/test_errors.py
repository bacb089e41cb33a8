"""Errors with their google.rpc details, from the server and decoded offline."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from conftest import Reader, unique
from google.protobuf import any_pb2, duration_pb2

from recur_client import (
    AlreadyExistsError,
    Client,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    RecurError,
    ResourceExhaustedError,
    error_details_pb2,
    status_pb2,
)
from recur_client._errors import make_error


def test_invalid_spec_names_the_field(client: Client, http_target: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        client.register(unique("bad"), every=timedelta(milliseconds=10), http_url=http_target)
    err = info.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    violation = err.field_violation("spec.schedule.every")
    assert violation is not None, err.field_violations
    assert "at least" in violation.description
    assert "spec.schedule.every" in str(err)
    assert isinstance(err, RecurError)


def test_missing_action_and_bad_header(client: Client, http_target: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        client.register(unique("bad"), every=60)
    assert [v.field for v in info.value.field_violations][0].startswith("spec.action")
    with pytest.raises(InvalidArgumentError) as info:
        client.register(
            unique("bad"), every=60, http_url=http_target, headers={"authorization": "<redacted>"}
        )
    assert info.value.field_violations[0].field == 'spec.action.http.headers["authorization"]'


def test_unknown_update_mask_path(client: Client, http_target: str) -> None:
    tid = unique("mask")
    client.register(tid, every=60, http_url=http_target)
    spec = client.get(tid).spec
    with pytest.raises(InvalidArgumentError) as info:
        client.update(tid, spec=spec, update_mask=["schedule.every", "nope"])
    assert info.value.field_violation("update_mask.paths[1]") is not None


def test_delete_live_task_is_failed_precondition(client: Client, http_target: str) -> None:
    tid = unique("del")
    client.register(tid, every=60, http_url=http_target)
    with pytest.raises(FailedPreconditionError) as info:
        client.delete(tid)
    err = info.value
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.precondition_violations, err.details
    violation = err.precondition_violations[0]
    assert violation.type == "STATE"
    assert tid in violation.subject
    assert "cancel" in err.message.lower()
    client.cancel(tid)
    client.delete(tid)


def test_not_found_and_already_exists(client: Client, http_target: str) -> None:
    with pytest.raises(NotFoundError):
        client.get(unique("missing"))
    with pytest.raises(NotFoundError):
        client.pause(unique("missing"))
    with pytest.raises(NotFoundError):
        list(client.results([unique("missing")]))
    tid = unique("dup")
    client.register(tid, every=60, http_url=http_target)
    with pytest.raises(AlreadyExistsError):
        client.register(tid, every=61, http_url=http_target)


def test_invalid_cursor(client: Client) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        list(client.results(after_cursor="not-a-cursor", history_only=True))
    assert info.value.field_violation("after_cursor") is not None


def test_cursor_older_than_retention_is_data_loss(start_server: object, http_target: str) -> None:
    server = start_server(["--results-per-task", "1"])  # type: ignore[operator]
    with server.client() as client:
        tid = unique("loss")
        client.register(tid, every=3600, http_url=http_target, overlap="allow")
        reader = Reader(client.results(tid), 3)
        for _ in range(3):
            client.trigger(tid)
        live = reader.wait()
        # Only the newest result is kept now: the first cursor is too old.
        kept = list(client.results(tid, history_only=True))
        assert len(kept) == 1
        assert kept[0].cursor == live[-1].cursor  # type: ignore[attr-defined]
        old = live[0].cursor  # type: ignore[attr-defined]  # results come in cursor order
        stream = client.results(tid, after_cursor=old)
        with pytest.raises(DataLossError) as info:
            next(stream)
        assert stream.resumes == 0  # raised, not retried
        assert info.value.code.name == "DATA_LOSS"


def _status_trailer(code: int, message: str, *details: object) -> bytes:
    status = status_pb2.Status(code=code, message=message)
    for d in details:
        packed = any_pb2.Any()
        packed.Pack(d)  # type: ignore[arg-type]
        status.details.append(packed)
    return status.SerializeToString()


def test_error_details_decoded_offline() -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="spec.timeout", description="too long")
        ]
    )
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=5))
    info = error_details_pb2.ErrorInfo(reason="QUOTA", domain="recur")
    trailers = (
        ("grpc-status-details-bin", _status_trailer(8, "quota", bad, retry, info)),
        ("recur-resume-cursor", "abc-7"),
    )
    err = make_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota", trailers)
    assert isinstance(err, ResourceExhaustedError)
    assert err.field_violations[0].field == "spec.timeout"
    assert err.retry_delay == timedelta(seconds=2, microseconds=0)
    assert err.error_info is not None and err.error_info.reason == "QUOTA"
    assert err.resume_cursor == "abc-7"
    assert "spec.timeout: too long" in str(err)
    assert "retry after 2s" in str(err)
    # Undecodable details do not hide the error.
    broken = make_error(
        grpc.StatusCode.INTERNAL, "boom", (("grpc-status-details-bin", b"\xff\xff"),)
    )
    assert broken.message == "boom" and broken.details == ()
