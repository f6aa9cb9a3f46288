"""Prometheus metrics of one jobs-server process.

`ServerMetrics` holds a registry of its own (several servers in one process, as in the tests,
never share counters); `create_app` or the CLI makes one and hands it to the service, the
outcome service, the scheduler and the publisher, and the API serves it on GET /metrics.

No label takes unbounded values: use cases and job types come from the configuration, job ids
never appear, and a `tenant` label exists only when JOBS_METRICS_TENANT_LABELS lists tenants
(every other tenant is counted as "other"). With PROMETHEUS_MULTIPROC_DIR set (uvicorn
--workers), prometheus-client keeps values in files there and /metrics adds up every process's.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs_schema import UseCaseConfig
from jobs_server.flow import rate_key_state
from jobs_server.store.base import (
    ClaimedJob,
    EnqueueOutcome,
    EnqueueResult,
    FlowStore,
    PauseStore,
    QueuePause,
    QueueSnapshot,
    StatsStore,
)

__all__ = [
    "CONTENT_TYPE",
    "OTHER_TENANT",
    "HttpMetricsMiddleware",
    "QueueDepthRefresher",
    "RateKeysRefresher",
    "ServerMetrics",
]

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER_TENANT = "other"

# Seconds. Dispatch lag is milliseconds when all is well, minutes in a backlog.
_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

_RESULTS = {
    "succeeded": "succeeded",
    "pending": "retried",
    "dead": "dead",
    "cancelled": "cancelled",
}


class ServerMetrics:
    """The counters, gauges and histograms, and one `observe_*` method per place that feeds
    them. Gauges are written by the scheduler's leader only, and cleared when it stops leading."""

    def __init__(
        self,
        *,
        tenant_labels: Iterable[str] = (),
        multiprocess_dir: Path | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self._multiprocess_dir = multiprocess_dir
        self._tenants = frozenset(tenant_labels)
        self._depth_keys: set[tuple[str, ...]] = set()
        self._age_keys: set[str] = set()
        self._http: dict[int, Counter] = {}
        self._define()

    def _define(self) -> None:
        r = self.registry
        uc = ["use_case", *(["tenant"] if self._tenants else [])]

        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(name, doc, labels, registry=r)

        self.enqueued = counter("jobs_enqueued", "Jobs stored by enqueue.", uc)
        self.deduplicated = counter(
            "jobs_deduplicated", "Enqueues answered with an active job of the same dedup key.", uc
        )
        self.quota_refused = counter(
            "jobs_quota_refused", "Jobs refused because their tenant's quota was full.", uc
        )
        self._by_outcome = {
            EnqueueOutcome.CREATED: self.enqueued,
            EnqueueOutcome.DEDUPLICATED: self.deduplicated,
            EnqueueOutcome.QUOTA_EXCEEDED: self.quota_refused,
        }
        self.dispatched = counter("jobs_dispatched", "Jobs published to SQS by the scheduler.", uc)
        self.deadline_misses = counter(
            "jobs_deadline_misses", "Jobs dispatched after their deadline.", uc
        )
        self.publish_failed = counter(
            "jobs_publish_failed",
            "Jobs whose message could not be published (their claims were released).",
            ["use_case"],
        )
        self.dispatch_lag = Histogram(
            "jobs_dispatch_lag_seconds",
            "From when a job was due (max of run_at and enqueue time) to its publication.",
            ["use_case"],
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.outcomes = counter(
            "jobs_outcomes",
            "Outcome reports of workers by result: succeeded, retried, dead, cancelled, or "
            "stale (refused: not the job's current lease).",
            ["result"],
        )
        self.lease_expiries = counter(
            "jobs_lease_expiries", "Running attempts whose lease expired (reaped).", ["use_case"]
        )
        self.expired = counter(
            "jobs_expired",
            "Jobs ended expired, never dispatched: pending past their deadline plus the grace "
            "of miss policy expire.",
            ["use_case"],
        )
        self.sqs_errors = counter(
            "jobs_sqs_errors",
            "Failed SQS calls, and entries SendMessageBatch refused, by operation.",
            ["operation"],
        )
        self.http_responses = counter(
            "jobs_http_responses", "HTTP responses of the API by status code.", ["code"]
        )
        self.pass_duration = Histogram(
            "jobs_scheduler_pass_duration_seconds",
            "Duration of one dispatch pass over every use case.",
            buckets=_PASS_BUCKETS,
            registry=r,
        )
        self.leader = Gauge(
            "jobs_scheduler_leader",
            "1 while this process's scheduler holds the leader lease, else 0.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.queue_depth = Gauge(
            "jobs_queue_depth",
            "Active jobs by status (pending, running), counted by the scheduler leader.",
            [*uc, "status"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.queue_due = Gauge(
            "jobs_queue_due",
            "Pending jobs whose run_at has come, counted by the scheduler leader.",
            uc,
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.rate_throttled = Gauge(
            "jobs_rate_throttled",
            "Due jobs the use case's rate limit holds back now, over its busiest rate keys.",
            ["use_case"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.rate_throttled_keys = Gauge(
            "jobs_rate_throttled_keys",
            "Rate keys with jobs held back now (per key: GET /v1/use-cases/{uc}/rate-keys).",
            ["use_case"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.rate_next_slot = Gauge(
            "jobs_rate_next_slot_seconds",
            "Until the next slot of the throttled rate key that waits longest (0: none waits).",
            ["use_case"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.oldest_due_age = Gauge(
            "jobs_oldest_due_job_age_seconds",
            "How long the oldest due pending job has been due (0: none is waiting).",
            ["use_case"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.slots_needed = Gauge(
            "jobs_worker_slots_needed",
            "Worker slots for every pending job to start by its deadline at the observed mean "
            "duration (running jobs included; docs/feasibility.md), by the scheduler leader.",
            ["use_case"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.backlog_at_risk = Gauge(
            "jobs_backlog_at_risk",
            "Pending jobs projected to start after their deadline at the current drain rate.",
            ["use_case"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.paused = Gauge(
            "jobs_paused",
            "1 for each paused scope, as the leader last read them (every "
            'JOBS_METRICS_REFRESH_SECONDS; "*": every use case or every tenant); a resumed '
            "scope's series is removed.",
            ["use_case", "tenant"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )

    # -- labels ----------------------------------------------------------------------------

    def _labels(self, use_case: str, tenant: str) -> tuple[str, ...]:
        if not self._tenants:
            return (use_case,)
        return (use_case, tenant if tenant in self._tenants else OTHER_TENANT)

    @property
    def tenant_labels(self) -> list[str]:
        return sorted(self._tenants)

    # -- enqueue -----------------------------------------------------------------------------

    def observe_enqueue(
        self, tenant: str, use_cases: list[str], results: list[EnqueueResult]
    ) -> None:
        """`use_cases[i]` is the use case of the request that got `results[i]`."""
        if len(results) == 1:  # the common case, without the tally
            self._count_enqueue(tenant, use_cases[0], results[0].outcome, 1)
            return
        tally = Tally(zip(use_cases, (r.outcome for r in results), strict=True))
        for (use_case, outcome), n in tally.items():
            self._count_enqueue(tenant, use_case, outcome, n)

    def _count_enqueue(self, tenant: str, use_case: str, outcome: EnqueueOutcome, n: int) -> None:
        metric = self._by_outcome.get(outcome)
        if metric is not None:
            metric.labels(*self._labels(use_case, tenant)).inc(n)

    # -- scheduler ---------------------------------------------------------------------------

    def observe_published(
        self, use_case: str, jobs: Mapping[str, ClaimedJob], *, failed: set[str], now: datetime
    ) -> None:
        """One publish call: `jobs` by message key, `failed` the keys SQS did not take."""
        if failed:
            self.publish_failed.labels(use_case).inc(len(failed))
        self.observe_dispatch(use_case, [j for k, j in jobs.items() if k not in failed], now)

    def observe_dispatch(self, use_case: str, jobs: list[ClaimedJob], now: datetime) -> None:
        lag = self.dispatch_lag.labels(use_case)
        sent: Tally[tuple[str, ...]] = Tally()
        missed: Tally[tuple[str, ...]] = Tally()
        for job in jobs:
            due = max(job.run_at, job.created_at)
            lag.observe(max(0.0, (now - due).total_seconds()))
            key = self._labels(use_case, job.tenant)
            sent[key] += 1
            missed[key] += job.missed_deadline
        for key, n in sent.items():
            self.dispatched.labels(*key).inc(n)
            if missed[key]:
                self.deadline_misses.labels(*key).inc(missed[key])

    def observe_pass(self, seconds: float) -> None:
        self.pass_duration.observe(seconds)

    def set_leader(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)
        if not leading:
            self.clear_queue_depth()

    def set_queue_depth(self, use_cases: Iterable[str], snapshot: QueueSnapshot) -> None:
        """Every series exported before and every configured use case gets a value (0 when it
        has no active jobs), so a series never vanishes while this process leads."""
        depth = dict.fromkeys(self._depth_keys, 0)
        due = dict.fromkeys({k[:-1] for k in self._depth_keys}, 0)
        oldest: dict[str, datetime | None] = dict.fromkeys([*use_cases, *self._age_keys])
        for use_case in use_cases:
            for status in ("pending", "running"):
                depth.setdefault((*self._labels(use_case, OTHER_TENANT), status), 0)
            due.setdefault(self._labels(use_case, OTHER_TENANT), 0)
        for row in snapshot.rows:
            key = self._labels(row.use_case, row.tenant)
            depth[(*key, "pending")] = depth.get((*key, "pending"), 0) + row.pending
            depth[(*key, "running")] = depth.get((*key, "running"), 0) + row.running
            due[key] = due.get(key, 0) + row.due
            first = oldest.get(row.use_case)
            if row.oldest_due_run_at is not None and (
                first is None or row.oldest_due_run_at < first
            ):
                oldest[row.use_case] = row.oldest_due_run_at
        for labels, value in depth.items():
            self.queue_depth.labels(*labels).set(value)
        for labels, value in due.items():
            self.queue_due.labels(*labels).set(value)
        for use_case, at in oldest.items():
            age = (snapshot.measured_at - at).total_seconds() if at is not None else 0.0
            self.oldest_due_age.labels(use_case).set(max(0.0, age))
        self._depth_keys = set(depth)
        self._age_keys = set(oldest)

    def observe_pauses(self, pauses: Iterable[QueuePause]) -> None:
        self.paused.clear()
        for p in pauses:
            self.paused.labels(p.use_case or "*", p.tenant or "*").set(1)

    def set_rate_keys(
        self, use_case: str, *, throttled: int, keys: int, next_slot_seconds: float
    ) -> None:
        self.rate_throttled.labels(use_case).set(throttled)
        self.rate_throttled_keys.labels(use_case).set(keys)
        self.rate_next_slot.labels(use_case).set(next_slot_seconds)

    def set_feasibility(self, use_case: str, *, slots_needed: int, at_risk: int) -> None:
        self.slots_needed.labels(use_case).set(slots_needed)
        self.backlog_at_risk.labels(use_case).set(at_risk)

    def clear_queue_depth(self) -> None:
        """A standby exports no queue depth: only the leader's numbers are current."""
        for gauge in (
            self.queue_depth,
            self.queue_due,
            self.oldest_due_age,
            self.rate_throttled,
            self.rate_throttled_keys,
            self.rate_next_slot,
            self.paused,
            self.slots_needed,
            self.backlog_at_risk,
        ):
            gauge.clear()
        self._depth_keys.clear()
        self._age_keys.clear()

    def observe_lease_expiries(self, use_cases: Iterable[str]) -> None:
        for use_case, n in Tally(use_cases).items():
            self.lease_expiries.labels(use_case).inc(n)

    def observe_expired(self, use_cases: Iterable[str]) -> None:
        """One use case per job the expirer ended expired."""
        for use_case, n in Tally(use_cases).items():
            self.expired.labels(use_case).inc(n)

    # -- outcomes, SQS, HTTP -----------------------------------------------------------------

    def observe_outcomes(self, statuses: Iterable[str | None]) -> None:
        """One status per report: the job's status after it, or None when it was stale."""
        for status, n in Tally(statuses).items():
            result = _RESULTS.get(status, "stale") if status is not None else "stale"
            self.outcomes.labels(result).inc(n)

    def sqs_error(self, operation: str, count: int = 1) -> None:
        self.sqs_errors.labels(operation).inc(count)

    def observe_response(self, status: int) -> None:
        child = self._http.get(status)
        if child is None:
            child = self._http[status] = self.http_responses.labels(str(status))
        child.inc()

    # -- exposition --------------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition: this registry's, or every process's under multiprocess mode."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self._multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(registry)


class DepthStore(StatsStore, PauseStore, Protocol):
    """QueueDepthRefresher's reads: the active jobs and the paused queues."""


class QueueDepthRefresher:
    """The scheduler's leader gauge, and the queue-depth and paused gauges of the leader only.
    `run_once(now)` counts; the scheduler runs it in the background (never delaying dispatch)
    every JOBS_METRICS_REFRESH_SECONDS, and it skips a turn when the last count was slow (never
    more often than ten times its duration: the cost grows with the backlog)."""

    def __init__(self, metrics: ServerMetrics, store: DepthStore, use_cases: list[str]) -> None:
        self._metrics = metrics
        self._store = store
        self._use_cases = use_cases
        self._leading = False
        self._not_before: datetime | None = None

    def leading(self, leading: bool) -> None:
        """Told by the elector when this process starts or stops leading."""
        self._leading = leading
        self._metrics.set_leader(leading)

    async def run_once(self, now: datetime) -> QueueSnapshot | None:
        """Count and export; None when skipped or failed (only freshness is lost)."""
        if self._not_before is not None and now < self._not_before:
            return None
        started = time.monotonic()
        try:
            snapshot = await self._store.count_active_jobs(tenants=self._metrics.tenant_labels)
        except Exception as exc:
            logger.warning("queue depth not counted", extra={"error": str(exc)})
            return None
        finally:
            self._not_before = now + timedelta(seconds=10 * (time.monotonic() - started))
        if self._leading:
            self._metrics.set_queue_depth(self._use_cases, snapshot)
            try:
                self._metrics.observe_pauses(await self._store.list_pauses())
            except Exception as exc:  # the gauge keeps its last reading
                logger.warning("paused queues not read", extra={"error": str(exc)})
        return snapshot

    async def close(self) -> None:
        self.leading(False)


class RateKeysRefresher:
    """The rate-limit gauges of each rate-limited use case, from its busiest rate keys (at most
    `keys`), while `leading()`; beside QueueDepthRefresher, on its period. Per key, the state
    is in the API, not in labels, whose values must stay bounded."""

    def __init__(
        self,
        metrics: ServerMetrics,
        store: FlowStore,
        use_cases: Mapping[str, UseCaseConfig],
        *,
        leading: Callable[[], bool],
        keys: int = 100,
    ) -> None:
        self._metrics = metrics
        self._store = store
        self._limited = {n: uc.rate_limit for n, uc in use_cases.items() if uc.rate_limit}
        self._leading = leading
        self._keys = keys

    async def run_once(self, now: datetime) -> int:
        """Export; returns how many jobs are throttled in all (0 when not leading)."""
        if not self._leading():
            return 0
        total = 0
        for name, rate in self._limited.items():
            buckets = await self._store.list_rate_buckets(
                name, per_seconds=rate.per_seconds, limit=self._keys
            )
            held = [s for s in (rate_key_state(b, rate, now) for b in buckets) if s.throttled]
            wait = max(((s.next_slot - now).total_seconds() for s in held), default=0.0)
            throttled = sum(s.throttled for s in held)
            self._metrics.set_rate_keys(
                name, throttled=throttled, keys=len(held), next_slot_seconds=wait
            )
            total += throttled
        return total


class HttpMetricsMiddleware:
    """Count responses by status code (a 500 when the app raised before answering)."""

    def __init__(self, app: ASGIApp, *, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def counting(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.metrics.observe_response(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, counting)
        except Exception:
            if not started:
                self.metrics.observe_response(500)
            raise
