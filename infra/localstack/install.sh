#!/usr/bin/env bash
# Install LocalStack (SQS only, no Docker) into its own virtualenv, outside the
# uv workspace and its lock. Idempotent: does nothing when the venv already has
# exactly the pinned versions.
#
#   LOCALSTACK_VENV   venv path   (default: $HOME/.cache/jobs-localstack/venv)
#   LOCALSTACK_PYTHON interpreter for the venv (default: 3.11)
set -euo pipefail

VENV="${LOCALSTACK_VENV:-$HOME/.cache/jobs-localstack/venv}"
PYTHON_REQ="${LOCALSTACK_PYTHON:-3.11}"

# A set known to work together on Python 3.11; the crypto/cbor pins hold back
# versions newer than this LocalStack release was tested with. psutil 7.2
# removed psutil._common.snicaddr, which localstack.dns.server imports (the
# DNS server is disabled by start.sh, but the failed import spams the log).
# Change these only together, and re-run check_sqs.py after.
PINS=(
  "localstack-core[runtime]==4.9.2"
  "cbor2==5.6.5"
  "pyopenssl==24.2.1"
  "cryptography==43.0.3"
  "service_identity==24.2.0"
  "psutil==7.1.3"
)

PY="$VENV/bin/python"

# Prints nothing and exits 0 when every pin is installed at its version.
check_pins() {
  [ -x "$PY" ] || return 1
  "$PY" - "${PINS[@]}" <<'PYEOF'
import sys
from importlib import metadata

bad = []
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    name = name.split("[", 1)[0]
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have != want:
        bad.append(f"{name}: have {have}, want {want}")
if bad:
    print("\n".join(bad))
    sys.exit(1)
PYEOF
}

if out="$(check_pins 2>&1)"; then
  echo "localstack: already installed in $VENV"
  exit 0
fi
[ -x "$PY" ] && printf 'localstack: venv needs update:\n%s\n' "$out"

mkdir -p "$(dirname "$VENV")"
# Run uv from outside the repo so it never picks up the workspace's
# pyproject/uv.lock; `uv pip install --python` only touches this venv.
cd "$(dirname "$VENV")"

if [ ! -x "$PY" ]; then
  echo "localstack: creating venv $VENV (python $PYTHON_REQ)"
  if command -v uv >/dev/null 2>&1; then
    uv venv --python "$PYTHON_REQ" "$VENV"
  else
    "python$PYTHON_REQ" -m venv "$VENV"
  fi
fi

echo "localstack: installing ${PINS[*]}"
if command -v uv >/dev/null 2>&1; then
  uv pip install --python "$PY" "${PINS[@]}"
else
  "$PY" -m pip install --upgrade pip
  "$PY" -m pip install "${PINS[@]}"
fi

if ! out="$(check_pins 2>&1)"; then
  printf 'localstack: install finished but pins do not match:\n%s\n' "$out" >&2
  exit 1
fi
echo "localstack: installed in $VENV"
