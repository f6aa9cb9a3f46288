#!/usr/bin/env bash
# Stop the LocalStack started by start.sh, using its pidfile.
#
#   LOCALSTACK_STATE  where start.sh keeps the pidfile (default $HOME/.cache/jobs-localstack)
set -euo pipefail

STATE="${LOCALSTACK_STATE:-$HOME/.cache/jobs-localstack}"
PIDFILE="$STATE/localstack.pid"

if [ ! -f "$PIDFILE" ]; then
  echo "localstack: not running (no pidfile at $PIDFILE)"
  exit 0
fi
pid="$(cat "$PIDFILE" 2>/dev/null || true)"
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
  echo "localstack: not running (stale pidfile removed)"
  rm -f "$PIDFILE"
  exit 0
fi
if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -Eq "localstack\.runtime\.main|run_localstack\.py"; then
  echo "localstack: pid $pid is not LocalStack; removing stale pidfile, not killing it" >&2
  rm -f "$PIDFILE"
  exit 0
fi

kill -TERM "$pid"
for _ in $(seq 1 30); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 1
done
if kill -0 "$pid" 2>/dev/null; then
  echo "localstack: pid $pid did not exit after 30s; sending SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
fi
rm -f "$PIDFILE"
echo "localstack: stopped (pid $pid)"
