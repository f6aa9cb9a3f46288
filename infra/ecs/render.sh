#!/usr/bin/env bash
# Fill in the ${PLACEHOLDERS} of one of this directory's JSON files and print the result.
#
#   infra/ecs/render.sh infra/ecs/server.json > /tmp/jobs-server.json
#   aws ecs register-task-definition --cli-input-json file:///tmp/jobs-server.json
#
# Only the placeholders below are replaced (anything else with a $ is left alone), and every
# one the file uses must be set: a task definition with an empty image or ARN is refused here,
# not at deploy time.
set -euo pipefail

KNOWN=(
  AWS_REGION          # e.g. eu-west-1
  AWS_ACCOUNT_ID      # 12 digits
  SERVER_IMAGE        # e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/jobs-server:0.1.0
  WORKER_IMAGE        # your image FROM jobs-worker, with your handlers
  JOBS_SECRET_ARN     # full ARN of the Secrets Manager secret (JSON keys: see infra/README.md)
  JOBS_SERVER_URL     # how workers reach the API, e.g. http://jobs-server.internal:8000
  ECS_CLUSTER         # worker-autoscaling.json: the cluster ...
  WORKER_SERVICE      # ... and the worker service it scales
  CLOUDWATCH_AGENT_IMAGE  # cloudwatch/scheduler-sidecar.json: a pinned tag of
                          # public.ecr.aws/cloudwatch-agent/cloudwatch-agent
)

if [ $# -ne 1 ] || [ ! -f "$1" ]; then
  echo "usage: $0 FILE.json" >&2
  exit 2
fi

used=$(grep -oE '\$\{[A-Za-z_][A-Za-z0-9_]*\}' "$1" | sort -u | tr -d '${}' || true)
shell_format=""
for name in $used; do
  found=0
  for known in "${KNOWN[@]}"; do [ "$name" = "$known" ] && found=1; done
  if [ "$found" = 0 ]; then
    echo "render.sh: $1 uses \${$name}, which is not one of: ${KNOWN[*]}" >&2
    exit 2
  fi
  if [ -z "${!name:-}" ]; then
    echo "render.sh: $1 needs $name; set it in the environment" >&2
    exit 2
  fi
  shell_format="$shell_format \${$name}"
done
envsubst "$shell_format" < "$1"
