"""Building a TaskSpec (and an update mask) from keyword arguments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Final, Union

from google.protobuf import duration_pb2, timestamp_pb2

from recur_client._gen.recur.v1 import recur_pb2

__all__ = [
    "UNSET",
    "DurationLike",
    "OverlapLike",
    "build_spec",
    "to_datetime",
    "to_duration",
    "to_timedelta",
    "to_timestamp",
]


class _Unset:
    """Marks a keyword argument that was not given."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = _Unset()

DurationLike = Union[timedelta, int, float]
"""A duration: a ``timedelta`` or a number of seconds."""

OverlapLike = Union["recur_pb2.OverlapPolicy.ValueType", str]
"""An OverlapPolicy value, or its name: ``"skip"``, ``"allow"``,
``"cancel_running"``, ``"buffer_one"`` (case-insensitive, the
``OVERLAP_POLICY_`` prefix optional)."""


def to_duration(value: DurationLike) -> duration_pb2.Duration:
    """A google.protobuf.Duration from a timedelta or seconds."""
    if isinstance(value, bool) or not isinstance(value, (timedelta, int, float)):
        raise TypeError(f"expected a timedelta or seconds, got {value!r}")
    d = duration_pb2.Duration()
    if isinstance(value, timedelta):
        d.FromTimedelta(value)
    else:
        d.FromNanoseconds(round(value * 1_000_000_000))
    return d


def to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """A google.protobuf.Timestamp from a timezone-aware datetime."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"naive datetime {value.isoformat()}: give a time zone "
            "(e.g. datetime.now(timezone.utc))"
        )
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def to_datetime(value: timestamp_pb2.Timestamp) -> datetime:
    """A timezone-aware (UTC) datetime from a Timestamp."""
    return value.ToDatetime(tzinfo=timezone.utc)


def to_timedelta(value: duration_pb2.Duration) -> timedelta:
    """A timedelta from a Duration."""
    return value.ToTimedelta()


def _overlap(value: OverlapLike) -> recur_pb2.OverlapPolicy.ValueType:
    if isinstance(value, str):
        name = value.strip().upper().replace("-", "_")
        if not name.startswith("OVERLAP_POLICY_"):
            name = "OVERLAP_POLICY_" + name
        try:
            return recur_pb2.OverlapPolicy.Value(name)
        except ValueError:
            raise ValueError(f"unknown overlap policy {value!r}") from None
    return recur_pb2.OverlapPolicy.ValueType(int(value))


def build_spec(
    *,
    every: DurationLike | None | _Unset = UNSET,
    cron: str | None | _Unset = UNSET,
    time_zone: str | None | _Unset = UNSET,
    jitter: DurationLike | None | _Unset = UNSET,
    start_at: datetime | None | _Unset = UNSET,
    end_at: datetime | None | _Unset = UNSET,
    max_runs: int | None | _Unset = UNSET,
    http_url: str | None | _Unset = UNSET,
    http_method: str | None | _Unset = UNSET,
    headers: Mapping[str, str] | None | _Unset = UNSET,
    secret_headers: Mapping[str, str] | None | _Unset = UNSET,
    body: bytes | str | None | _Unset = UNSET,
    redis_args: Sequence[str] | None | _Unset = UNSET,
    custom_kind: str | None | _Unset = UNSET,
    custom_payload: bytes | None | _Unset = UNSET,
    timeout: DurationLike | None | _Unset = UNSET,
    overlap: OverlapLike | None | _Unset = UNSET,
    retry_max_attempts: int | None | _Unset = UNSET,
    retry_initial_backoff: DurationLike | None | _Unset = UNSET,
    retry_max_backoff: DurationLike | None | _Unset = UNSET,
    labels: Mapping[str, str] | None | _Unset = UNSET,
    catchup_window: DurationLike | None | _Unset = UNSET,
) -> tuple[recur_pb2.TaskSpec, list[str]]:
    """Builds a TaskSpec from keyword arguments.

    Returns the spec and the update-mask paths (relative to TaskSpec) of the
    arguments that were given; an argument given as None names its field in
    the mask but leaves it unset (so UpdateTask clears it).
    """
    given: dict[str, Any] = {
        name: value
        for name, value in (
            ("every", every),
            ("cron", cron),
            ("time_zone", time_zone),
            ("jitter", jitter),
            ("start_at", start_at),
            ("end_at", end_at),
            ("max_runs", max_runs),
            ("http_url", http_url),
            ("http_method", http_method),
            ("headers", headers),
            ("secret_headers", secret_headers),
            ("body", body),
            ("redis_args", redis_args),
            ("custom_kind", custom_kind),
            ("custom_payload", custom_payload),
            ("timeout", timeout),
            ("overlap", overlap),
            ("retry_max_attempts", retry_max_attempts),
            ("retry_initial_backoff", retry_initial_backoff),
            ("retry_max_backoff", retry_max_backoff),
            ("labels", labels),
            ("catchup_window", catchup_window),
        )
        if value is not UNSET
    }
    if given.get("every") is not None and given.get("cron") is not None:
        raise ValueError("give either every or cron, not both")
    kinds = sorted(
        {_FIELDS[name][2] for name, v in given.items() if v is not None and _FIELDS[name][2]}
    )
    if len(kinds) > 1:
        raise ValueError(f"give one kind of action, got {' and '.join(kinds)} arguments")

    spec = recur_pb2.TaskSpec()
    paths: list[str] = []
    for name, value in given.items():
        path, setter, _ = _FIELDS[name]
        paths.append(path)
        if value is not None:
            setter(spec, value)
    return spec, paths


def _set_duration(field: duration_pb2.Duration, value: DurationLike) -> None:
    field.SetInParent()
    field.CopyFrom(to_duration(value))


def _set_timestamp(field: timestamp_pb2.Timestamp, value: datetime) -> None:
    field.SetInParent()
    field.CopyFrom(to_timestamp(value))


def _set_redis_args(spec: recur_pb2.TaskSpec, value: Sequence[str]) -> None:
    if isinstance(value, (str, bytes)):
        raise TypeError("redis_args is the command as a list, e.g. ['INCR', 'hits']")
    spec.action.redis.SetInParent()
    spec.action.redis.args.extend(str(a) for a in value)


def _set_body(spec: recur_pb2.TaskSpec, value: bytes | str) -> None:
    spec.action.http.body = value.encode() if isinstance(value, str) else bytes(value)


def _set_headers(spec: recur_pb2.TaskSpec, value: Mapping[str, str]) -> None:
    spec.action.http.SetInParent()
    spec.action.http.headers.update(value)


def _set_secret_headers(spec: recur_pb2.TaskSpec, value: Mapping[str, str]) -> None:
    spec.action.http.SetInParent()
    spec.action.http.secret_headers.update(value)


def _set_labels(spec: recur_pb2.TaskSpec, value: Mapping[str, str]) -> None:
    spec.labels.update(value)


_Setter = Callable[[recur_pb2.TaskSpec, Any], None]

# argument -> (update-mask path relative to TaskSpec, setter, action kind)
_FIELDS: dict[str, tuple[str, _Setter, str]] = {
    "every": ("schedule.every", lambda s, v: _set_duration(s.schedule.every, v), ""),
    "cron": ("schedule.cron", lambda s, v: setattr(s.schedule, "cron", str(v)), ""),
    "time_zone": ("schedule.time_zone", lambda s, v: setattr(s.schedule, "time_zone", str(v)), ""),
    "jitter": ("schedule.jitter", lambda s, v: _set_duration(s.schedule.jitter, v), ""),
    "start_at": ("schedule.start_at", lambda s, v: _set_timestamp(s.schedule.start_at, v), ""),
    "end_at": ("schedule.end_at", lambda s, v: _set_timestamp(s.schedule.end_at, v), ""),
    "max_runs": ("schedule.max_runs", lambda s, v: setattr(s.schedule, "max_runs", int(v)), ""),
    "http_url": ("action.http.url", lambda s, v: setattr(s.action.http, "url", str(v)), "http_*"),
    "http_method": (
        "action.http.method",
        lambda s, v: setattr(s.action.http, "method", str(v).upper()),
        "http_*",
    ),
    "headers": ("action.http.headers", _set_headers, "http_*"),
    "secret_headers": ("action.http.secret_headers", _set_secret_headers, "http_*"),
    "body": ("action.http.body", _set_body, "http_*"),
    "redis_args": ("action.redis.args", _set_redis_args, "redis_args"),
    "custom_kind": (
        "action.custom.kind",
        lambda s, v: setattr(s.action.custom, "kind", str(v)),
        "custom_*",
    ),
    "custom_payload": (
        "action.custom.payload",
        lambda s, v: setattr(s.action.custom, "payload", bytes(v)),
        "custom_*",
    ),
    "timeout": ("timeout", lambda s, v: _set_duration(s.timeout, v), ""),
    "overlap": ("overlap", lambda s, v: setattr(s, "overlap", _overlap(v)), ""),
    "retry_max_attempts": (
        "retry.max_attempts",
        lambda s, v: setattr(s.retry, "max_attempts", int(v)),
        "",
    ),
    "retry_initial_backoff": (
        "retry.initial_backoff",
        lambda s, v: _set_duration(s.retry.initial_backoff, v),
        "",
    ),
    "retry_max_backoff": (
        "retry.max_backoff",
        lambda s, v: _set_duration(s.retry.max_backoff, v),
        "",
    ),
    "labels": ("labels", _set_labels, ""),
    "catchup_window": ("catchup_window", lambda s, v: _set_duration(s.catchup_window, v), ""),
}
