"""InMemoryJobStore: every store port over dicts in this process, with the rules of
queries.sql, every time read from the injected clock. For tests (ours and users'); the
contract suite in tests/contract runs against it and PostgresJobStore alike.

Each method runs without awaiting, so on one event loop a call is as atomic as a transaction."""

from __future__ import annotations

import asyncio
import copy
import math
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from pydantic import JsonValue

from jobs_schema import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    AttemptOutcome,
    AttemptRecord,
    BackoffPolicy,
    Job,
    JobHead,
    JobStatus,
    LeaseRef,
    LeaseState,
    Payload,
    RateLimit,
    ScheduleSource,
    UniqueRule,
)
from jobs_schema.graph import OnParentFailure
from jobs_schema.limits import MAX_TIMESTAMP, clamp_timestamp
from jobs_schema.webhooks import WEBHOOKS_USE_CASE, WebhookTarget
from jobs_schema.workflows import (
    BATCH_KEY,
    MAX_BATCH_FAILED_IDS,
    MAX_BATCH_JOBS,
    Batch,
    BatchCounts,
    JobLink,
    ParentResult,
)
from jobs_server.auth import Principal
from jobs_server.clock import Clock
from jobs_server.job_ids import JobIds
from jobs_server.store.base import (
    ActionBatch,
    ClaimedJob,
    DashboardSession,
    DispatchStat,
    EnqueueOutcome,
    EnqueueResult,
    ExpiredJob,
    FailedAttempt,
    FeasibilitySnapshot,
    GraphRefusal,
    GraphResult,
    IdempotentReplay,
    JobCounts,
    JobFilter,
    KeyedRound,
    LeaderLease,
    LeaseStatus,
    MinuteStats,
    NewBatch,
    NewJob,
    NewLink,
    NewSchedule,
    PauseChange,
    PendingBucket,
    QueueDepth,
    QueuePause,
    QueueSnapshot,
    RateBucket,
    RateBucketSweep,
    RetryRules,
    RunningLease,
    SchedulerPass,
    SchedulerStatus,
    ScheduleTick,
    StoredSchedule,
    SucceededAttempt,
    TickResult,
    UseCaseLoad,
    UseCaseRates,
    claim_rounds,
    edge_arrays,
    graph_refusal,
    keyed_claim_window,
)
from jobs_server.store.channels import EVENTS_CHANNEL, WAKEUP_CHANNEL, id_payloads
from jobs_server.store.webhook_port import FannedOut, FanOutRules, StoredDelivery, StoredWebhook

__all__ = ["InMemoryJobStore"]

_RETRYABLE = frozenset({JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.EXPIRED})
# postgres.job_filter bounds created-at ranges by id too (ids are UUIDv7), with this margin
_ID_CLOCK_MARGIN = timedelta(minutes=10)
_SESSION_PRUNE_BATCH = 100
_MAX_NOTIFY_BYTES = 8000  # PostgreSQL's limit
_WATCHED = frozenset({"status", "deadline_missed"})
_EVENT_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.EXPIRED}
)


@dataclass
class _Row:
    """A `jobs` row."""

    id: UUID
    tenant: str
    use_case: str
    job_type: str
    payload: Payload
    priority: int
    run_at: datetime
    deadline: datetime
    max_attempts: int
    backoff: BackoffPolicy
    dedup_key: str | None
    trace_context: dict[str, str] | None
    created_at: datetime
    updated_at: datetime
    unique: UniqueRule | None = None
    status: JobStatus = JobStatus.PENDING
    attempts: int = 0
    lease_token: UUID | None = None
    lease_expires_at: datetime | None = None
    result: JsonValue = None
    last_error: str | None = None
    cancel_requested: bool = False
    deadline_missed: bool = False
    dispatched_at: datetime | None = None
    finished_at: datetime | None = None
    concurrency_key: str | None = None
    rate_key: str | None = None
    expires_at: datetime | None = None
    # webhooks: told of a change of status or deadline_missed before it is made (the trigger
    # of migration 0020); None: the row is not watched (delivery jobs)
    watch: Callable[[_Row, str, object], None] | None = field(
        default=None, repr=False, compare=False
    )

    def __setattr__(self, name: str, value: object) -> None:
        if name in _WATCHED:
            watch = self.__dict__.get("watch")
            if watch is not None:
                watch(self, name, value)
        object.__setattr__(self, name, value)

    def holds(self, attempt: int, lease_token: UUID) -> bool:
        """Fencing: the job runs this attempt under this lease token."""
        return (
            self.status is JobStatus.RUNNING
            and self.attempts == attempt
            and self.lease_token == lease_token
        )

    def is_active(self) -> bool:
        # waiting jobs (docs/workflows.md) count for the quota and can be cancelled
        return self.status in ACTIVE_STATUSES or self.status is JobStatus.WAITING


@dataclass
class _Wait:
    """A `job_waits` row."""

    remaining: int
    failed: int
    on_parent_failure: OnParentFailure
    tolerance_seconds: float | None
    grace_seconds: float | None


@dataclass
class _BatchRow:
    """A `batches` row."""

    id: UUID
    tenant: str
    callback: NewBatch | None
    callback_job_id: UUID
    created_at: datetime
    total: int = 0
    remaining: int = 0
    ended: Counter[JobStatus] = field(default_factory=Counter)
    failed_ids: list[UUID] = field(default_factory=list)
    finished_at: datetime | None = None


@dataclass
class _Attempt:
    """A `job_attempts` row."""

    attempt: int
    dispatched_at: datetime
    outcome: AttemptOutcome = AttemptOutcome.RUNNING
    worker_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    deadline: datetime | None = None


@dataclass
class _IdempotencyKey:
    request_hash: str
    created_at: datetime
    results: list[tuple[UUID | None, EnqueueOutcome]] | None = None


@dataclass
class _Leader:
    holder: str
    epoch: int
    expires_at: datetime
    since: datetime


@dataclass
class _SchedulerRow:
    """A `scheduler_status` row."""

    holder: str | None = None
    epoch: int | None = None
    last_pass_at: datetime | None = None
    last_pass_seconds: float | None = None
    passes: int = 0
    dispatched: int = 0
    counts_at: datetime | None = None
    finished_through: datetime | None = None


@dataclass
class _MinuteRow:
    """A `job_stats_minute` row."""

    dispatched: int = 0
    missed: int = 0
    slack_sum: float = 0.0
    slack_min: float | None = None
    slack_max: float | None = None
    succeeded: int = 0
    dead: int = 0
    cancelled: int = 0
    expired: int = 0


@dataclass
class _Session:
    principal: Principal
    token_check: bytes
    expires_at: datetime


@dataclass
class _MemorySubscription:
    channel: str
    callback: Callable[[str], None]
    _alive: bool = True
    _on_close: Callable[[_MemorySubscription], None] | None = None

    @property
    def alive(self) -> bool:
        return self._alive

    async def close(self) -> None:
        if self._alive and self._on_close is not None:
            self._on_close(self)
        self._alive = False


class InMemoryJobStore:
    """A JobStore in this process's memory, with PostgresJobStore's semantics: EDF claims
    within capacity, quotas, dedup, idempotency keys, fencing, leases and the leader lease, all
    against `clock`. Move a `ManualClock` to expire leases, reach run_at or prune."""

    announces_enqueues = False  # no NOTIFY here: the services announce every enqueue

    def __init__(self, clock: Clock, *, events: bool = True) -> None:
        self.clock = clock
        self._events = events  # as PostgresJobStore's: what statements announce themselves
        self._jobs: dict[UUID, _Row] = {}
        self._attempts: dict[UUID, dict[int, _Attempt]] = {}
        self._keys: dict[tuple[str, str], _IdempotencyKey] = {}
        self._leaders: dict[str, _Leader] = {}
        self._schedulers: dict[str, _SchedulerRow] = {}
        self._counts: dict[tuple[str, str], JobCounts] = {}
        self._minutes: dict[tuple[datetime, str, str], _MinuteRow] = {}
        self._sessions: dict[bytes, _Session] = {}
        self._listeners: dict[str, list[_MemorySubscription]] = {}
        self._pauses: dict[tuple[str, str], QueuePause] = {}
        self._pause_history: list[QueuePause] = []
        # rate_buckets: a rate key's claims in its last interval, (claimed at, starts)
        self._rate_buckets: dict[tuple[str, str], list[tuple[datetime, int]]] = {}
        self._schedules: dict[tuple[str, str], StoredSchedule] = {}
        # feasibility_load: attempts ended per use case and their summed time, and the rates
        self._ended: dict[str, tuple[int, float]] = {}
        self._rates: dict[str, UseCaseRates] = {}
        # feasibility_pending and feasibility_load.running as of the last fold
        self._folded: tuple[Counter[tuple[str, int, int]], Counter[str]] = (Counter(), Counter())
        # webhooks: subscriptions with their secrets, the outbox, and each delivery job's
        # (subscription, event id, event type)
        self._webhooks: dict[UUID, tuple[StoredWebhook, str]] = {}
        self._webhook_outbox: list[tuple[str, str, str | None, dict[str, JsonValue]]] = []
        self._deliveries: dict[UUID, tuple[UUID, UUID, str]] = {}
        self._webhook_ids = JobIds(clock)
        # workflows (job_edges, job_waits) and batches (batches, batch_jobs) of migration 0018
        self._edges: dict[UUID, dict[UUID, bool]] = {}  # child -> parent -> ended
        self._children: dict[UUID, set[UUID]] = {}
        self._waits: dict[UUID, _Wait] = {}
        self._batches: dict[UUID, _BatchRow] = {}
        self._batch_of: dict[UUID, list[UUID | bool]] = {}  # job -> [batch id, ended]

    # -- periodic jobs ---------------------------------------------------------------------

    async def create_schedule(self, schedule: StoredSchedule, *, limit: int) -> NewSchedule:
        key = (schedule.tenant, schedule.name)
        api = ScheduleSource.API
        made = sum(
            t == schedule.tenant and s.source is api for (t, _), s in self._schedules.items()
        )
        if made >= limit:
            return NewSchedule.AT_LIMIT
        if key in self._schedules:
            return NewSchedule.NAME_TAKEN
        self._schedules[key] = copy.deepcopy(schedule)
        return NewSchedule.CREATED

    async def sync_config_schedules(self, schedules: list[StoredSchedule]) -> None:
        wanted = {(s.tenant, s.name) for s in schedules}
        for key, old in list(self._schedules.items()):
            if old.source is ScheduleSource.CONFIG and key not in wanted:
                del self._schedules[key]
        for new in schedules:
            known = self._schedules.get((new.tenant, new.name))
            if known is None:
                self._schedules[(new.tenant, new.name)] = copy.deepcopy(new)
            elif known.source is ScheduleSource.CONFIG:
                self._schedules[(new.tenant, new.name)] = _synced(known, new)

    async def get_schedule(self, tenant: str, name: str) -> StoredSchedule | None:
        return copy.deepcopy(self._schedules.get((tenant, name)))

    async def list_schedules(
        self, *, tenant: str | None, after: tuple[str, str] | None = None, limit: int
    ) -> list[StoredSchedule]:
        rows = [
            copy.deepcopy(s)
            for key, s in sorted(self._schedules.items())
            if (tenant is None or s.tenant == tenant) and (after is None or key > after)
        ]
        return rows[:limit]

    async def set_schedule_paused(
        self, tenant: str, name: str, *, paused: bool, next_run_at: datetime
    ) -> StoredSchedule | None:
        old = self._schedules.get((tenant, name))
        if old is None:
            return None
        new = self._schedules[(tenant, name)] = replace(old, paused=paused, next_run_at=next_run_at)
        return copy.deepcopy(new)

    async def delete_schedule(self, tenant: str, name: str) -> bool:
        return self._schedules.pop((tenant, name), None) is not None

    async def due_schedules(self, *, limit: int) -> list[StoredSchedule]:
        now = self.clock.now()
        due = [s for s in self._schedules.values() if not s.paused and s.next_run_at <= now]
        due.sort(key=lambda s: (s.next_run_at, s.tenant, s.name))
        return [copy.deepcopy(s) for s in due[:limit]]

    async def enqueue_ticks(
        self, ticks: list[ScheduleTick], *, quotas: dict[str, int | None]
    ) -> list[TickResult]:
        now = self.clock.now()
        out = []
        for t in ticks:
            old = self._schedules.get((t.tenant, t.name))
            if old is None or old.paused or old.next_run_at != t.expected:
                out.append(TickResult(t.tenant, t.name, False, []))
                continue
            self._schedules[(t.tenant, t.name)] = replace(
                old, next_run_at=t.next_run_at, last_run_at=t.ran_at or old.last_run_at
            )
            results = self._enqueue(t.tenant, quotas.get(t.tenant), t.jobs, now) if t.jobs else []
            out.append(TickResult(t.tenant, t.name, True, [r.outcome for r in results]))
        return out

    # -- enqueue ---------------------------------------------------------------------------

    async def enqueue_jobs(
        self,
        tenant: str,
        *,
        quota: int | None,
        jobs: list[NewJob],
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        announce: bool = False,  # never asked of this store (announces_enqueues)
    ) -> list[EnqueueResult] | IdempotentReplay:
        now = self.clock.now()
        if idempotency_key is not None:
            if request_hash is None:
                raise ValueError("an idempotency key needs its request hash")
            used = self._keys.get((tenant, idempotency_key))
            if used is not None:
                stored = list(used.results) if used.results is not None else None
                return IdempotentReplay(used.request_hash, stored)
        results = self._enqueue(tenant, quota, jobs, now)
        if idempotency_key is not None and request_hash is not None:
            self._keys[(tenant, idempotency_key)] = _IdempotencyKey(
                request_hash, now, [(r.job.id if r.job else None, r.outcome) for r in results]
            )
        return results

    def _enqueue(
        self, tenant: str, quota: int | None, jobs: list[NewJob], now: datetime
    ) -> list[EnqueueResult]:
        """jobs_enqueue: insert all but duplicates, of an active job or of one a new job's
        uniqueness window holds (the first of a batch's wins), then keep up to the quota in
        request order."""
        if len({j.id for j in jobs}) < len(jobs) or any(j.id in self._jobs for j in jobs):
            raise ValueError("a job id is taken")
        active = self._active_count(tenant)
        keys = self._active_keys(tenant)
        matched = {new.id: m for new in jobs if (m := self._window_match(tenant, new, now))}
        inserted: list[UUID] = []
        for new in jobs:
            key = (new.use_case, new.dedup_key)
            if new.id in matched or (new.dedup_key is not None and key in keys):
                continue
            row = self._jobs[new.id] = _new_row(tenant, new, now)
            row.watch = self._watch_row
            inserted.append(new.id)
            if new.dedup_key is not None:
                keys[key] = row
        granted = len(inserted) if quota is None else min(len(inserted), max(quota - active, 0))
        excess = set(inserted[granted:])
        for job_id in excess:
            del self._jobs[job_id]
        keys = {k: row for k, row in keys.items() if row.id not in excess}
        return [
            _enqueue_result(self._jobs.get(new.id), new, keys, excess, matched.get(new.id))
            for new in jobs
        ]

    def _window_match(self, tenant: str, new: NewJob, now: datetime) -> _Row | None:
        """The latest job of the new job's key that its rule's window holds, past active."""
        if new.dedup_key is None or new.unique is None:
            return None
        rule = new.unique
        same_key = (
            r
            for r in self._jobs.values()
            if (r.tenant, r.use_case, r.dedup_key) == (tenant, new.use_case, new.dedup_key)
        )
        held = [
            r
            for r in same_key
            if rule.holds(r.status, created_at=r.created_at, finished_at=r.finished_at, now=now)
        ]
        return max(held, key=lambda r: r.created_at, default=None)

    def _active_keys(self, tenant: str) -> dict[tuple[str, str | None], _Row]:
        """The tenant's active jobs with a dedup key, by use case and key."""
        return {
            (r.use_case, r.dedup_key): r
            for r in self._jobs.values()
            if r.tenant == tenant and r.dedup_key is not None and r.is_active()
        }

    def _active_count(self, tenant: str) -> int:
        return sum(1 for r in self._jobs.values() if r.tenant == tenant and r.is_active())

    async def notify(self, channel: str, payload: str) -> None:
        self._notify_soon(channel, payload)

    async def notify_all(self, notes: Sequence[tuple[str, str]]) -> None:
        for payload in (p for _, p in notes):
            if len(payload.encode()) >= _MAX_NOTIFY_BYTES:  # the statement fails whole
                raise ValueError("a NOTIFY payload must be shorter than 8000 bytes")
        for channel, payload in notes:
            self._notify_soon(channel, payload)

    def _announce(self, ids: Iterable[UUID]) -> None:
        """As jobs_notify_ids: the ids to the event streams, unless events are off."""
        if self._events:
            for payload in id_payloads(ids):
                self._notify_soon(EVENTS_CHANNEL, payload)

    def _notify_soon(self, channel: str, payload: str) -> None:
        if len(payload.encode()) >= _MAX_NOTIFY_BYTES:
            raise ValueError("a NOTIFY payload must be shorter than 8000 bytes")
        loop = asyncio.get_running_loop()
        for sub in list(self._listeners.get(channel, [])):
            # delivered after the caller's statement, as a NOTIFY reaches a listener
            loop.call_soon(_deliver, sub, payload)

    # -- queries ---------------------------------------------------------------------------

    async def get_job(self, job_id: UUID, *, tenant: str | None) -> Job | None:
        row = self._jobs.get(job_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            return None
        return _job(row)

    async def get_jobs(self, job_ids: list[UUID]) -> list[Job]:
        return [_job(self._jobs[i]) for i in dict.fromkeys(job_ids) if i in self._jobs]

    async def get_job_heads(self, job_ids: list[UUID]) -> list[JobHead]:
        rows = [self._jobs[i] for i in dict.fromkeys(job_ids) if i in self._jobs]
        return [JobHead.model_validate(_job(r), from_attributes=True) for r in rows]

    async def get_job_attempts(self, job_id: UUID) -> list[AttemptRecord]:
        attempts = self._attempts.get(job_id, {})
        return [_attempt_record(attempts[n]) for n in sorted(attempts)]

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        return [_job(r) for r in self._filtered(flt)[: flt.limit]]

    async def get_payload(self, job_id: UUID) -> Payload | None:
        row = self._jobs.get(job_id)
        if row is None or row.status is not JobStatus.RUNNING:
            return None
        return copy.deepcopy(row.payload)

    def _filtered(
        self,
        flt: JobFilter,
        *,
        statuses: frozenset[JobStatus] | None = None,
        also: Callable[[_Row], bool] | None = None,
    ) -> list[_Row]:
        """The rows matching `flt` (and `statuses`, and `also`), newest id first."""
        rows = [
            r
            for r in self._jobs.values()
            if _matches(r, flt, statuses) and (also is None or also(r))
        ]
        return sorted(rows, key=lambda r: r.id, reverse=True)

    # -- leadership ------------------------------------------------------------------------

    async def acquire_leadership(self, name: str, holder: str, *, ttl: float) -> int | None:
        now = self.clock.now()
        expires_at = now + timedelta(seconds=ttl)
        lease = self._leaders.get(name)
        if lease is None:
            self._leaders[name] = _Leader(holder, 1, expires_at, since=now)
            return 1
        if lease.holder != holder and lease.expires_at >= now:
            return None
        if lease.holder != holder:
            lease.epoch += 1  # a takeover fences the old leader's claims
            lease.since = now
        lease.holder, lease.expires_at = holder, expires_at
        return lease.epoch

    async def resign_leadership(self, name: str, holder: str) -> None:
        lease = self._leaders.get(name)
        if lease is not None and lease.holder == holder:
            lease.expires_at = self.clock.now() - timedelta(seconds=1)

    async def listen(self, channel: str, callback: Callable[[str], None]) -> _MemorySubscription:
        sub = _MemorySubscription(channel, callback, _on_close=self._unlisten)
        self._listeners.setdefault(channel, []).append(sub)
        return sub

    def _unlisten(self, sub: _MemorySubscription) -> None:
        subs = self._listeners.get(sub.channel, [])
        if sub in subs:
            subs.remove(sub)

    def _leads(self, leader: LeaderLease, now: datetime) -> bool:
        lease = self._leaders.get(leader.name)
        return (
            lease is not None
            and lease.holder == leader.holder
            and lease.epoch == leader.epoch
            and lease.expires_at > now
        )

    # -- dispatch --------------------------------------------------------------------------

    async def claim_due_jobs(
        self,
        use_case: str,
        *,
        capacity: int,
        limit: int,
        lease_seconds: float,
        leader: LeaderLease,
        per_tenant_cap: int | None,
        per_key_cap: int | None = None,
        rate_limit: RateLimit | None = None,
    ) -> list[ClaimedJob]:
        now = self.clock.now()
        if not self._leads(leader, now):
            return []
        # as the statements' paused_tenants and use_case_paused
        pauses = [p for p in self._pauses.values() if p.paused]
        if any(p.use_case == use_case and p.tenant == "" for p in pauses):
            return []
        paused = {p.tenant for p in pauses if p.use_case in ("", use_case)}
        running = Counter(r.tenant for r in self._running(use_case))
        free = min(limit, max(0, capacity - running.total()))
        due = sorted(
            (
                r
                for r in self._jobs.values()
                if r.use_case == use_case
                and r.status is JobStatus.PENDING
                and r.run_at <= now
                and r.tenant not in paused
                and (r.expires_at is None or r.expires_at >= now)  # not due to expire
            ),
            key=_edf,
        )
        expires_at = now + timedelta(seconds=lease_seconds)
        if per_key_cap is not None or rate_limit is not None:

            async def round_(batch: int) -> KeyedRound:
                limits = _FlowLimits(
                    limit=batch,
                    per_tenant_cap=per_tenant_cap,
                    per_key_cap=per_key_cap,
                    rate_free=self._rate_free(use_case, rate_limit, now, batch),
                )
                rows = self._running(use_case)
                free = min(batch, max(0, capacity - len(rows)))
                admitted, saturated = limits.admit(
                    [r for r in due if r.status is JobStatus.PENDING], rows
                )
                claimed = [self._claim(r, now, expires_at) for r in admitted[:free]]
                if rate_limit is not None:
                    self._record_starts(use_case, admitted[:free], rate_limit, now)
                return KeyedRound(claimed, saturated)

            claimed = await claim_rounds(round_, limit)
        else:
            if per_tenant_cap is not None:
                due = _within_tenant_cap(due, running, per_tenant_cap)
            claimed = [self._claim(r, now, expires_at) for r in due[:free]]
        self._announce(c.id for c in claimed)  # as the claim statements' announce_claimed
        return claimed

    def _running(self, use_case: str) -> list[_Row]:
        return [
            r
            for r in self._jobs.values()
            if r.use_case == use_case and r.status is JobStatus.RUNNING
        ]

    def _rate_free(
        self, use_case: str, rate_limit: RateLimit | None, now: datetime, limit: int
    ) -> Callable[[str], int]:
        if rate_limit is None:
            return lambda rk: limit
        window = timedelta(seconds=rate_limit.per_seconds)

        def free(rk: str) -> int:
            if rk == "":
                return limit
            starts = self._rate_buckets.get((use_case, rk), [])
            return max(0, rate_limit.starts - sum(n for at, n in starts if at > now - window))

        return free

    def _record_starts(
        self, use_case: str, started: list[_Row], rate_limit: RateLimit, now: datetime
    ) -> None:
        window = timedelta(seconds=rate_limit.per_seconds)
        for rk, n in Counter(r.rate_key for r in started if r.rate_key is not None).items():
            kept = [
                (at, k) for at, k in self._rate_buckets.get((use_case, rk), []) if at > now - window
            ]
            self._rate_buckets[(use_case, rk)] = [*kept, (now, n)]

    async def list_rate_buckets(
        self, use_case: str, *, per_seconds: float, limit: int
    ) -> list[RateBucket]:
        now = self.clock.now()
        window = timedelta(seconds=per_seconds)
        waiting = Counter(
            r.rate_key
            for r in self._jobs.values()
            if r.use_case == use_case and r.status is JobStatus.PENDING and r.run_at <= now
        )
        buckets = [
            RateBucket(
                use_case=use_case,
                rate_key=rk,
                starts=tuple((at, n) for at, n in starts if at > now - window),
                waiting=waiting[rk],
            )
            for (uc, rk), starts in self._rate_buckets.items()
            if uc == use_case
        ]
        busy = [b for b in buckets if b.starts or b.waiting]
        return sorted(busy, key=lambda b: (-b.waiting, b.rate_key))[:limit]

    def _claim(self, row: _Row, now: datetime, expires_at: datetime) -> ClaimedJob:
        missed = row.deadline < now
        row.status = JobStatus.RUNNING
        row.attempts += 1
        row.lease_token = uuid.uuid4()
        row.lease_expires_at = expires_at
        row.dispatched_at = now
        row.deadline_missed = row.deadline_missed or missed
        row.updated_at = now
        self._attempts.setdefault(row.id, {})[row.attempts] = _Attempt(row.attempts, now)
        return ClaimedJob(
            id=row.id,
            tenant=row.tenant,
            use_case=row.use_case,
            job_type=row.job_type,
            payload=copy.deepcopy(row.payload),
            attempt=row.attempts,
            max_attempts=row.max_attempts,
            lease_token=row.lease_token,
            lease_expires_at=clamp_timestamp(expires_at),
            deadline=clamp_timestamp(row.deadline),
            run_at=clamp_timestamp(row.run_at),
            created_at=clamp_timestamp(row.created_at),
            trace_context=copy.deepcopy(row.trace_context),
            missed_deadline=missed,
        )

    async def release_leases(self, leases: list[LeaseRef]) -> list[UUID]:
        now = self.clock.now()
        released = []
        for lease in leases:
            row = self._jobs.get(lease.job_id)
            if row is None or not row.holds(lease.attempt, lease.lease_token):
                continue
            row.status = JobStatus.CANCELLED if row.cancel_requested else JobStatus.PENDING
            row.finished_at = now if row.cancel_requested else None
            row.attempts -= 1
            row.lease_token = row.lease_expires_at = None
            row.updated_at = now
            self._attempts.get(row.id, {}).pop(lease.attempt, None)
            released.append(row.id)
        self._follow_ends(self._jobs[i] for i in released)
        return released

    # -- outcomes --------------------------------------------------------------------------

    async def complete_attempts(self, done: list[SucceededAttempt]) -> dict[UUID, JobStatus]:
        now = self.clock.now()
        out: dict[UUID, JobStatus] = {}
        for d in done:
            row = self._held(d.id, d.attempt, d.lease_token)
            if row is None:
                continue
            status = JobStatus.CANCELLED if row.cancel_requested else JobStatus.SUCCEEDED
            row.status, row.result = status, copy.deepcopy(d.result)
            self._finish(row, now, finished=True)
            attempt = self._attempt_of(row)
            if attempt is not None:
                attempt.outcome = AttemptOutcome(status.value)
                _record_end(attempt, now, worker_id=d.worker_id, started_at=d.started_at)
            self._count_end(row, now)
            out[row.id] = status
        self._follow_ends(self._jobs[i] for i in out)
        return out

    async def fail_attempts(
        self, failed: list[FailedAttempt], *, require_expired: bool
    ) -> dict[UUID, JobStatus]:
        now = self.clock.now()
        out: dict[UUID, JobStatus] = {}
        for f in failed:
            row = self._held(f.id, f.attempt, f.lease_token)
            if row is None or (require_expired and not _expired(row, now)):
                continue
            retry = f.next_status is JobStatus.PENDING
            if retry and f.run_at is None:
                raise ValueError("a retry needs its run_at")
            finished = row.cancel_requested or not retry
            row.status = JobStatus.CANCELLED if row.cancel_requested else f.next_status
            if retry and f.run_at is not None:
                row.run_at = f.run_at
            row.last_error = f"{f.error_type}: {f.error_message}"
            self._finish(row, now, finished=finished)
            attempt = self._attempt_of(row)
            if attempt is not None:
                attempt.outcome = f.outcome
                attempt.error_type, attempt.error_message = f.error_type, f.error_message
                attempt.traceback = f.traceback
                _record_end(attempt, now, worker_id=f.worker_id, started_at=f.started_at)
            self._count_end(row, now)
            out[row.id] = row.status
        self._follow_ends(self._jobs[i] for i in out)
        return out

    def _count_end(self, row: _Row, now: datetime) -> None:
        """feasibility_load: a running attempt ended (the trigger of migration 0012)."""
        n, busy = self._ended.get(row.use_case, (0, 0.0))
        took = (now - row.dispatched_at).total_seconds() if row.dispatched_at else 0.0
        self._ended[row.use_case] = (n + 1, busy + took)

    def _held(self, job_id: UUID, attempt: int, lease_token: UUID) -> _Row | None:
        row = self._jobs.get(job_id)
        return row if row is not None and row.holds(attempt, lease_token) else None

    def _attempt_of(self, row: _Row) -> _Attempt | None:
        return self._attempts.get(row.id, {}).get(row.attempts)

    @staticmethod
    def _finish(row: _Row, now: datetime, *, finished: bool) -> None:
        row.lease_token = row.lease_expires_at = None
        row.finished_at = now if finished else None
        row.updated_at = now

    async def expire_jobs(self, use_cases: list[str], *, limit: int) -> list[ExpiredJob]:
        now = self.clock.now()
        wanted = set(use_cases)
        doomed = [
            r
            for r in self._jobs.values()
            if r.use_case in wanted
            and r.status is JobStatus.PENDING
            and r.expires_at is not None
            and r.expires_at < now
        ][:limit]
        out = []
        for row in doomed:
            assert row.expires_at is not None
            row.status = JobStatus.EXPIRED
            row.finished_at = row.updated_at = now
            row.last_error = expiry_reason(row.deadline, row.expires_at)
            out.append(ExpiredJob(row.id, row.tenant, row.use_case, row.deadline, row.expires_at))
        self._follow_ends(doomed)
        return out

    async def find_expired_leases(self, *, limit: int) -> list[RunningLease]:
        now = self.clock.now()
        expired = [r for r in self._jobs.values() if _expired(r, now)]
        expired.sort(key=lambda r: r.lease_expires_at or now)
        return [_running(r) for r in expired[:limit]]

    async def get_leases(self, job_ids: list[UUID]) -> list[RunningLease]:
        rows = (self._jobs.get(i) for i in dict.fromkeys(job_ids))
        return [_running(r) for r in rows if r is not None and r.status is JobStatus.RUNNING]

    async def extend_leases(
        self, leases: list[LeaseRef], *, extend_seconds: list[float]
    ) -> list[LeaseStatus]:
        now = self.clock.now()
        out = []
        for lease, seconds in zip(leases, extend_seconds, strict=True):
            row = self._held(lease.job_id, lease.attempt, lease.lease_token)
            if row is None or row.lease_expires_at is None:
                out.append(LeaseStatus(lease.job_id, LeaseState.LOST, None))
                continue
            row.lease_expires_at = max(row.lease_expires_at, now + timedelta(seconds=seconds))
            row.updated_at = now
            state = LeaseState.CANCELLED if row.cancel_requested else LeaseState.HELD
            out.append(LeaseStatus(row.id, state, row.lease_expires_at))
        return out

    async def find_cancel_requested(self, leases: list[LeaseRef]) -> list[LeaseRef]:
        out = []
        for lease in dict.fromkeys(leases):
            row = self._held(lease.job_id, lease.attempt, lease.lease_token)
            if row is not None and row.cancel_requested:
                out.append(lease)
        return out

    async def mark_attempts_started(self, leases: list[LeaseRef], *, worker_id: str) -> None:
        now = self.clock.now()
        for lease in leases:
            attempt = self._attempts.get(lease.job_id, {}).get(lease.attempt)
            if attempt is not None and attempt.worker_id is None:
                attempt.started_at = attempt.started_at or now
                attempt.worker_id = worker_id

    async def get_lease_tenant(self, lease: LeaseRef) -> str | None:
        row = self._jobs.get(lease.job_id)
        if row is None or not row.holds(lease.attempt, lease.lease_token) or row.cancel_requested:
            return None
        if row.lease_expires_at is None or row.lease_expires_at <= self.clock.now():
            return None
        return row.tenant

    # -- operator actions ------------------------------------------------------------------

    async def cancel_job(self, job_id: UUID, *, tenant: str | None) -> Job | None:
        row = self._jobs.get(job_id)
        if row is None or (tenant is not None and row.tenant != tenant) or not row.is_active():
            return None
        _cancel(row, self.clock.now())
        self._follow_ends([row])
        return _job(row)

    async def count_jobs(
        self, flt: JobFilter, *, statuses: frozenset[JobStatus] | None = None
    ) -> tuple[int, UUID | None]:
        rows = self._filtered(flt, statuses=statuses)
        return len(rows), rows[0].id if rows else None

    async def cancel_jobs(
        self, flt: JobFilter, *, batch: int, before_id: UUID | None
    ) -> ActionBatch:
        now = self.clock.now()
        picked = self._filtered(
            flt,
            also=lambda r: (
                r.is_active() and not r.cancel_requested and (before_id is None or r.id < before_id)
            ),
        )[:batch]
        for row in picked:
            _cancel(row, now)
        self._follow_ends(picked)
        return _action_batch(picked, picked)

    async def retry_jobs(
        self, flt: JobFilter, *, batch: int, before_id: UUID | None, rules: RetryRules
    ) -> ActionBatch:
        now = self.clock.now()
        picked = self._filtered(
            flt,
            also=lambda r: r.status in _RETRYABLE and (before_id is None or r.id < before_id),
        )[:batch]
        granted = self._within_quotas(self._without_duplicates(picked), rules)
        for row in granted:
            self._retry(row, now, rules)
        return _action_batch(picked, granted)

    def _without_duplicates(self, picked: list[_Row]) -> list[_Row]:
        """The picked jobs whose dedup key no active job holds, and of those sharing one, the
        newest (picked is newest first)."""
        held = {
            (r.tenant, r.use_case, r.dedup_key)
            for r in self._jobs.values()
            if r.dedup_key is not None and r.is_active()
        }
        out = []
        for row in picked:
            if row.dedup_key is not None:
                key = (row.tenant, row.use_case, row.dedup_key)
                if key in held:
                    continue
                held.add(key)
            out.append(row)
        return out

    def _within_quotas(self, eligible: list[_Row], rules: RetryRules) -> list[_Row]:
        """The eligible jobs each tenant's quota has room for, newest first."""
        taken: Counter[str] = Counter()
        active = {t: self._active_count(t) for t in {r.tenant for r in eligible}}
        out = []
        for row in eligible:
            taken[row.tenant] += 1
            quota = rules.quotas.get(row.tenant)
            if quota is None:
                quota = rules.default_quota
            if quota is None or taken[row.tenant] <= quota - active[row.tenant]:
                out.append(row)
        return out

    def _retry(self, row: _Row, now: datetime, rules: RetryRules) -> None:
        for attempt in self._attempts.get(row.id, {}).values():
            if attempt.deadline is None:  # the deadline it ran under
                attempt.deadline = row.deadline
        tolerance = rules.tolerances.get(row.use_case, rules.default_tolerance)
        row.status = JobStatus.PENDING
        row.run_at = now
        grace = row.expires_at - row.deadline if row.expires_at is not None else None
        row.deadline = now + timedelta(seconds=tolerance)
        row.expires_at = row.deadline + grace if grace is not None else None
        row.max_attempts = max(row.max_attempts, row.attempts + 1)
        row.deadline_missed = row.cancel_requested = False
        row.result = None
        row.lease_token = row.lease_expires_at = row.finished_at = None
        row.updated_at = now

    # -- pruning ---------------------------------------------------------------------------

    async def prune_finished_jobs(
        self, use_case: str, *, older_than_seconds: float, limit: int
    ) -> int:
        cutoff = self.clock.now() - timedelta(seconds=older_than_seconds)
        doomed = sorted(
            (
                r
                for r in self._jobs.values()
                if r.use_case == use_case
                and r.status in FINISHED_STATUSES
                and r.finished_at is not None
                and r.finished_at < cutoff
            ),
            key=lambda r: r.finished_at or cutoff,
        )[:limit]
        for row in doomed:
            del self._jobs[row.id]
            self._attempts.pop(row.id, None)
        return len(doomed)

    async def prune_idempotency_keys(self, *, older_than_seconds: float, limit: int) -> int:
        cutoff = self.clock.now() - timedelta(seconds=older_than_seconds)
        doomed = [k for k, v in self._keys.items() if v.created_at < cutoff][:limit]
        for key in doomed:
            del self._keys[key]
        return len(doomed)

    async def prune_job_stats(self, *, older_than_seconds: float) -> int:
        cutoff = self.clock.now() - timedelta(seconds=older_than_seconds)
        doomed = [k for k in self._minutes if k[0] < cutoff]
        for key in doomed:
            del self._minutes[key]
        return len(doomed)

    async def prune_rate_buckets(
        self,
        windows: dict[str, float],
        *,
        default_window_seconds: float,
        after: tuple[str, str] | None,
        limit: int,
    ) -> RateBucketSweep:
        now = self.clock.now()
        scanned = sorted(k for k in self._rate_buckets if after is None or k > after)[:limit]
        deleted = 0
        for key in scanned:
            window = timedelta(seconds=windows.get(key[0], default_window_seconds))
            starts = self._rate_buckets[key]
            if not starts or starts[-1][0] <= now - window:
                del self._rate_buckets[key]
                deleted += 1
        return RateBucketSweep(deleted, scanned[-1] if len(scanned) == limit else None)

    async def prune_pause_history(self, *, older_than_seconds: float, limit: int) -> int:
        cutoff = self.clock.now() - timedelta(seconds=older_than_seconds)
        oldest = self._pause_history[:limit]
        kept = [r for r in oldest if r.changed_at >= cutoff]
        self._pause_history[:limit] = kept
        return len(oldest) - len(kept)

    # -- statistics ------------------------------------------------------------------------

    async def record_scheduler_pass(self, name: str, info: SchedulerPass) -> None:
        row = self._schedulers.setdefault(name, _SchedulerRow())
        row.holder, row.epoch = info.holder, info.epoch
        row.last_pass_at, row.last_pass_seconds = info.last_pass_at, info.last_pass_seconds
        row.passes, row.dispatched = info.passes, info.dispatched

    async def refresh_job_counts(self, name: str) -> None:
        now = self.clock.now()
        groups: dict[tuple[str, str], list[_Row]] = {}
        for row in self._jobs.values():
            if row.is_active():
                groups.setdefault((row.tenant, row.use_case), []).append(row)
        self._counts = {key: _job_counts(key, rows, now) for key, rows in groups.items()}
        if name in self._schedulers:
            self._schedulers[name].counts_at = now

    async def add_dispatch_stats(self, stats: list[DispatchStat]) -> None:
        if len({(s.minute, s.use_case, s.tenant) for s in stats}) < len(stats):
            # one INSERT ... ON CONFLICT cannot update a row twice
            raise ValueError("dispatch stats name one minute, use case and tenant twice")
        for s in stats:
            row = self._minutes.setdefault((s.minute, s.use_case, s.tenant), _MinuteRow())
            row.dispatched += s.dispatched
            row.missed += s.missed
            row.slack_sum += s.slack_sum
            row.slack_min = _least(row.slack_min, s.slack_min)
            row.slack_max = _greatest(row.slack_max, s.slack_max)

    async def roll_up_finished(
        self, name: str, *, use_cases: list[str], lag_seconds: float, max_window_seconds: float
    ) -> int:
        now = self.clock.now()
        status = self._schedulers.setdefault(name, _SchedulerRow())
        lo = status.finished_through or now - timedelta(hours=1)
        hi = min(now - timedelta(seconds=lag_seconds), lo + timedelta(seconds=max_window_seconds))
        counted: dict[tuple[datetime, str, str], Counter[JobStatus]] = {}
        for row in self._jobs.values():
            if (
                row.use_case in use_cases
                and row.status in FINISHED_STATUSES
                and row.finished_at is not None
                and lo <= row.finished_at < hi
            ):
                key = (_minute(row.finished_at), row.use_case, row.tenant)
                counted.setdefault(key, Counter())[row.status] += 1
        for key, counts in counted.items():
            stats = self._minutes.setdefault(key, _MinuteRow())
            stats.succeeded += counts[JobStatus.SUCCEEDED]
            stats.dead += counts[JobStatus.DEAD]
            stats.cancelled += counts[JobStatus.CANCELLED]
            stats.expired += counts[JobStatus.EXPIRED]
        if hi > lo:
            status.finished_through = hi
        return len(counted)

    async def get_job_counts(self, *, tenant: str | None) -> list[JobCounts]:
        keys = sorted(self._counts, key=lambda k: (k[1], k[0]))
        return [self._counts[k] for k in keys if tenant is None or k[0] == tenant]

    async def get_minute_stats(self, *, since: datetime, tenant: str | None) -> list[MinuteStats]:
        groups: dict[tuple[datetime, str], list[_MinuteRow]] = {}
        for (minute, use_case, row_tenant), row in self._minutes.items():
            if minute >= since and (tenant is None or row_tenant == tenant):
                groups.setdefault((minute, use_case), []).append(row)
        return [_minute_stats(key, groups[key]) for key in sorted(groups)]

    async def get_scheduler_status(self, name: str) -> SchedulerStatus:
        now = self.clock.now()
        lease = self._leaders.get(name)
        row = self._schedulers.get(name, _SchedulerRow())
        return SchedulerStatus(
            now=now,
            holder=lease.holder if lease else None,
            epoch=lease.epoch if lease else None,
            lease_expires_at=lease.expires_at if lease else None,
            leader_since=lease.since if lease else None,
            live=lease is not None and lease.expires_at > now,
            last_pass_at=row.last_pass_at,
            last_pass_seconds=row.last_pass_seconds,
            passes=row.passes,
            dispatched=row.dispatched,
            counts_at=row.counts_at,
        )

    async def count_active_jobs(self, *, tenants: list[str]) -> QueueSnapshot:
        now = self.clock.now()
        named = set(tenants)
        groups: dict[tuple[str, str], list[_Row]] = {}
        for row in self._jobs.values():
            if row.is_active():
                tenant = row.tenant if row.tenant in named else ""
                groups.setdefault((row.use_case, tenant), []).append(row)
        return QueueSnapshot(
            measured_at=now, rows=[_queue_depth(k, rows, now) for k, rows in groups.items()]
        )

    # -- dashboard sessions ----------------------------------------------------------------

    # -- deadline feasibility: exact counts as of the last fold, as PostgreSQL's summary ------

    async def fold_feasibility(self, *, rebuild: bool = False) -> list[UseCaseLoad]:
        running: Counter[str] = Counter()
        pending: Counter[tuple[str, int, int]] = Counter()
        for r in self._jobs.values():
            if r.status is JobStatus.RUNNING:
                running[r.use_case] += 1
            elif r.status is JobStatus.PENDING:
                pending[(r.use_case, r.priority, math.floor(r.deadline.timestamp()))] += 1
        self._folded = (pending, running)
        names = sorted(set(running) | set(self._ended) | set(self._rates))
        return [
            UseCaseLoad(
                use_case=uc,
                running=running[uc],
                finished=self._ended.get(uc, (0, 0.0))[0],
                busy_seconds=self._ended.get(uc, (0, 0.0))[1],
            )
            for uc in names
        ]

    async def set_feasibility_rates(self, rates: list[UseCaseRates]) -> None:
        for r in rates:
            self._rates[r.use_case] = r

    async def get_feasibility(self, use_case: str) -> FeasibilitySnapshot:
        fine_until = int(self.clock.now().timestamp()) + 3600
        pending, running = self._folded
        counts: Counter[tuple[int, int]] = Counter()
        for (uc, p, b), n in pending.items():
            if uc == use_case:
                counts[(p, b if b < fine_until else b - b % 60)] += n
        rates = self._rates.get(use_case)
        return FeasibilitySnapshot(
            use_case=use_case,
            running=running[use_case],
            throughput=rates.throughput if rates else None,
            mean_duration=rates.mean_duration if rates else None,
            pending=tuple(
                PendingBucket(priority=p, bucket=b, n=n)
                for (p, b), n in sorted(counts.items(), key=lambda kv: (-kv[0][0], kv[0][1]))
            ),
        )

    async def create_dashboard_session(
        self, id_hash: bytes, *, principal: Principal, token_check: bytes, ttl_seconds: float
    ) -> None:
        now = self.clock.now()
        if id_hash in self._sessions:  # even an expired one: the INSERT sees it
            raise ValueError("a dashboard session with this id exists")
        expired = sorted(
            (k for k, s in self._sessions.items() if s.expires_at <= now),
            key=lambda k: self._sessions[k].expires_at,
        )
        for key in expired[:_SESSION_PRUNE_BATCH]:
            del self._sessions[key]
        self._sessions[id_hash] = _Session(
            principal, bytes(token_check), now + timedelta(seconds=ttl_seconds)
        )

    async def get_dashboard_session(self, id_hash: bytes) -> DashboardSession | None:
        s = self._sessions.get(id_hash)
        if s is None or s.expires_at <= self.clock.now():
            return None
        return DashboardSession(s.principal, s.token_check, s.expires_at)

    async def delete_dashboard_session(self, id_hash: bytes) -> None:
        self._sessions.pop(id_hash, None)

    # -- pauses ----------------------------------------------------------------------------

    async def pause_queue(
        self, use_case: str, tenant: str, *, principal: str, reason: str | None
    ) -> PauseChange:
        change = self._change_pause(use_case, tenant, True, principal, reason)
        assert change is not None  # a pause always leaves a row
        return change

    async def resume_queue(
        self, use_case: str, tenant: str, *, principal: str, reason: str | None
    ) -> PauseChange | None:
        return self._change_pause(use_case, tenant, False, principal, reason)

    def _change_pause(
        self, use_case: str, tenant: str, paused: bool, principal: str, reason: str | None
    ) -> PauseChange | None:
        current = self._pauses.get((use_case, tenant))
        if current is None and not paused:
            return None
        if current is not None and current.paused == paused:
            return PauseChange(current, changed=False)
        row = QueuePause(use_case, tenant, paused, principal, self.clock.now(), reason)
        self._pauses[(use_case, tenant)] = row
        self._pause_history.append(row)
        return PauseChange(row, changed=True)

    async def list_pauses(self) -> list[QueuePause]:
        return [p for _, p in sorted(self._pauses.items()) if p.paused]

    async def list_pause_history(self, *, limit: int) -> list[QueuePause]:
        return self._pause_history[::-1][:limit]

    # -- health ----------------------------------------------------------------------------

    async def ping(self) -> None:
        return None

    async def pending_migrations(self) -> list[int]:
        return []  # nothing to migrate: the schema is this module

    async def close(self) -> None:
        for subs in list(self._listeners.values()):
            for sub in list(subs):
                await sub.close()

    # -- webhooks (the rules of migration 0020) --------------------------------------------

    def _watch_row(self, row: _Row, name: str, value: object) -> None:
        if row.use_case == WEBHOOKS_USE_CASE:
            return
        if name == "status" and value in _EVENT_STATUSES and value != row.status:
            assert isinstance(value, JobStatus)
            self._webhook_event(row, value.value, value)
        elif name == "deadline_missed" and value and not row.deadline_missed:
            self._webhook_event(row, "deadline_missed", row.status)

    def _wanted(self, tenant: str, event_type: str, use_case: str | None) -> bool:
        return any(
            not h.paused
            and h.tenant == tenant
            and event_type in h.event_types
            and (h.use_case is None or use_case is None or h.use_case == use_case)
            for h, _ in self._webhooks.values()
        )

    def _webhook_event(self, row: _Row, event_type: str, status: JobStatus) -> None:
        if not self._wanted(row.tenant, event_type, row.use_case):
            return
        body: dict[str, JsonValue] = {
            "type": event_type,
            "occurred_at": _iso_utc(self.clock.now()),
            "tenant": row.tenant,
            "job_id": str(row.id),
            "use_case": row.use_case,
            "job_type": row.job_type,
            "status": status.value,
            "attempts": row.attempts,
        }
        self._webhook_outbox.append((row.tenant, event_type, row.use_case, body))

    async def emit_webhook_event(
        self, tenant: str, event_type: str, *, use_case: str | None, data: dict[str, JsonValue]
    ) -> bool:
        return self._emit(tenant, event_type, use_case, data)

    def _emit(
        self, tenant: str, event_type: str, use_case: str | None, data: dict[str, JsonValue]
    ) -> bool:
        """webhook_emit (migration 0020)."""
        if not self._wanted(tenant, event_type, use_case):
            return False
        body: dict[str, JsonValue] = {
            "type": event_type,
            "tenant": tenant,
            "occurred_at": _iso_utc(self.clock.now()),
            "use_case": use_case,
            "data": copy.deepcopy(data),
        }
        self._webhook_outbox.append((tenant, event_type, use_case, body))
        return True

    async def create_webhook(
        self, hook: StoredWebhook, *, secret: str, limit: int
    ) -> StoredWebhook | None:
        if sum(h.tenant == hook.tenant for h, _ in self._webhooks.values()) >= limit:
            return None
        if hook.id in self._webhooks:
            raise ValueError("a webhook id is taken")
        self._webhooks[hook.id] = (hook, secret)
        return hook

    async def list_webhooks(self, *, tenant: str | None, limit: int) -> list[StoredWebhook]:
        hooks = [h for h, _ in self._webhooks.values() if tenant is None or h.tenant == tenant]
        return sorted(hooks, key=lambda h: (h.tenant, h.created_at, h.id))[:limit]

    async def get_webhook(self, webhook_id: UUID, *, tenant: str | None) -> StoredWebhook | None:
        kept = self._webhooks.get(webhook_id)
        if kept is None or (tenant is not None and kept[0].tenant != tenant):
            return None
        return kept[0]

    async def set_webhook_paused(
        self, webhook_id: UUID, *, tenant: str | None, paused: bool
    ) -> StoredWebhook | None:
        hook = await self.get_webhook(webhook_id, tenant=tenant)
        if hook is None:
            return None
        changed = replace(hook, paused=paused)
        self._webhooks[webhook_id] = (changed, self._webhooks[webhook_id][1])
        return changed

    async def delete_webhook(self, webhook_id: UUID, *, tenant: str | None) -> bool:
        if await self.get_webhook(webhook_id, tenant=tenant) is None:
            return False
        del self._webhooks[webhook_id]
        self._deliveries = {k: v for k, v in self._deliveries.items() if v[0] != webhook_id}
        return True

    async def get_webhook_target(self, webhook_id: UUID) -> WebhookTarget | None:
        kept = self._webhooks.get(webhook_id)
        if kept is None:
            return None
        hook, secret = kept
        return WebhookTarget(id=hook.id, url=hook.url, secret=secret, paused=hook.paused)

    async def list_webhook_deliveries(
        self, webhook_id: UUID, *, before: UUID | None, limit: int
    ) -> list[StoredDelivery]:
        ids = sorted(
            (j for j, (sub, _, _) in self._deliveries.items() if sub == webhook_id),
            reverse=True,
        )
        out = []
        for job_id in ids:
            row = self._jobs.get(job_id)
            if row is None or (before is not None and job_id >= before):
                continue
            _, event_id, event_type = self._deliveries[job_id]
            out.append(
                StoredDelivery(
                    job_id=job_id,
                    event_id=event_id,
                    event_type=event_type,
                    status=row.status.value,
                    attempts=row.attempts,
                    result=copy.deepcopy(row.result),
                    last_error=row.last_error,
                    created_at=row.created_at,
                    finished_at=row.finished_at,
                )
            )
            if len(out) >= limit:
                break
        return out

    async def fan_out_webhook_events(self, rules: FanOutRules, *, limit: int) -> FannedOut:
        now = self.clock.now()
        taken, self._webhook_outbox = self._webhook_outbox[:limit], self._webhook_outbox[limit:]
        made = 0
        for tenant, event_type, use_case, body in taken:
            event_id = uuid.uuid4()
            for hook, _ in list(self._webhooks.values()):
                if (
                    hook.paused
                    or hook.tenant != tenant
                    or event_type not in hook.event_types
                    or (hook.use_case is not None and use_case and hook.use_case != use_case)
                ):
                    continue
                job_id = self._webhook_ids.new()
                payload: Payload = {
                    "subscription_id": str(hook.id),
                    "event": {**copy.deepcopy(body), "id": str(event_id)},
                }
                new = NewJob(
                    id=job_id,
                    use_case=rules.use_case,
                    job_type=rules.job_type,
                    payload=payload,
                    priority=0,
                    run_at=now,
                    deadline=now + timedelta(seconds=rules.tolerance_seconds),
                    max_attempts=rules.max_attempts,
                    backoff=rules.backoff,
                )
                self._jobs[job_id] = _new_row(tenant, new, now)
                self._deliveries[job_id] = (hook.id, event_id, event_type)
                made += 1
        return FannedOut(events=len(taken), deliveries=made)

    # -- workflows and batches (migration 0018, docs/workflows.md) ------------------------------

    async def enqueue_graph(
        self,
        tenant: str,
        *,
        quota: int | None,
        jobs: list[NewJob],
        links: list[NewLink],
        batch: NewBatch | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> GraphResult | IdempotentReplay:
        now = self.clock.now()
        if idempotency_key is not None:
            used = self._keys.get((tenant, idempotency_key))
            if used is not None:
                stored = list(used.results) if used.results is not None else None
                return IdempotentReplay(used.request_hash, stored)
        out = self._store_graph(tenant, quota, jobs, links, batch, now)
        if idempotency_key is not None and request_hash is not None and out.refused is None:
            self._keys[(tenant, idempotency_key)] = _IdempotencyKey(
                request_hash, now, [(r.job.id if r.job else None, r.outcome) for r in out.results]
            )
        return out

    def _store_graph(
        self,
        tenant: str,
        quota: int | None,
        jobs: list[NewJob],
        links: list[NewLink],
        batch: NewBatch | None,
        now: datetime,
    ) -> GraphResult:
        results = self._enqueue(tenant, quota, jobs, now)
        created = [r.job.id for r in results if r.job and r.outcome is EnqueueOutcome.CREATED]
        refused = graph_refusal(results) or self._batch_refusal(tenant, batch, len(jobs))
        ids = [r.job.id if r.job else UUID(int=0) for r in results]
        _, parents = edge_arrays(links, ids)
        missing = sorted(
            {p for p in parents if (r := self._jobs.get(p)) is None or r.tenant != tenant}
        )
        if refused is not None or missing:
            for job_id in created:
                del self._jobs[job_id]
            if refused is not None:
                return GraphResult([], refused)
            return GraphResult([], GraphRefusal.MISSING_PARENTS, tuple(missing))
        if batch is not None:
            self._add_to_batch(tenant, batch, ids, now)
        self._link(links, ids, now)
        return GraphResult(
            [EnqueueResult(r.outcome, _job(self._jobs[r.job.id])) if r.job else r for r in results]
        )

    def _batch_refusal(self, tenant: str, batch: NewBatch | None, n: int) -> GraphRefusal | None:
        if batch is None:
            return None
        if batch.create:
            return GraphRefusal.BATCH_FULL if n > MAX_BATCH_JOBS else None
        row = self._batches.get(batch.id)
        if row is None or row.tenant != tenant:
            return GraphRefusal.BATCH_NOT_FOUND
        if row.finished_at is not None:
            return GraphRefusal.BATCH_FINISHED
        return GraphRefusal.BATCH_FULL if row.total + n > MAX_BATCH_JOBS else None

    def _add_to_batch(self, tenant: str, batch: NewBatch, ids: list[UUID], now: datetime) -> None:
        """add_batch_jobs (and create_batch)."""
        if batch.create:
            self._batches[batch.id] = _BatchRow(
                batch.id, tenant, batch if batch.callback else None, batch.callback_job_id, now
            )
        row = self._batches[batch.id]
        row.total += len(ids)
        row.remaining += len(ids)
        for job_id in ids:
            self._batch_of[job_id] = [batch.id, False]

    def _link(self, links: list[NewLink], ids: list[UUID], now: datetime) -> None:
        """jobs_link: edges and waits; children wait, or end cancelled when a parent failed."""
        for link in links:
            child = ids[link.child]
            parents = [ids[p] if isinstance(p, int) else p for p in link.parents]
            ended = {p: self._jobs[p].status in FINISHED_STATUSES for p in parents}
            self._edges[child] = ended
            for p in parents:
                self._children.setdefault(p, set()).add(child)
            failed = sum(1 for p in parents if ended[p] and not _succeeded(self._jobs[p]))
            self._waits[child] = _Wait(
                remaining=sum(1 for p in parents if not ended[p]),
                failed=failed,
                on_parent_failure=link.on_parent_failure,
                tolerance_seconds=link.tolerance_seconds,
                grace_seconds=link.grace_seconds,
            )
        doomed = []
        for link in links:
            row, wait = self._jobs[ids[link.child]], self._waits[ids[link.child]]
            if _cancels(wait):
                _cancel_for_parent(row, now)
                doomed.append(row)
            elif wait.remaining > 0:
                row.status = JobStatus.WAITING
        self._follow_ends(doomed)

    def _follow_ends(self, rows: Iterable[_Row]) -> None:
        """jobs_follow_ends: after jobs ended, their waiting children are released or cancelled
        (cancellations cascade) and their batches counted, each edge and member once."""
        queue = deque(r for r in rows if r.status in FINISHED_STATUSES)
        changed: list[UUID] = []
        released = False
        while queue:
            row = queue.popleft()
            for child_id in sorted(self._children.get(row.id, ())):
                edges = self._edges[child_id]
                if edges.get(row.id, True):
                    continue
                edges[row.id] = True
                wait = self._waits[child_id]
                wait.remaining -= 1
                wait.failed += 0 if _succeeded(row) else 1
                child = self._jobs.get(child_id)
                if child is None or child.status is not JobStatus.WAITING:
                    continue
                if _cancels(wait):
                    _cancel_for_parent(child, row.updated_at)
                    queue.append(child)
                    changed.append(child_id)
                elif wait.remaining == 0:
                    _release(child, wait, row.updated_at)
                    changed.append(child_id)
                    released = True
            self._count_in_batch(row)
        # as jobs_follow_ends: the event streams and, for released children, the scheduler
        self._announce(changed)
        if released:
            self._notify_soon(WAKEUP_CHANNEL, '{"u": []}')

    def _count_in_batch(self, row: _Row) -> None:
        member = self._batch_of.get(row.id)
        if member is None or member[1]:
            return
        member[1] = True
        batch = self._batches[member[0]]  # type: ignore[index]
        batch.remaining -= 1
        batch.ended[row.status] += 1
        if not _succeeded(row) and len(batch.failed_ids) < MAX_BATCH_FAILED_IDS:
            batch.failed_ids.append(row.id)
        if batch.remaining == 0:
            batch.finished_at = row.updated_at
            if batch.callback is not None:
                self._enqueue(
                    batch.tenant, None, [_callback_job(batch, row.updated_at)], row.updated_at
                )
            self._emit(batch.tenant, "batch_finished", None, _batch_finished(batch))

    async def get_parents(self, job_id: UUID, *, tenant: str | None) -> list[ParentResult]:
        rows = [self._jobs.get(p) for p in sorted(self._edges.get(job_id, {}))]
        return [
            ParentResult(
                id=r.id,
                job_type=r.job_type,
                status=r.status,
                result=copy.deepcopy(r.result),
                last_error=r.last_error,
            )
            for r in rows
            if r is not None and (tenant is None or r.tenant == tenant)
        ]

    async def get_job_graph(
        self, job_id: UUID, *, tenant: str | None, limit: int
    ) -> tuple[list[Job], list[JobLink], bool]:
        start = self._jobs.get(job_id)
        if start is None or (tenant is not None and start.tenant != tenant):
            return [], [], False
        seen, queue = {job_id: None}, deque([job_id])
        while queue:
            at = queue.popleft()
            for other in [*sorted(self._edges.get(at, {})), *sorted(self._children.get(at, ()))]:
                if other not in seen and other in self._jobs:
                    seen[other] = None
                    queue.append(other)
        ids = list(seen)
        picked = set(ids[:limit])
        links = [
            JobLink(parent=p, child=c)
            for c in sorted(picked)
            for p in sorted(self._edges.get(c, {}))
            if p in picked
        ]
        return [_job(self._jobs[i]) for i in ids[:limit]], links, len(ids) > limit

    async def get_batch(self, batch_id: UUID, *, tenant: str | None) -> Batch | None:
        row = self._batches.get(batch_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            return None
        finished = row.finished_at is not None
        return Batch(
            id=row.id,
            tenant=row.tenant,
            counts=BatchCounts(
                total=row.total,
                unfinished=row.remaining,
                succeeded=row.ended[JobStatus.SUCCEEDED],
                dead=row.ended[JobStatus.DEAD],
                cancelled=row.ended[JobStatus.CANCELLED],
                expired=row.ended[JobStatus.EXPIRED],
            ),
            failed_job_ids=list(row.failed_ids),
            callback_job_id=row.callback_job_id if finished and row.callback else None,
            has_callback=row.callback is not None,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )


# -- rows to our types --------------------------------------------------------------------


def _enqueue_result(
    row: _Row | None,
    new: NewJob,
    active_keys: dict[tuple[str, str | None], _Row],
    excess: set[UUID],
    matched: _Row | None,
) -> EnqueueResult:
    if row is not None:
        return EnqueueResult(EnqueueOutcome.CREATED, _job(row))
    if matched is not None:
        return EnqueueResult(EnqueueOutcome.DEDUPLICATED, _job(matched))
    duplicate = active_keys.get((new.use_case, new.dedup_key))
    if new.dedup_key is not None and duplicate is not None:
        return EnqueueResult(EnqueueOutcome.DEDUPLICATED, _job(duplicate))
    if new.id in excess:
        return EnqueueResult(EnqueueOutcome.QUOTA_EXCEEDED, None)
    # the job it duplicated is gone (over the quota in this very batch): enqueue it again
    return EnqueueResult(EnqueueOutcome.RETRY, None)


def _new_row(tenant: str, new: NewJob, now: datetime) -> _Row:
    return _Row(
        id=new.id,
        tenant=tenant,
        use_case=new.use_case,
        job_type=new.job_type,
        payload=copy.deepcopy(new.payload),
        priority=new.priority,
        run_at=new.run_at,
        deadline=new.deadline,
        max_attempts=new.max_attempts,
        backoff=new.backoff,
        dedup_key=new.dedup_key,
        trace_context=copy.deepcopy(new.trace_context),
        created_at=now,
        updated_at=now,
        unique=new.unique,
        concurrency_key=new.concurrency_key,
        rate_key=new.rate_key,
        expires_at=new.expires_at,
    )


def _job(row: _Row) -> Job:
    return Job(
        id=row.id,
        tenant=row.tenant,
        use_case=row.use_case,
        job_type=row.job_type,
        payload=copy.deepcopy(row.payload),
        status=row.status,
        priority=row.priority,
        run_at=row.run_at,
        deadline=row.deadline,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        dedup_key=row.dedup_key,
        unique=row.unique,
        concurrency_key=row.concurrency_key,
        rate_key=row.rate_key,
        result=copy.deepcopy(row.result),
        last_error=row.last_error,
        cancel_requested=row.cancel_requested,
        deadline_missed=row.deadline_missed,
        expires_at=row.expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


def _attempt_record(a: _Attempt) -> AttemptRecord:
    return AttemptRecord(
        attempt=a.attempt,
        outcome=a.outcome,
        worker_id=a.worker_id,
        dispatched_at=a.dispatched_at,
        started_at=a.started_at,
        finished_at=a.finished_at,
        error_type=a.error_type,
        error_message=a.error_message,
        traceback=a.traceback,
        deadline=a.deadline,
    )


def _running(row: _Row) -> RunningLease:
    assert row.lease_token is not None, "a running job holds a lease"
    return RunningLease(
        id=row.id,
        attempt=row.attempts,
        lease_token=row.lease_token,
        max_attempts=row.max_attempts,
        backoff=row.backoff,
        tenant=row.tenant,
        use_case=row.use_case,
    )


def _action_batch(picked: list[_Row], touched: list[_Row]) -> ActionBatch:
    return ActionBatch(
        picked=len(picked),
        touched=len(touched),
        last_id=picked[-1].id if picked else None,
        use_cases=frozenset(r.use_case for r in touched),
        ids=frozenset(r.id for r in touched),
    )


def _job_counts(key: tuple[str, str], rows: list[_Row], now: datetime) -> JobCounts:
    pending = [r for r in rows if r.status is JobStatus.PENDING]
    due = [r for r in pending if r.run_at <= now]
    return JobCounts(
        tenant=key[0],
        use_case=key[1],
        pending=len(pending),
        due=len(due),
        overdue=sum(1 for r in pending if r.deadline < now),
        running=len(rows) - len(pending),
        oldest_due_run_at=clamp_timestamp(min(r.run_at for r in due)) if due else None,
        earliest_due_deadline=clamp_timestamp(min(r.deadline for r in due)) if due else None,
    )


def _queue_depth(key: tuple[str, str], rows: list[_Row], now: datetime) -> QueueDepth:
    pending = [r for r in rows if r.status is JobStatus.PENDING]
    due = [r.run_at for r in pending if r.run_at <= now]
    return QueueDepth(
        use_case=key[0],
        tenant=key[1],
        pending=len(pending),
        due=len(due),
        running=len(rows) - len(pending),
        oldest_due_run_at=clamp_timestamp(min(due)) if due else None,
    )


def _minute_stats(key: tuple[datetime, str], rows: list[_MinuteRow]) -> MinuteStats:
    mins = [r.slack_min for r in rows if r.slack_min is not None]
    maxes = [r.slack_max for r in rows if r.slack_max is not None]
    return MinuteStats(
        minute=key[0],
        use_case=key[1],
        dispatched=sum(r.dispatched for r in rows),
        missed=sum(r.missed for r in rows),
        slack_sum=float(sum(r.slack_sum for r in rows)),
        slack_min=min(mins) if mins else None,
        slack_max=max(maxes) if maxes else None,
        succeeded=sum(r.succeeded for r in rows),
        dead=sum(r.dead for r in rows),
        cancelled=sum(r.cancelled for r in rows),
        expired=sum(r.expired for r in rows),
    )


# -- the rules the statements share -------------------------------------------------------


def _edf(row: _Row) -> tuple[int, datetime, UUID]:
    """Claim order: the highest priority class first, earliest deadline first within a class,
    then oldest (ids are UUIDv7)."""
    return (-row.priority, row.deadline, row.id)


def _within_tenant_cap(due: list[_Row], running: Counter[str], cap: int) -> list[_Row]:
    """The due jobs (in EDF order) each tenant's free share of `cap` running jobs admits."""
    taken: Counter[str] = Counter()
    out = []
    for row in due:
        if taken[row.tenant] < cap - running[row.tenant]:
            taken[row.tenant] += 1
            out.append(row)
    return out


@dataclass(frozen=True, slots=True)
class _FlowLimits:
    """claim_due_jobs_keyed's choice: the due jobs in claim order, passing over those whose
    concurrency key, rate key or tenant has nothing free; the first batch and a half of those
    (keyed_claim_window); then
    within each concurrency key's, each rate key's and each tenant's free share, in that order.
    "" is no key."""

    limit: int
    per_tenant_cap: int | None
    per_key_cap: int | None
    rate_free: Callable[[str], int]

    def admit(self, due: list[_Row], running: list[_Row]) -> tuple[list[_Row], bool]:
        """The admitted jobs, and whether the window was full."""
        by_key = Counter(r.concurrency_key or "" for r in running)
        by_tenant = Counter(r.tenant for r in running)

        def key_free(ck: str) -> int:
            if ck == "" or self.per_key_cap is None:
                return self.limit
            return max(0, self.per_key_cap - by_key[ck])

        def tenant_free(tenant: str) -> int:
            if self.per_tenant_cap is None:
                return self.limit
            return max(0, self.per_tenant_cap - by_tenant[tenant])

        unblocked = [
            row
            for row in due
            if key_free(row.concurrency_key or "") > 0
            and self.rate_free(row.rate_key or "") > 0
            and tenant_free(row.tenant) > 0
        ]
        window = keyed_claim_window(self.limit)
        picks = unblocked[:window]
        picks = _within_shares(picks, lambda r: r.concurrency_key or "", key_free)
        picks = _within_shares(picks, lambda r: r.rate_key or "", self.rate_free)
        admitted = _within_shares(picks, lambda r: r.tenant, tenant_free)
        return admitted, len(unblocked) >= window


def _succeeded(row: _Row) -> bool:
    return row.status is JobStatus.SUCCEEDED


def _cancels(wait: _Wait) -> bool:
    return wait.failed > 0 and wait.on_parent_failure is OnParentFailure.CANCEL


_PARENT_FAILED = (
    "cancelled: a job it depends on ended without succeeding (on_parent_failure cancel)"
)


def _cancel_for_parent(row: _Row, at: datetime) -> None:
    row.status = JobStatus.CANCELLED
    row.finished_at = row.updated_at = at
    row.last_error = _PARENT_FAILED


def _release(row: _Row, wait: _Wait, at: datetime) -> None:
    """A waiting job's last parent ended: pending, due and deadline counted from `at`."""
    row.status = JobStatus.PENDING
    row.run_at = max(row.run_at, at)
    if wait.tolerance_seconds is not None:
        row.deadline = _capped(row.run_at, wait.tolerance_seconds)
        grace = wait.grace_seconds
        row.expires_at = (
            None if grace is None else _capped(row.run_at, wait.tolerance_seconds + grace)
        )
    row.updated_at = at


def _capped(at: datetime, seconds: float) -> datetime:
    return at + min(timedelta(seconds=seconds), MAX_TIMESTAMP - at)


def _batch_finished(batch: _BatchRow) -> dict[str, JsonValue]:
    """The data of a batch_finished webhook event, as jobs_follow_ends (0018) writes it."""
    return {
        "batch_id": str(batch.id),
        "counts": {
            "succeeded": batch.ended[JobStatus.SUCCEEDED],
            "dead": batch.ended[JobStatus.DEAD],
            "cancelled": batch.ended[JobStatus.CANCELLED],
            "expired": batch.ended[JobStatus.EXPIRED],
        },
        "failed_job_ids": [str(i) for i in batch.failed_ids],
        "callback_job_id": str(batch.callback_job_id) if batch.callback is not None else None,
    }


def _callback_job(batch: _BatchRow, at: datetime) -> NewJob:
    """jobs_batch_callback: the batch's callback job, its payload given the outcome."""
    spec = batch.callback
    assert spec is not None and spec.callback is not None
    cb = spec.callback
    deadline = _capped(at, spec.callback_tolerance_seconds)
    grace = spec.callback_grace_seconds
    outcome: dict[str, JsonValue] = {
        "id": str(batch.id),
        "counts": {s.value: batch.ended[s] for s in _BATCH_ENDS},
        "failed_job_ids": [str(i) for i in batch.failed_ids],
        "failed_truncated": sum(batch.ended.values()) - batch.ended[JobStatus.SUCCEEDED]
        > len(batch.failed_ids),
    }
    return replace(
        cb,
        id=batch.callback_job_id,
        payload={**copy.deepcopy(cb.payload), BATCH_KEY: outcome},
        run_at=at,
        deadline=deadline,
        expires_at=None if grace is None else _capped(deadline, grace),
        dedup_key=None,
        unique=None,
    )


_BATCH_ENDS = (JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.EXPIRED)


def _within_shares(
    rows: list[_Row], key: Callable[[_Row], str], free: Callable[[str], int]
) -> list[_Row]:
    """The rows (in EDF order) each key's free share admits."""
    taken: Counter[str] = Counter()
    out = []
    for row in rows:
        k = key(row)
        if taken[k] < free(k):
            taken[k] += 1
            out.append(row)
    return out


def _expired(row: _Row, now: datetime) -> bool:
    return (
        row.status is JobStatus.RUNNING
        and row.lease_expires_at is not None
        and row.lease_expires_at < now
    )


def _cancel(row: _Row, now: datetime) -> None:
    """cancel_job: a pending (or waiting) job ends cancelled at once, a running one is
    marked."""
    if row.status in (JobStatus.PENDING, JobStatus.WAITING):
        row.status, row.finished_at = JobStatus.CANCELLED, now
    else:
        row.cancel_requested = True
    row.updated_at = now


def _record_end(
    a: _Attempt, now: datetime, *, worker_id: str | None, started_at: datetime | None
) -> None:
    a.worker_id = worker_id if worker_id is not None else a.worker_id
    a.started_at = started_at if started_at is not None else a.started_at
    a.finished_at = now


def _matches(row: _Row, flt: JobFilter, statuses: frozenset[JobStatus] | None) -> bool:
    """postgres.job_filter over one row."""
    checks: Iterable[bool] = (
        statuses is None or row.status in statuses,
        flt.job_id is None or row.id == flt.job_id,
        flt.tenant is None or row.tenant == flt.tenant,
        flt.status is None or row.status == flt.status,
        flt.use_case is None or row.use_case == flt.use_case,
        flt.job_type is None or row.job_type == flt.job_type,
        flt.dedup_key is None or row.dedup_key == flt.dedup_key,
        flt.created_after is None
        or (
            row.created_at >= flt.created_after
            and row.id >= _id_floor(flt.created_after - _ID_CLOCK_MARGIN)
        ),
        flt.created_before is None
        or (
            row.created_at < flt.created_before
            and row.id < _id_floor(flt.created_before + _ID_CLOCK_MARGIN)
        ),
        flt.before_id is None or row.id < flt.before_id,
        flt.max_id is None or row.id <= flt.max_id,
    )
    return all(checks)


def _id_floor(at: datetime) -> UUID:
    """The smallest UUIDv7 of a time (as postgres._id_floor)."""
    ms = max(0, int(at.timestamp() * 1000))
    return UUID(int=(min(ms, (1 << 48) - 1)) << 80)


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _least(a: float | None, b: float | None) -> float | None:
    """SQL's least(): NULLs ignored."""
    values = [v for v in (a, b) if v is not None]
    return min(values) if values else None


def _greatest(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return max(values) if values else None


def _deliver(sub: _MemorySubscription, payload: str) -> None:
    if sub.alive:
        sub.callback(payload)


if TYPE_CHECKING:
    from jobs_server.store.base import JobStore

    _conforms: type[JobStore] = InMemoryJobStore


def _synced(old: StoredSchedule, new: StoredSchedule) -> StoredSchedule:
    """sync_config_schedule: the new definition; the old ticks unless the cadence changed."""
    a, b = old.definition, new.definition
    same = (a.cron, a.interval_seconds, a.timezone) == (b.cron, b.interval_seconds, b.timezone)
    if not same:
        return replace(new, created_at=old.created_at, last_run_at=old.last_run_at)
    return replace(old, definition=b)


def expiry_reason(deadline: datetime, expires_at: datetime) -> str:
    """The last_error of an expired job, as expire_jobs in queries.sql writes it."""
    at = deadline.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    grace = (expires_at - deadline).total_seconds()
    return f"expired: its deadline {at} plus a grace of {grace:.15g} s passed before it could start"


def _iso_utc(at: datetime) -> str:
    """As the trigger writes it: YYYY-MM-DDTHH:MM:SS.ffffffZ."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
