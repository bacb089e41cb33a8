"""Server-streaming calls: WatchTasks, and StreamResults with resumption."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any, Generic, TypeVar

import grpc

from recur_client._errors import RecurError, error_from_rpc
from recur_client._gen.recur.v1 import recur_pb2

__all__ = ["EventStream", "ResultStream", "is_resumable"]

T = TypeVar("T")

# Messages grpc gives an INTERNAL/UNKNOWN status when the connection under
# a stream went away rather than the server answering with that code.
_DROPPED_HINTS = ("rst_stream", "stream removed", "goaway", "socket closed", "connection reset")


def is_resumable(error: RecurError) -> bool:
    """Whether a result stream that ended with ``error`` should be reopened.

    RESOURCE_EXHAUSTED (the reader fell behind, or a stream quota),
    UNAVAILABLE (shutdown, restart, unreachable server) and a dropped
    connection (which grpc may report as INTERNAL or UNKNOWN) are.
    """
    if error.code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
        return True
    if error.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        text = error.message.lower()
        return any(hint in text for hint in _DROPPED_HINTS)
    return False


class _Stream(Generic[T]):
    """An iterator over a server stream that can be cancelled from any thread.

    Use it as a context manager (or call :meth:`cancel`) to end the call
    early; iteration then stops without an error. Errors from the server are
    raised as :class:`~recur_client.RecurError`.
    """

    def __init__(self) -> None:
        self._call: Any = None
        self._cancelled = threading.Event()
        self._lock = threading.Lock()

    def __iter__(self) -> _Stream[T]:
        return self

    def __next__(self) -> T:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> _Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Ends the stream: a blocked ``next()`` returns StopIteration."""
        self._cancelled.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()

    def _set_call(self, call: Any) -> None:
        with self._lock:
            self._call = call
        if self._cancelled.is_set() and call is not None:
            call.cancel()


class EventStream(_Stream[recur_pb2.TaskEvent]):
    """The events of WatchTasks: EXISTING ... SYNCED, then one per change."""

    def __init__(self, call: Any) -> None:
        super().__init__()
        self._set_call(call)

    def __next__(self) -> recur_pb2.TaskEvent:
        if self._call is None or self._cancelled.is_set():
            raise StopIteration
        try:
            event: recur_pb2.TaskEvent = next(self._call)
            return event
        except grpc.RpcError as e:
            if self._cancelled.is_set():
                raise StopIteration from None
            raise error_from_rpc(e) from None


class ResultStream(_Stream[recur_pb2.TaskResult]):
    """Results of StreamResults, resumed across interruptions.

    Tracks the cursor of the last result it yielded (:attr:`cursor`). When
    the stream ends with RESOURCE_EXHAUSTED, UNAVAILABLE or a dropped
    connection, it reopens StreamResults after the ``recur-resume-cursor``
    trailer if the server sent one, else after the last cursor, so results
    are neither repeated nor missed. Between attempts it waits for the
    google.rpc.RetryInfo delay when the error carries one, else an
    exponential backoff (``initial_backoff`` doubling up to
    ``max_backoff``, with jitter). It gives up, raising the last error, when
    reconnecting has failed for ``reconnect_timeout`` without a result in
    between. DATA_LOSS (the cursor is older than what the server retains)
    and every other error are raised at once. A stream that ends with OK
    (``history_only``, or every named task ended) stops the iteration.

    Without ``after_cursor`` the first stream shows live results only; a
    reconnect before the first result then has no cursor to resume from,
    unless the server sent one in the trailer (as it does at shutdown).
    """

    def __init__(
        self,
        open_call: Callable[[recur_pb2.StreamResultsRequest], Any],
        *,
        task_ids: Sequence[str] = (),
        after_cursor: str = "",
        history_only: bool = False,
        initial_backoff: timedelta = timedelta(milliseconds=100),
        max_backoff: timedelta = timedelta(seconds=5),
        reconnect_timeout: timedelta | None = timedelta(seconds=60),
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._open = open_call
        self._task_ids = list(task_ids)
        self._history_only = history_only
        self.cursor: str = after_cursor
        """Cursor of the last result yielded (or where the stream resumes)."""
        self.resumes: int = 0
        """How many times the stream was reopened."""
        self.last_error: RecurError | None = None
        """The last error that the stream resumed after."""
        self._initial = initial_backoff.total_seconds()
        self._max = max_backoff.total_seconds()
        self._budget = None if reconnect_timeout is None else reconnect_timeout.total_seconds()
        self._sleep = sleep
        self._clock = clock
        self._failing_since: float | None = None
        self._attempt = 0
        self._done = False

    def _request(self) -> recur_pb2.StreamResultsRequest:
        return recur_pb2.StreamResultsRequest(
            task_ids=self._task_ids, after_cursor=self.cursor, history_only=self._history_only
        )

    def _wait(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            self._cancelled.wait(seconds)

    def __next__(self) -> recur_pb2.TaskResult:
        while True:
            if self._done or self._cancelled.is_set():
                self._done = True
                raise StopIteration
            if self._call is None:
                self._set_call(self._open(self._request()))
            try:
                result: recur_pb2.TaskResult = next(self._call)
            except StopIteration:
                self._done = True
                raise
            except grpc.RpcError as e:
                self._set_call(None)
                if self._cancelled.is_set():
                    self._done = True
                    raise StopIteration from None
                err = error_from_rpc(e)
                if not is_resumable(err):
                    self._done = True
                    raise err from None
                now = self._clock()
                if self._failing_since is None:
                    self._failing_since = now
                elif self._budget is not None and now - self._failing_since > self._budget:
                    self._done = True
                    raise err from None
                if err.resume_cursor:
                    self.cursor = err.resume_cursor
                self.last_error = err
                if err.retry_delay is not None:
                    delay = err.retry_delay.total_seconds()
                else:
                    delay = min(self._max, self._initial * (2**self._attempt))
                    delay *= random.uniform(0.5, 1.0)
                self._attempt += 1
                self.resumes += 1
                self._wait(delay)
                continue
            self.cursor = result.cursor or self.cursor
            self._failing_since = None
            self._attempt = 0
            return result
