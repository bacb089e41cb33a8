"""The resuming result iterator: offline with fake calls, and across a real
server restart on Redis (graceful, then killed)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from conftest import REDIS_URL, RecurServer, unique
from google.protobuf import any_pb2, duration_pb2

from recur_client import (
    DataLossError,
    PermissionDeniedError,
    ResultStream,
    UnavailableError,
    error_details_pb2,
    recur_pb2,
    status_pb2,
)

# -- offline ---------------------------------------------------------------


class FakeError(grpc.RpcError, grpc.Call):
    def __init__(self, code: grpc.StatusCode, details: str = "", trailers: Any = ()) -> None:
        self._code, self._details, self._trailers = code, details, tuple(trailers)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailers

    def initial_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return True

    def add_callback(self, callback: Any) -> bool:
        return False


class FakeCall:
    def __init__(self, items: list[recur_pb2.TaskResult], end: BaseException | None) -> None:
        self._items = iter(items)
        self._end = end
        self.cancelled = False

    def __iter__(self) -> Iterator[recur_pb2.TaskResult]:
        return self

    def __next__(self) -> recur_pb2.TaskResult:
        for item in self._items:
            return item
        if self._end is not None:
            raise self._end
        raise StopIteration

    def cancel(self) -> None:
        self.cancelled = True


def result(cursor: str) -> recur_pb2.TaskResult:
    return recur_pb2.TaskResult(task_id="t", cursor=cursor)


def retry_info_trailer(seconds: float) -> tuple[str, bytes]:
    packed = any_pb2.Any()
    delay = duration_pb2.Duration()
    delay.FromTimedelta(timedelta(seconds=seconds))
    packed.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=8, message="behind", details=[packed])
    return ("grpc-status-details-bin", status.SerializeToString())


def scripted(
    calls: list[FakeCall],
) -> tuple[list[recur_pb2.StreamResultsRequest], Any]:
    requests: list[recur_pb2.StreamResultsRequest] = []

    def open_call(request: recur_pb2.StreamResultsRequest) -> FakeCall:
        requests.append(request)
        return calls.pop(0)

    return requests, open_call


def test_resumes_from_trailer_then_last_cursor_honouring_retry_info() -> None:
    calls = [
        FakeCall(
            [result("c1"), result("c2")],
            FakeError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "fell behind",
                [("recur-resume-cursor", "c4"), retry_info_trailer(0.25)],
            ),
        ),
        FakeCall([result("c5")], FakeError(grpc.StatusCode.UNAVAILABLE, "Socket closed")),
        FakeCall([], FakeError(grpc.StatusCode.UNAVAILABLE, "failed to connect")),
        FakeCall(
            [result("c6")], FakeError(grpc.StatusCode.INTERNAL, "Received RST_STREAM with code 2")
        ),
        FakeCall([result("c7")], None),
    ]
    requests, open_call = scripted(calls)
    sleeps: list[float] = []
    stream = ResultStream(
        open_call,
        task_ids=["t"],
        after_cursor="c0",
        initial_backoff=timedelta(seconds=1),
        max_backoff=timedelta(seconds=1.5),
        sleep=sleeps.append,
    )
    assert [r.cursor for r in stream] == ["c1", "c2", "c5", "c6", "c7"]
    assert [r.after_cursor for r in requests] == ["c0", "c4", "c5", "c5", "c6"]
    assert all(list(r.task_ids) == ["t"] for r in requests)
    assert sleeps[0] == 0.25  # RetryInfo
    assert 0.5 <= sleeps[1] <= 1.0  # backoff 1s, jittered
    assert 0.75 <= sleeps[2] <= 1.5  # doubled, capped at 1.5s
    assert 0.5 <= sleeps[3] <= 1.0  # reset after a result
    assert stream.resumes == 4
    assert stream.cursor == "c7"


def test_data_loss_and_other_errors_are_raised() -> None:
    for code, exc in (
        (grpc.StatusCode.DATA_LOSS, DataLossError),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
    ):
        _, open_call = scripted([FakeCall([result("c1")], FakeError(code, "no"))])
        stream = ResultStream(open_call, sleep=lambda s: None)
        assert next(stream).cursor == "c1"
        with pytest.raises(exc):
            next(stream)
        assert stream.resumes == 0
        with pytest.raises(StopIteration):
            next(stream)


def test_gives_up_after_reconnect_timeout() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    calls = [FakeCall([], FakeError(grpc.StatusCode.UNAVAILABLE, "down")) for _ in range(100)]
    _, open_call = scripted(calls)
    stream = ResultStream(
        open_call,
        initial_backoff=timedelta(seconds=1),
        max_backoff=timedelta(seconds=2),
        reconnect_timeout=timedelta(seconds=10),
        sleep=sleep,
        clock=lambda: now[0],
    )
    with pytest.raises(UnavailableError):
        next(stream)
    assert 10 < now[0] <= 14
    assert stream.resumes >= 5


def test_cancel_stops_a_waiting_stream() -> None:
    calls = [FakeCall([], FakeError(grpc.StatusCode.UNAVAILABLE, "down")) for _ in range(3)]
    _, open_call = scripted(calls)
    stream = ResultStream(open_call, initial_backoff=timedelta(seconds=30))
    threading.Timer(0.3, stream.cancel).start()
    started = time.monotonic()
    assert list(stream) == []
    assert time.monotonic() - started < 5


# -- across a restart --------------------------------------------------------


def _redis_available() -> bool:
    import socket
    from urllib.parse import urlparse

    url = urlparse(REDIS_URL)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), 1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(
    not os.environ.get("CI") and not _redis_available(), reason=f"no Redis at {REDIS_URL}"
)
def test_results_resume_across_server_restarts(redis_prefix: str, http_target: str) -> None:
    args = ["--redis-url", REDIS_URL, "--key-prefix", redis_prefix, "--lease-secs", "1"]
    server = RecurServer(args).start()
    got: list[recur_pb2.TaskResult] = []
    errors: list[BaseException] = []
    try:
        client = server.client()
        tid = unique("restart")
        client.register(tid, every=timedelta(seconds=1), http_url=http_target, overlap="allow")
        stream = client.results([tid], max_backoff=timedelta(milliseconds=500))

        def read() -> None:
            try:
                for r in stream:
                    got.append(r)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def wait_for(count: int, timeout: float = 20) -> None:
            deadline = time.monotonic() + timeout
            while len(got) < count and time.monotonic() < deadline and not errors:
                time.sleep(0.05)
            assert not errors, errors
            assert len(got) >= count, f"{len(got)} results, server log:\n{server.logs()}"

        wait_for(2)
        # Graceful restart: the stream ends UNAVAILABLE with the resume
        # cursor trailer; the iterator waits for the new process.
        assert server.stop(signal.SIGTERM) == 0
        before_graceful = len(got)
        server.start()
        wait_for(before_graceful + 2)
        graceful_resumes = stream.resumes
        assert graceful_resumes >= 1
        # Killed: the connection just drops, no trailer; reconnecting fails
        # while the port is closed, then resumes from the last cursor.
        server.kill()
        before_kill = len(got)
        time.sleep(2)
        server.start()
        wait_for(before_kill + 2)
        assert stream.resumes > graceful_resumes
        stream.cancel()
        reader.join(5)
        assert not errors, errors

        # None duplicated, none missed: what the iterator yielded is exactly
        # the retained history from its first result to its last.
        cursors = [r.cursor for r in got]
        assert len(set(cursors)) == len(cursors), cursors
        history = [r.cursor for r in client.results([tid], history_only=True)]
        first = history.index(cursors[0])
        assert history[first : first + len(cursors)] == cursors
        runs = [r.run for r in got if r.run]
        assert len(set(runs)) == len(runs)
        client.cancel(tid)
        client.close()
    finally:
        server.stop()
        _cleanup_redis(redis_prefix)


def _cleanup_redis(prefix: str) -> None:
    """Removes the keys under this test's random prefix (nothing else)."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(REDIS_URL)

    def command(sock: socket.socket, *args: str) -> bytes:
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        sock.sendall(payload.encode())
        return sock.recv(1 << 20)

    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), 2) as s:
            reply = command(s, "EVAL", _UNLINK_PREFIX, "0", prefix + "*")
            assert not reply.startswith(b"-"), reply
    except OSError:
        pass


_UNLINK_PREFIX = """
local cursor = "0"
repeat
  local r = redis.call("SCAN", cursor, "MATCH", ARGV[1], "COUNT", 1000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do redis.call("UNLINK", k) end
until cursor == "0"
return 0
"""
