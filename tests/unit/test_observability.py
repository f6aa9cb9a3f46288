"""Pure parts of metrics and logs: label rules, the queue-depth gauges, the log formatters."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from prometheus_client.parser import text_string_to_metric_families

from jobs_schema import FailureInfo, Job, JobStatus
from jobs_server.logs import JsonFormatter, TextFormatter
from jobs_server.metrics import ServerMetrics
from jobs_server.store.base import EnqueueOutcome, EnqueueResult, QueueDepth, QueueSnapshot
from jobs_worker.execution import Failed, Succeeded
from jobs_worker.metrics import outcome_label

NOW = datetime(2025, 1, 7, 12, 0, tzinfo=UTC)


def samples(metrics: ServerMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.render().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def created() -> EnqueueResult:
    job = Job(
        id=uuid4(),
        tenant="t",
        use_case="uc",
        job_type="x",
        payload={},
        status=JobStatus.PENDING,
        priority=0,
        run_at=NOW,
        deadline=NOW,
        attempts=0,
        max_attempts=1,
        created_at=NOW,
        updated_at=NOW,
    )
    return EnqueueResult(EnqueueOutcome.CREATED, job)


def test_no_tenant_label_unless_tenants_are_listed():
    plain = ServerMetrics()
    plain.observe_enqueue("acme", ["uc"], [created()])
    assert samples(plain)[key("jobs_enqueued_total", use_case="uc")] == 1

    labelled = ServerMetrics(tenant_labels=["acme"])
    refused = EnqueueResult(EnqueueOutcome.QUOTA_EXCEEDED, None)
    labelled.observe_enqueue("acme", ["uc", "uc"], [created(), created()])
    labelled.observe_enqueue("zeta", ["uc", "uc"], [created(), refused])
    got = samples(labelled)
    assert got[key("jobs_enqueued_total", use_case="uc", tenant="acme")] == 2
    assert got[key("jobs_enqueued_total", use_case="uc", tenant="other")] == 1
    assert got[key("jobs_quota_refused_total", use_case="uc", tenant="other")] == 1


def test_queue_depth_gauges_fill_zeros_and_vanish_on_standby():
    m = ServerMetrics()
    rows = [
        QueueDepth("a", "", pending=5, due=3, running=2, oldest_due_run_at=NOW - timedelta(9)),
        QueueDepth("a", "", pending=1, due=1, running=0, oldest_due_run_at=NOW - timedelta(30)),
    ]
    m.set_queue_depth(["a", "b"], QueueSnapshot(NOW, rows))
    got = samples(m)
    assert got[key("jobs_queue_depth", use_case="a", status="pending")] == 6
    assert got[key("jobs_queue_depth", use_case="a", status="running")] == 2
    assert got[key("jobs_queue_due", use_case="a")] == 4
    assert got[key("jobs_oldest_due_job_age_seconds", use_case="a")] == 30 * 86_400
    assert got[key("jobs_queue_depth", use_case="b", status="pending")] == 0
    assert got[key("jobs_oldest_due_job_age_seconds", use_case="b")] == 0

    m.set_queue_depth(["a", "b"], QueueSnapshot(NOW, []))  # all done: zeros, not gaps
    assert samples(m)[key("jobs_queue_depth", use_case="a", status="pending")] == 0

    m.set_leader(False)
    names = {n for n, _ in samples(m)}
    assert "jobs_queue_depth" not in names and "jobs_oldest_due_job_age_seconds" not in names


def test_outcomes_by_result():
    m = ServerMetrics()
    m.observe_outcomes(
        [JobStatus.SUCCEEDED, JobStatus.PENDING, JobStatus.DEAD, JobStatus.CANCELLED, None]
    )
    got = samples(m)
    for result in ("succeeded", "retried", "dead", "cancelled", "stale"):
        assert got[key("jobs_outcomes_total", result=result)] == 1


def test_worker_outcome_labels():
    def failed(type_: str, retryable: bool = True) -> Failed:
        return Failed(FailureInfo(type=type_, message="m", retryable=retryable))

    assert outcome_label(Succeeded(None)) == "succeeded"
    assert outcome_label(failed("Retry")) == "retry"
    assert outcome_label(failed("Timeout")) == "timeout"
    assert outcome_label(failed("ValueError")) == "failed"
    assert outcome_label(failed("InvalidPayload", retryable=False)) == "permanent"


def record(**extra: object) -> logging.LogRecord:
    rec = logging.makeLogRecord({"name": "jobs", "levelname": "INFO", "msg": "job ran"})
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_every_extra_field():
    line = JsonFormatter().format(record(job_id="j1", tenant="acme", attempt=2, at=NOW))
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "job ran" and data["level"] == "INFO" and data["logger"] == "jobs"
    assert data["job_id"] == "j1" and data["tenant"] == "acme" and data["attempt"] == 2
    assert data["at"] == str(NOW)
    datetime.fromisoformat(data["time"])


def test_text_lines_are_readable():
    line = TextFormatter().format(record(job_id="j1", attempt=2))
    assert line.endswith("INFO jobs: job ran job_id=j1 attempt=2")
