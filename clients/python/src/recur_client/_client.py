"""The typed wrapper around recur.v1.TaskService."""

from __future__ import annotations

import builtins
import ipaddress
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar, Union

import grpc
from google.protobuf import field_mask_pb2

from recur_client._errors import error_from_rpc
from recur_client._gen.recur.v1 import recur_pb2, recur_pb2_grpc
from recur_client._spec import UNSET, DurationLike, OverlapLike, _Unset, build_spec
from recur_client._streams import EventStream, ResultStream

__all__ = ["DEFAULT_TARGET", "Client", "PemSource"]

DEFAULT_TARGET = "127.0.0.1:50051"

PemSource = Union[str, bytes, "os.PathLike[str]"]
"""PEM data as bytes (or a str starting with ``-----BEGIN``), or a file path."""

Req = TypeVar("Req")
Resp = TypeVar("Resp")

_TimeoutArg = Union[DurationLike, None, _Unset]

_DEFAULT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5000),
)


def _read_pem(source: PemSource | None) -> bytes | None:
    if source is None:
        return None
    if isinstance(source, bytes):
        return source
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode()
    with open(source, "rb") as f:
        return f.read()


def _seconds(value: DurationLike | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def _is_loopback(target: str) -> bool:
    host = target
    for prefix in ("dns:///", "ipv4:", "ipv6:", "dns:"):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    if host.startswith("unix:"):
        return True
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Client:
    """A client of recur.v1.TaskService.

    Args:
        target: ``host:port`` of the server (any grpc target string).
        token: a bearer token (``recur token new``), sent as
            ``authorization: Bearer <token>`` on every call.
        ca: the CA certificate(s) to trust, PEM bytes or a file path. Giving
            ``ca``, ``cert`` or ``key`` turns TLS on; without ``ca`` the
            system roots are trusted.
        cert, key: a client certificate and its key, for mTLS.
        tls: force TLS on (system roots) or off; default: on when ``ca``,
            ``cert`` or ``key`` is given.
        server_name: the name to verify the server's certificate against
            when it differs from the target's host.
        timeout: deadline of each unary call (seconds or timedelta; None for
            none). Streams have no deadline. Each method takes
            ``call_timeout`` to override it.
        allow_plaintext_token: send ``token`` without TLS to a host that is
            not loopback (e.g. a mesh sidecar terminates TLS). Refused by
            default so a token never crosses a network in clear by mistake.
        options: extra grpc channel options.
        channel: use this channel instead of making one (the other
            connection arguments are then ignored except ``token``).

    Errors are raised as :class:`~recur_client.RecurError` subclasses.
    Use the client as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        ca: PemSource | None = None,
        cert: PemSource | None = None,
        key: PemSource | None = None,
        tls: bool | None = None,
        server_name: str | None = None,
        timeout: DurationLike | None = 30.0,
        allow_plaintext_token: bool = False,
        options: Sequence[tuple[str, Any]] = (),
        channel: grpc.Channel | None = None,
    ) -> None:
        self.target = target
        self._timeout = _seconds(timeout)
        self._metadata: tuple[tuple[str, str], ...] = ()
        if token:
            self._metadata = (("authorization", f"Bearer {token}"),)
        use_tls = tls if tls is not None else any(x is not None for x in (ca, cert, key))
        if channel is not None:
            self._channel = channel
        else:
            # Reconnect soon after a server restart (grpc's default backoff
            # grows to 120 s, which would stall a resuming result stream).
            opts = [o for o in _DEFAULT_OPTIONS if o[0] not in {k for k, _ in options}]
            opts += list(options)
            if server_name:
                opts.append(("grpc.ssl_target_name_override", server_name))
            if use_tls:
                creds = grpc.ssl_channel_credentials(
                    root_certificates=_read_pem(ca),
                    private_key=_read_pem(key),
                    certificate_chain=_read_pem(cert),
                )
                self._channel = grpc.secure_channel(target, creds, options=opts)
            else:
                if ca is not None or cert is not None or key is not None:
                    raise ValueError("ca, cert and key need TLS (tls=False was given)")
                if token and not allow_plaintext_token and not _is_loopback(target):
                    raise ValueError(
                        f"refusing to send a token in clear text to {target}: use TLS "
                        "(ca=...) or pass allow_plaintext_token=True"
                    )
                self._channel = grpc.insecure_channel(target, options=opts)
        self.stub = recur_pb2_grpc.TaskServiceStub(self._channel)
        """The generated stub, for calls the wrapper does not cover."""

    # -- plumbing ---------------------------------------------------------

    def close(self) -> None:
        """Closes the channel (ending any open stream)."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        call_timeout: _TimeoutArg,
    ) -> Resp:
        timeout = self._timeout if isinstance(call_timeout, _Unset) else _seconds(call_timeout)
        try:
            return method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None

    # -- calls ------------------------------------------------------------

    def register(
        self,
        task_id: str = "",
        *,
        every: DurationLike | None = None,
        cron: str | None = None,
        time_zone: str | None = None,
        jitter: DurationLike | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        max_runs: int | None = None,
        http_url: str | None = None,
        http_method: str | None = None,
        headers: Mapping[str, str] | None = None,
        secret_headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        redis_args: Sequence[str] | None = None,
        custom_kind: str | None = None,
        custom_payload: bytes | None = None,
        timeout: DurationLike | None = None,
        overlap: OverlapLike | None = None,
        retry_max_attempts: int | None = None,
        retry_initial_backoff: DurationLike | None = None,
        retry_max_backoff: DurationLike | None = None,
        labels: Mapping[str, str] | None = None,
        catchup_window: DurationLike | None = None,
        spec: recur_pb2.TaskSpec | None = None,
        validate_only: bool = False,
        request_id: str = "",
        call_timeout: _TimeoutArg = UNSET,
    ) -> recur_pb2.Task:
        """Registers a task (RegisterTask) and returns it as stored.

        The schedule is ``every`` (a timedelta or seconds) or ``cron`` (with
        ``time_zone``); the action is an HTTP call (``http_url``,
        ``http_method``, ``headers``, ``secret_headers``, ``body``), a Redis
        command (``redis_args``) or a custom kind. ``timeout`` is each
        attempt's bound, ``overlap`` the overlap policy, ``retry_*`` the
        retry policy. Arguments left as None take the server's defaults.
        Alternatively pass a whole ``spec``.

        With ``validate_only`` nothing is stored: the server validates and
        returns the task it would create, ``spec_fingerprint`` included. An
        empty ``task_id`` lets the server pick one; ``request_id`` makes a
        retry of such a call return the same task.
        """
        fields: dict[str, Any] = dict(
            every=every,
            cron=cron,
            time_zone=time_zone,
            jitter=jitter,
            start_at=start_at,
            end_at=end_at,
            max_runs=max_runs,
            http_url=http_url,
            http_method=http_method,
            headers=headers,
            secret_headers=secret_headers,
            body=body,
            redis_args=redis_args,
            custom_kind=custom_kind,
            custom_payload=custom_payload,
            timeout=timeout,
            overlap=overlap,
            retry_max_attempts=retry_max_attempts,
            retry_initial_backoff=retry_initial_backoff,
            retry_max_backoff=retry_max_backoff,
            labels=labels,
            catchup_window=catchup_window,
        )
        given = {k: v for k, v in fields.items() if v is not None}
        if spec is not None:
            if given:
                raise ValueError(f"give spec or keyword fields, not both (got {sorted(given)})")
        else:
            spec, _ = build_spec(**given)
        request = recur_pb2.RegisterTaskRequest(
            task_id=task_id, spec=spec, request_id=request_id, validate_only=validate_only
        )
        return self._call(self.stub.RegisterTask, request, call_timeout)

    def update(
        self,
        task_id: str,
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
        spec: recur_pb2.TaskSpec | None = None,
        update_mask: Sequence[str] | None = None,
        validate_only: bool = False,
        call_timeout: _TimeoutArg = UNSET,
    ) -> recur_pb2.Task:
        """Changes a live task (UpdateTask) and returns it.

        Only the keyword fields given change: the update mask is made from
        them (``every`` -> ``schedule.every``, ``http_url`` ->
        ``action.http.url``, ``labels`` -> ``labels``, ...), so stored header
        values are kept. A field given as None is cleared. ``labels`` and
        ``headers`` replace the whole map.

        Or pass ``spec`` with an explicit ``update_mask`` (paths relative to
        TaskSpec), or ``spec`` alone to replace the whole spec.
        """
        fields: dict[str, Any] = dict(
            every=every,
            cron=cron,
            time_zone=time_zone,
            jitter=jitter,
            start_at=start_at,
            end_at=end_at,
            max_runs=max_runs,
            http_url=http_url,
            http_method=http_method,
            headers=headers,
            secret_headers=secret_headers,
            body=body,
            redis_args=redis_args,
            custom_kind=custom_kind,
            custom_payload=custom_payload,
            timeout=timeout,
            overlap=overlap,
            retry_max_attempts=retry_max_attempts,
            retry_initial_backoff=retry_initial_backoff,
            retry_max_backoff=retry_max_backoff,
            labels=labels,
            catchup_window=catchup_window,
        )
        given = {k: v for k, v in fields.items() if not isinstance(v, _Unset)}
        mask: builtins.list[str] | None
        if spec is not None:
            if given:
                raise ValueError(f"give spec or keyword fields, not both (got {sorted(given)})")
            mask = None if update_mask is None else builtins.list(update_mask)
        else:
            if not given:
                raise ValueError("nothing to update: give keyword fields or spec")
            spec, paths = build_spec(**given)
            mask = paths if update_mask is None else builtins.list(update_mask)
        request = recur_pb2.UpdateTaskRequest(
            task_id=task_id, spec=spec, validate_only=validate_only
        )
        if mask is not None:
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=mask))
        return self._call(self.stub.UpdateTask, request, call_timeout)

    def get(
        self, task_id: str, *, next_run_count: int = 0, call_timeout: _TimeoutArg = UNSET
    ) -> recur_pb2.Task:
        """Returns one task (GetTask), with up to ``next_run_count`` (<= 10)
        upcoming fire times in ``next_run_times``."""
        request = recur_pb2.GetTaskRequest(task_id=task_id, next_run_count=next_run_count)
        return self._call(self.stub.GetTask, request, call_timeout)

    def list(
        self,
        *,
        state: recur_pb2.TaskState.ValueType | None = None,
        labels: Mapping[str, str] | None = None,
        page_size: int = 0,
        next_run_count: int = 0,
        call_timeout: _TimeoutArg = UNSET,
    ) -> Iterator[recur_pb2.Task]:
        """Iterates over every task (ListTasks), fetching page after page,
        ordered by task id; optionally only one state or matching labels."""
        token = ""
        while True:
            request = recur_pb2.ListTasksRequest(
                page_size=page_size,
                page_token=token,
                state=state or recur_pb2.TASK_STATE_UNSPECIFIED,
                labels=dict(labels or {}),
                next_run_count=next_run_count,
            )
            page = self._call(self.stub.ListTasks, request, call_timeout)
            yield from page.tasks
            token = page.next_page_token
            if not token:
                return

    def pause(
        self, task_id: str, reason: str = "", *, call_timeout: _TimeoutArg = UNSET
    ) -> recur_pb2.Task:
        """Pauses a task (PauseTask); no new run starts once this returns."""
        request = recur_pb2.PauseTaskRequest(task_id=task_id, reason=reason)
        return self._call(self.stub.PauseTask, request, call_timeout)

    def resume(self, task_id: str, *, call_timeout: _TimeoutArg = UNSET) -> recur_pb2.Task:
        """Resumes a paused task (ResumeTask) from its next future slot."""
        request = recur_pb2.ResumeTaskRequest(task_id=task_id)
        return self._call(self.stub.ResumeTask, request, call_timeout)

    def trigger(self, task_id: str, *, call_timeout: _TimeoutArg = UNSET) -> int:
        """Runs a task once now (TriggerTask); returns the run's number."""
        request = recur_pb2.TriggerTaskRequest(task_id=task_id)
        return self._call(self.stub.TriggerTask, request, call_timeout).run

    def cancel(
        self, task_id: str, reason: str = "", *, call_timeout: _TimeoutArg = UNSET
    ) -> recur_pb2.Task:
        """Cancels a task for good (CancelTask)."""
        request = recur_pb2.CancelTaskRequest(task_id=task_id, reason=reason)
        return self._call(self.stub.CancelTask, request, call_timeout)

    def delete(self, task_id: str, *, call_timeout: _TimeoutArg = UNSET) -> None:
        """Deletes a CANCELLED or COMPLETED task (DeleteTask)."""
        request = recur_pb2.DeleteTaskRequest(task_id=task_id)
        self._call(self.stub.DeleteTask, request, call_timeout)

    def who_am_i(self, *, call_timeout: _TimeoutArg = UNSET) -> recur_pb2.WhoAmIResponse:
        """Who the server takes the caller for: name, scopes, namespace."""
        return self._call(self.stub.WhoAmI, recur_pb2.WhoAmIRequest(), call_timeout)

    def watch_tasks(self, *, next_run_count: int = 0) -> EventStream:
        """Streams task events (WatchTasks): EXISTING for every task, SYNCED,
        then one event per change. Cancel it (or leave its ``with`` block)
        to stop."""
        request = recur_pb2.WatchTasksRequest(next_run_count=next_run_count)
        return EventStream(self.stub.WatchTasks(request, metadata=self._metadata))

    def results(
        self,
        task_ids: Sequence[str] | str = (),
        *,
        after_cursor: str = "",
        history_only: bool = False,
        initial_backoff: timedelta = timedelta(milliseconds=100),
        max_backoff: timedelta = timedelta(seconds=5),
        reconnect_timeout: timedelta | None = timedelta(seconds=60),
    ) -> ResultStream:
        """Iterates over results (StreamResults), resuming after interruptions.

        ``task_ids`` limits the stream to those tasks (empty: all).
        ``after_cursor`` first replays retained results after that cursor;
        ``history_only`` replays and then ends. After RESOURCE_EXHAUSTED,
        UNAVAILABLE or a dropped connection the stream is reopened from the
        server's resume cursor or the last result's cursor (see
        :class:`ResultStream`); ``stream.cursor`` is where it stands.
        """
        ids = [task_ids] if isinstance(task_ids, str) else builtins.list(task_ids)

        def open_call(request: recur_pb2.StreamResultsRequest) -> Any:
            return self.stub.StreamResults(request, metadata=self._metadata)

        return ResultStream(
            open_call,
            task_ids=ids,
            after_cursor=after_cursor,
            history_only=history_only,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
            reconnect_timeout=reconnect_timeout,
        )
