#!/usr/bin/env bash
# CI entry point of the Python client: makes the venv if missing, installs
# the package with its dev extra, checks the committed stubs against the
# protos, type-checks, then runs pytest against the built server binary.
#
#   clients/python/scripts/test.sh [PYTEST ARGS...]
#
# Needs python3 (3.10+), PyPI, the binary at target/debug/recur (or
# RECUR_BIN) and, for the restart test, Redis at 127.0.0.1:6379 (or
# RECUR_TEST_REDIS_URL; without CI set, the test is skipped when none answers).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

python="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  echo "== creating $here/.venv"
  "$python" -m venv .venv
fi
echo "== pip install -e '.[dev]'"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

echo "== check-generated"
PYTHON="$here/.venv/bin/python" scripts/check-generated.sh

echo "== mypy --strict"
.venv/bin/python -m mypy

echo "== pytest"
.venv/bin/python -m pytest "$@"
