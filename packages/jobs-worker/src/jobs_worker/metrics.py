"""Prometheus metrics of one worker process, served on the health port (JOBS_HEALTH_PORT) at
GET /metrics. `WorkerMetrics` holds a registry of its own (several workers in one process, as
in the tests, never share counters); the CLI makes one and hands it to the Worker.

Labels are bounded: use cases come from the configuration and job types from the registry (a
message of a type this worker has no handler for counts as "unknown"); no job ids, no tenants.
A worker is one process, so there is no multiprocess mode here."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from jobs_worker.execution import Failed, Interrupted, Outcome

__all__ = ["CONTENT_TYPE", "WorkerMetrics", "outcome_label", "stats_text"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _Observed(Protocol):
    """What the worker's own counters are read from at scrape time (a Worker)."""

    @property
    def stats(self) -> object: ...

    @property
    def running(self) -> int: ...

    @property
    def free_slots(self) -> int: ...


def outcome_label(outcome: Outcome) -> str:
    """succeeded, retry (the handler asked), timeout, crashed (its process died), interrupted
    (given back, not its fault), failed (retryable) or permanent."""
    if isinstance(outcome, Interrupted):
        return "interrupted"
    if not isinstance(outcome, Failed):
        return "succeeded"
    failure = outcome.failure
    if failure.type in ("Retry", "Timeout"):
        return failure.type.lower()
    if failure.type == "WorkerCrashed":
        return "crashed"
    return "failed" if failure.retryable else "permanent"


class _StatsCollector(Collector):
    """WorkerStats as counters, running and free slots as gauges, read when scraped."""

    def __init__(self, worker: _Observed) -> None:
        self._worker = worker

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for name, value in vars(self._worker.stats).items():
            yield CounterMetricFamily(f"jobs_worker_{name}", f"Worker count of {name}.", value)
        yield GaugeMetricFamily(
            "jobs_worker_running", "Attempts in this worker.", self._worker.running
        )
        yield GaugeMetricFamily(
            "jobs_worker_free_slots", "Handler slots free.", self._worker.free_slots
        )


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.handler_duration = Histogram(
            "jobs_worker_handler_duration_seconds",
            "Time a handler ran (validation included), by use case and job type.",
            ["use_case", "job_type"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.handler_outcomes = Counter(
            "jobs_worker_handler_outcomes",
            "Handler runs by outcome: succeeded, retry, timeout, failed, permanent.",
            ["use_case", "job_type", "outcome"],
            registry=r,
        )
        self.start_lag = Histogram(
            "jobs_worker_start_lag_seconds",
            "From enqueue to the handler's start, first attempts only.",
            ["use_case"],
            buckets=_LAG_BUCKETS,
            registry=r,
        )

    def watch(self, worker: _Observed) -> None:
        """Export `worker`'s own counters and gauges too."""
        self.registry.register(_StatsCollector(worker))

    def observe_start(
        self, use_case: str, attempt: int, enqueued_at: datetime | None, now: datetime
    ) -> None:
        # a retry's wait is its backoff, not lag: first attempts only
        if enqueued_at is not None and attempt == 1:
            self.start_lag.labels(use_case).observe(max(0.0, (now - enqueued_at).total_seconds()))

    def observe_handler(self, use_case: str, job_type: str, outcome: str, seconds: float) -> None:
        self.handler_duration.labels(use_case, job_type).observe(seconds)
        self.handler_outcomes.labels(use_case, job_type, outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def stats_text(worker: _Observed) -> bytes:
    """The worker's own counters alone (metrics off: JOBS_METRICS_ENABLED=false)."""
    registry = CollectorRegistry()
    registry.register(_StatsCollector(worker))
    return generate_latest(registry)
