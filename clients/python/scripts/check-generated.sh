#!/usr/bin/env bash
# Fails (exit 1) when the committed stubs in src/recur_client/_gen differ
# from what scripts/generate.sh makes from the protos now.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$here/scripts/generate.sh" "$tmp/_gen" >/dev/null
if ! diff -r -u -x __pycache__ "$here/src/recur_client/_gen" "$tmp/_gen"; then
  echo "check-generated: src/recur_client/_gen is out of date; run clients/python/scripts/generate.sh" >&2
  exit 1
fi
echo "check-generated: stubs are up to date"
