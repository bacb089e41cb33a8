"""Fixtures: the recur binary as a server, and a local HTTP target for tasks."""

from __future__ import annotations

import http.server
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence

import pytest

from recur_client import Client

REPO = pathlib.Path(__file__).resolve().parents[3]
REDIS_URL = os.environ.get("RECUR_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def recur_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("RECUR_BIN", REPO / "target" / "debug" / "recur"))
    if not path.is_file():
        pytest.fail(f"recur binary not found at {path}: build it (cargo build) or set RECUR_BIN")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class RecurServer:
    """One `recur serve` process on a fixed port; can be stopped and started
    again on the same port (with the same flags)."""

    def __init__(self, args: Sequence[str] = (), port: int | None = None) -> None:
        self.port = port or free_port()
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="recur-", suffix=".log", delete=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> RecurServer:
        cmd = [str(recur_bin()), "serve", "--listen", self.address, "--shutdown-grace-secs", "1"]
        cmd += self.args
        env = dict(os.environ, NO_COLOR="1", RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"recur exited with {self.proc.returncode} at start:\n{self.logs()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"recur did not accept on {self.address} in {timeout}s:\n{self.logs()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Sends `sig` (SIGTERM: graceful shutdown) and waits for the exit."""
        proc = self.proc
        if proc is None:
            return 0
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"recur did not stop in {timeout}s:\n{self.logs()}") from None
        return proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def logs(self) -> str:
        self.log.flush()
        return pathlib.Path(self.log.name).read_text(errors="replace")[-4000:]

    def client(self, **kwargs: object) -> Client:
        return Client(self.address, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def server() -> Iterator[RecurServer]:
    """A memory-store server shared by the tests (unique task ids each)."""
    s = RecurServer().start()
    yield s
    assert s.stop() == 0, s.logs()


@pytest.fixture
def client(server: RecurServer) -> Iterator[Client]:
    with server.client() as c:
        yield c


@pytest.fixture
def start_server() -> Iterator[object]:
    """Starts servers with extra flags; stops them at the end of the test."""
    started: list[RecurServer] = []

    def start(args: Sequence[str] = (), port: int | None = None) -> RecurServer:
        s = RecurServer(args, port)
        started.append(s)
        return s.start()

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A random key prefix, so tests never see (or touch) other keys."""
    return f"recur-pytest-{uuid.uuid4().hex[:12]}:"


class _Handler(http.server.BaseHTTPRequestHandler):
    hits = 0
    lock = threading.Lock()

    def _answer(self) -> None:
        with _Handler.lock:
            _Handler.hits += 1
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def http_target() -> Iterator[str]:
    """URL of a local HTTP server that answers 200 to everything."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


def collect(stream: Iterator[object], count: int, timeout: float = 20.0) -> list[object]:
    """Reads `count` items from a stream (ResultStream/EventStream) within
    `timeout`, then cancels it; fails the test if they do not come."""
    items: list[object] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for item in stream:
                items.append(item)
                if len(items) >= count:
                    return
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            errors.append(e)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout)
    stream.cancel()  # type: ignore[attr-defined]
    thread.join(5)
    if errors:
        raise errors[0]
    if len(items) < count:
        pytest.fail(f"got {len(items)} of {count} stream items in {timeout}s: {items}")
    return items


class Reader:
    """Reads a stream in a thread: open it before causing what it should see."""

    def __init__(self, stream: Iterator[object], count: int, timeout: float = 20.0) -> None:
        self.items: list[object] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(stream, count, timeout), daemon=True
        )
        self._thread.start()
        time.sleep(0.5)  # let the call reach the server

    def _run(self, stream: Iterator[object], count: int, timeout: float) -> None:
        try:
            self.items = collect(stream, count, timeout)
        except BaseException as e:  # noqa: BLE001 - re-raised by wait()
            self.error = e

    def wait(self) -> list[object]:
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.items
