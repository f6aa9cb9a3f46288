#!/usr/bin/env bash
# Start LocalStack (SQS only) in the background, without Docker, bound to
# loopback. Idempotent: if it is already running and healthy, just prints the
# endpoint URL.
#
#   LOCALSTACK_HOST           bind address (default 127.0.0.1; loopback only)
#   LOCALSTACK_PORT           bind port (default 4566)
#   LOCALSTACK_STATE          pidfile, log and LocalStack's files
#                             (default $HOME/.cache/jobs-localstack)
#   LOCALSTACK_VENV           venv (default $LOCALSTACK_STATE/venv)
#   LOCALSTACK_START_TIMEOUT  seconds to wait for health (default 120)
#   LOCALSTACK_LOG_REQUESTS   1 = log every AWS request (default: off, it
#                             slows benchmarks and grows the log quickly)
#   SQS_ENDPOINT_STRATEGY     queue URL style (default off:
#                             http://127.0.0.1:4566/000000000000/<queue>)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${LOCALSTACK_STATE:-$HOME/.cache/jobs-localstack}"
export LOCALSTACK_VENV="${LOCALSTACK_VENV:-$STATE/venv}"
HOST="${LOCALSTACK_HOST:-127.0.0.1}"
PORT="${LOCALSTACK_PORT:-4566}"
TIMEOUT="${LOCALSTACK_START_TIMEOUT:-120}"
PIDFILE="$STATE/localstack.pid"
LOGFILE="$STATE/localstack.log"
PY="$LOCALSTACK_VENV/bin/python"

# LOCALSTACK_HOST may be given as host:port by habit; keep only the host part.
case "$HOST" in
  \[*\]:*) HOST="${HOST%:*}" ;;
  *:*:*) ;;  # bare IPv6
  *:*) HOST="${HOST%%:*}" ;;
esac
case "$HOST" in
  127.*|localhost|::1|\[::1\]) ;;
  *) echo "localstack: refusing to bind to '$HOST': loopback addresses only" >&2; exit 2 ;;
esac
case "$HOST" in
  *:*) URL_HOST="[${HOST#[}"; URL_HOST="${URL_HOST%]}]" ;;
  *) URL_HOST="$HOST" ;;
esac
URL="http://$URL_HOST:$PORT"

mkdir -p "$STATE"

# Is the pid in the pidfile a live LocalStack runtime (guards against pid reuse)?
our_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -Eq "localstack\.runtime\.main|run_localstack\.py" || return 1
  echo "$pid"
}

# Exit 0 when the health endpoint reports sqs available/running.
healthy() {
  local body
  body="$(curl -fsS --max-time 3 "$URL/_localstack/health" 2>/dev/null)" || return 1
  printf '%s' "$body" | python3 -c '
import json, sys
try:
    state = json.load(sys.stdin).get("services", {}).get("sqs")
except ValueError:
    sys.exit(1)
sys.exit(0 if state in ("available", "running") else 1)
'
}

if pid="$(our_pid)"; then
  if healthy; then
    echo "localstack: already running (pid $pid)"
    echo "$URL"
    exit 0
  fi
  echo "localstack: pid $pid is running but not healthy yet; waiting" >&2
else
  rm -f "$PIDFILE"
  if healthy; then
    echo "localstack: something not started by this script already serves SQS at $URL" >&2
    echo "$URL"
    exit 0
  fi
  if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then
    echo "localstack: $HOST:$PORT is already in use by another process" >&2
    exit 1
  fi

  "$HERE/install.sh"

  # plux caches the entry-point index; a stale one (from another install or
  # version) makes LocalStack miss its own plugins.
  rm -rf "${XDG_CACHE_HOME:-$HOME/.cache}/plux"

  [ -f "$LOGFILE" ] && mv -f "$LOGFILE" "$LOGFILE.1"
  log_overrides="${LOG_LEVEL_OVERRIDES:-}"
  if [ "${LOCALSTACK_LOG_REQUESTS:-0}" != "1" ]; then
    log_overrides="localstack.request.aws=WARNING,localstack.request.http=WARNING${log_overrides:+,$log_overrides}"
  fi

  # Everything local: gateway on loopback only, no DNS server (it would bind
  # 0.0.0.0:53), no analytics/events, no TLS certificate download, no
  # persistence. OVERRIDE_IN_DOCKER=0 keeps LocalStack's files under
  # $STATE/filesystem even when this machine itself is a container.
  cd "$STATE"
  env \
    GATEWAY_LISTEN="$URL_HOST:$PORT" \
    LOCALSTACK_HOST="$URL_HOST:$PORT" \
    SERVICES=sqs \
    STRICT_SERVICE_LOADING=1 \
    EAGER_SERVICE_LOADING=1 \
    DNS_ADDRESS=0 \
    DISABLE_EVENTS=1 \
    ANALYTICS_API=http://127.0.0.1:9/ \
    API_ENDPOINT=http://127.0.0.1:9/ \
    SKIP_SSL_CERT_DOWNLOAD=1 \
    PERSISTENCE=0 \
    OVERRIDE_IN_DOCKER=0 \
    FILESYSTEM_ROOT="$STATE/filesystem" \
    CONFIG_DIR="$STATE/config" \
    SQS_ENDPOINT_STRATEGY="${SQS_ENDPOINT_STRATEGY:-off}" \
    SQS_DISABLE_CLOUDWATCH_METRICS=1 \
    LOG_LEVEL_OVERRIDES="$log_overrides" \
    setsid "$PY" "$HERE/run_localstack.py" </dev/null >>"$LOGFILE" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"
  echo "localstack: started pid $pid, log $LOGFILE"
fi

deadline=$((SECONDS + TIMEOUT))
until healthy; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "localstack: process $pid exited before becoming healthy; log tail:" >&2
    tail -n 40 "$LOGFILE" >&2 || true
    rm -f "$PIDFILE"
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "localstack: not healthy after ${TIMEOUT}s; stopping pid $pid; log tail:" >&2
    tail -n 40 "$LOGFILE" >&2 || true
    "$HERE/stop.sh" >&2 || true
    exit 1
  fi
  sleep 1
done
# Belt and braces: nothing of ours may listen beyond loopback.
if command -v ss >/dev/null 2>&1; then
  if ss -Hltnup 2>/dev/null | grep "pid=$pid," | awk '{print $5}' \
      | grep -Ev '^(127\.[0-9.]+|\[::1\]|\[::ffff:127\.[0-9.]+\]):[0-9]+$' >&2; then
    echo "localstack: pid $pid listens on a non-loopback address (above); stopping it" >&2
    "$HERE/stop.sh" >&2 || true
    exit 1
  fi
fi
echo "localstack: healthy (sqs) after $((SECONDS))s"
echo "$URL"
