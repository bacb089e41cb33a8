#!/usr/bin/env bash
# CI entry for the TypeScript client: install the pinned packages, check that
# src/gen matches the protos, build, and run the tests against the built
# server binary. Needs Node.js 20+ with npm, and the binary at
# ../../target/debug/recur (or RECUR_BIN). The Redis restart test runs when
# a Redis answers at REDIS_URL (default redis://127.0.0.1:6379), else it is
# skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

node -e 'const [major] = process.versions.node.split(".").map(Number);
  if (major < 20) { console.error(`Node.js ${process.versions.node}: 20 or later is needed`); process.exit(1); }'

if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi
npm run check-generated
npm test
