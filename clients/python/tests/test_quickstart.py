"""examples/quickstart.py runs as written against the test server."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from conftest import RecurServer

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def test_quickstart_runs(server: RecurServer, http_target: str) -> None:
    env = dict(os.environ, RECUR_SERVER=server.address, RECUR_TARGET_URL=http_target)
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("quickstart every 1s next at ")
    assert "OUTCOME_SUCCEEDED HTTP 200" in lines[-1]
    assert lines[-1].startswith("run 3:") or int(lines[-1].split()[1].rstrip(":")) >= 3
