"""Create the compose stack's SQS queues in LocalStack, with localstack-client.

    python bootstrap_queues.py /etc/jobs/jobs.toml

For each use case of the config file (the one the server, scheduler and workers read): a
dead-letter queue `<queue>-dlq` (14 days retention) and the queue itself with a redrive policy
to it (maxReceiveCount 5), 20 s long polling (ReceiveMessageWaitTimeSeconds) and a visibility
timeout equal to the use case's lease (`lease_seconds`, else `timeout_seconds` + 30). These are
the attributes `jobs-server queues create` sets, so either can run after the other. Idempotent.

Runs in a plain python image (`pip install localstack-client boto3`); LocalStack's address
comes from LOCALSTACK_HOST (host:port, default localhost:4566).
"""

from __future__ import annotations

import json
import math
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DLQ_SUFFIX = "-dlq"
DLQ_RETENTION_SECONDS = 14 * 86_400
MAX_RECEIVE_COUNT = 5
LONG_POLL_SECONDS = 20
DEFAULT_TIMEOUT_SECONDS = 60.0  # UseCaseConfig.timeout_seconds' default
LEASE_MARGIN_SECONDS = 30.0  # lease = timeout + 30 s unless lease_seconds is set


@dataclass(frozen=True)
class QueuePlan:
    use_case: str
    queue: str
    dlq: str
    visibility_timeout_seconds: int


def plan(config: dict[str, Any]) -> list[QueuePlan]:
    """The queues to create for a parsed config file, one QueuePlan per use case."""
    out = []
    for name, uc in config.get("use_cases", {}).items():
        queue = str(uc["queue"]).rstrip("/").rsplit("/", 1)[-1]  # a name or a URL
        lease = uc.get("lease_seconds")
        if lease is None:
            lease = float(uc.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)) + LEASE_MARGIN_SECONDS
        # half a lease longer than the lease, at most 12 h (UseCaseConfig.queue_visibility_seconds)
        visibility = min(43_200, math.ceil(1.5 * lease))
        out.append(QueuePlan(name, queue, queue + DLQ_SUFFIX, visibility))
    return out


def _create(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    try:
        url: str = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except Exception as exc:  # botocore's ClientError; botocore is not imported at module level
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if "QueueAlreadyExists" not in code and "QueueNameExists" not in code:
            raise
        # it exists with other attributes: update them
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def create(sqs: Any, queues: list[QueuePlan]) -> None:
    for q in queues:
        dlq_url = _create(sqs, q.dlq, {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)})
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
        redrive = {
            "deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"],
            "maxReceiveCount": str(MAX_RECEIVE_COUNT),
        }
        url = _create(
            sqs,
            q.queue,
            {
                "VisibilityTimeout": str(q.visibility_timeout_seconds),
                "ReceiveMessageWaitTimeSeconds": str(LONG_POLL_SECONDS),
                "RedrivePolicy": json.dumps(redrive),
            },
        )
        print(f"{q.use_case}: {url} (dead letters: {dlq_url})", flush=True)


def _connect(timeout: float = 60.0) -> Any:
    import localstack_client.session  # only here: plan() is importable without it

    sqs = localstack_client.session.Session().client("sqs")
    deadline = time.monotonic() + timeout
    while True:
        try:
            sqs.list_queues()
            return sqs
        except Exception as exc:  # LocalStack still starting
            if time.monotonic() > deadline:
                message = f"LocalStack's SQS did not answer within {timeout:.0f} s: {exc}"
                raise SystemExit(message) from exc
            time.sleep(1)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: bootstrap_queues.py CONFIG.toml")
    queues = plan(tomllib.loads(Path(argv[0]).read_text()))
    if not queues:
        raise SystemExit(f"{argv[0]} defines no use cases")
    create(_connect(), queues)


if __name__ == "__main__":
    main(sys.argv[1:])
