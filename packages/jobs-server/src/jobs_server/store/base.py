"""The storage ports, one per role (none over about ten methods), and `JobStore`, all of them
at once: the only way the services and the scheduler reach job state."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol
from uuid import UUID

from pydantic import JsonValue

import jobs_schema
from jobs_schema import (
    AttemptOutcome,
    AttemptRecord,
    BackoffPolicy,
    Job,
    JobHead,
    JobStatus,
    LeaseRef,
    LeaseState,
    Payload,
    UniqueRule,
)
from jobs_schema.graph import OnParentFailure
from jobs_schema.workflows import Batch, JobLink, ParentResult
from jobs_server.auth import Principal
from jobs_server.clock import Clock
from jobs_server.store.webhook_port import WebhookStore

__all__ = [
    "ActionBatch",
    "ActionStore",
    "ClaimedJob",
    "DashboardSession",
    "DispatchStat",
    "DispatchStore",
    "EnqueueOutcome",
    "EnqueueResult",
    "EnqueueStore",
    "ExpireStore",
    "ExpiredJob",
    "FailedAttempt",
    "FeasibilitySnapshot",
    "FeasibilityStore",
    "FlowStore",
    "GraphRefusal",
    "GraphResult",
    "HealthStore",
    "IdempotentReplay",
    "JobCounts",
    "JobFilter",
    "JobStore",
    "LeaderLease",
    "LeaderStore",
    "LeaseStatus",
    "MinuteStats",
    "NewBatch",
    "NewJob",
    "NewLink",
    "OutcomeStore",
    "PauseChange",
    "PauseStore",
    "PendingBucket",
    "PruneStore",
    "QueryStore",
    "QueueDepth",
    "QueuePause",
    "QueueSnapshot",
    "RateBucket",
    "RateBucketSweep",
    "RetryRules",
    "RunningLease",
    "ScheduleStore",
    "ScheduleTick",
    "SchedulerPass",
    "SchedulerStatus",
    "SessionStore",
    "StatsStore",
    "StoredSchedule",
    "Subscription",
    "SucceededAttempt",
    "TickResult",
    "UseCaseLoad",
    "UseCaseRates",
    "WorkflowStore",
    "edge_arrays",
    "graph_refusal",
]


@dataclass(frozen=True, slots=True)
class NewJob:
    id: UUID
    use_case: str
    job_type: str
    payload: Payload
    priority: int
    run_at: datetime
    deadline: datetime
    max_attempts: int
    backoff: BackoffPolicy
    dedup_key: str | None = None
    trace_context: dict[str, str] | None = None
    # the rule past "while active" (its key is dedup_key); None: while active only
    unique: UniqueRule | None = None
    concurrency_key: str | None = None
    rate_key: str | None = None
    # miss policy expire: the deadline plus the grace, after which it ends expired if still
    # pending; None: it runs late
    expires_at: datetime | None = None


class EnqueueOutcome(StrEnum):
    CREATED = "created"
    DEDUPLICATED = "deduplicated"
    QUOTA_EXCEEDED = "quota_exceeded"
    # the duplicate it matched finished while we looked: enqueue it again
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    outcome: EnqueueOutcome
    job: Job | None
    # the enqueue statement NOTIFYd this created job itself (EnqueueStore.enqueue_jobs'
    # `announce`): the service sends no wake-up or event for it after the commit
    announced: bool = False


@dataclass(frozen=True, slots=True)
class IdempotentReplay:
    """The idempotency key was used before: its request hash and stored results."""

    request_hash: str
    results: list[tuple[UUID | None, EnqueueOutcome]] | None


@dataclass(frozen=True, slots=True)
class JobFilter:
    tenant: str | None = None
    status: JobStatus | None = None
    use_case: str | None = None
    job_type: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    before_id: UUID | None = None
    limit: int = 50
    dedup_key: str | None = None
    max_id: UUID | None = None  # inclusive, unlike before_id (a bulk action's upper bound)
    job_id: UUID | None = None  # this job only

    @classmethod
    def of(
        cls,
        flt: jobs_schema.JobFilter,
        *,
        before_id: UUID | None = None,
        limit: int = 50,
        max_id: UUID | None = None,
    ) -> JobFilter:
        """The API's filter (already scoped to what its caller may see) as the store's."""
        return cls(**flt.given(), before_id=before_id, limit=limit, max_id=max_id)


@dataclass(frozen=True, slots=True)
class LeaderLease:
    name: str
    holder: str
    epoch: int


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job just leased for one attempt, with what its SQS message needs."""

    id: UUID
    tenant: str
    use_case: str
    job_type: str
    payload: Payload
    attempt: int
    max_attempts: int
    lease_token: UUID
    lease_expires_at: datetime
    deadline: datetime
    run_at: datetime
    created_at: datetime
    trace_context: dict[str, str] | None
    missed_deadline: bool

    @property
    def lease(self) -> LeaseRef:
        return LeaseRef(job_id=self.id, attempt=self.attempt, lease_token=self.lease_token)


@dataclass(frozen=True, slots=True)
class RunningLease:
    """A running attempt as the retry rules need it."""

    id: UUID
    attempt: int
    lease_token: UUID
    max_attempts: int
    backoff: BackoffPolicy
    tenant: str = ""
    use_case: str = ""


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    id: UUID
    attempt: int
    lease_token: UUID
    next_status: JobStatus  # pending (retry at run_at) or dead
    run_at: datetime | None
    outcome: AttemptOutcome  # failed or lease_expired
    error_type: str
    error_message: str
    traceback: str | None = None
    worker_id: str | None = None
    started_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SucceededAttempt:
    id: UUID
    attempt: int
    lease_token: UUID
    result: JsonValue
    worker_id: str | None = None
    started_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    id: UUID
    state: LeaseState
    lease_expires_at: datetime | None


class EnqueueStore(Protocol):
    """What enqueue needs: store jobs under the quota, dedup and idempotency rules."""

    # whether enqueue_jobs can `announce` (a store with NOTIFY; the in-memory one cannot)
    announces_enqueues: bool

    async def enqueue_jobs(
        self,
        tenant: str,
        *,
        quota: int | None,
        jobs: list[NewJob],
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        announce: bool = False,
    ) -> list[EnqueueResult] | IdempotentReplay:
        """`announce` (only where `announces_enqueues`): the statement itself NOTIFYs the jobs
        it creates, the scheduler's wake-up and their ids to the event streams, and marks
        their results `announced`. The caller asks only when no other enqueue of its process
        is in flight: NOTIFY takes a lock at commit that serializes the transactions holding
        it, so concurrent enqueues leave it to one NOTIFY statement after their commits."""
        ...

    async def notify(self, channel: str, payload: str) -> None: ...

    async def notify_all(self, notes: Sequence[tuple[str, str]]) -> None:
        """Each (channel, payload) as a NOTIFY, all in one statement (delivered in order)."""
        ...


class QueryStore(Protocol):
    """Reads of jobs, for the API, the dashboard and the worker's payload fetch."""

    async def get_job(self, job_id: UUID, *, tenant: str | None) -> Job | None: ...

    async def get_jobs(self, job_ids: list[UUID]) -> list[Job]: ...

    async def get_job_heads(self, job_ids: list[UUID]) -> list[JobHead]:
        """The state of each of these jobs that exists (no payload, result or history), in
        no particular order: the event streams' one read after a change."""
        ...

    async def get_job_attempts(self, job_id: UUID) -> list[AttemptRecord]: ...

    async def list_jobs(self, flt: JobFilter) -> list[Job]: ...

    async def get_payload(self, job_id: UUID) -> Payload | None: ...


class LeaderStore(Protocol):
    """The leader lease the elector holds, and the wake-up channel it listens on."""

    async def acquire_leadership(self, name: str, holder: str, *, ttl: float) -> int | None: ...

    async def resign_leadership(self, name: str, holder: str) -> None: ...

    async def listen(self, channel: str, callback: Callable[[str], None]) -> Subscription:
        """Call `callback(payload)` for each NOTIFY on `channel`, on a connection of its own."""
        ...


class DispatchStore(Protocol):
    """What the dispatcher needs: claim due jobs EDF within capacity, give back unpublished."""

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
        rate_limit: jobs_schema.RateLimit | None = None,
    ) -> list[ClaimedJob]:
        """The jobs of paused tenants and use cases are left pending: the claim reads the
        pauses itself (PauseStore, jobs_server.pauses), so a pause holds from the first claim
        after it, with no read of its own in the pass. Also at most
        `per_key_cap` running jobs per concurrency key, and at most `rate_limit.starts` starts
        per rate key in any `rate_limit.per_seconds` (the starts recorded with the claim, in the
        same transaction)."""
        ...

    async def release_leases(self, leases: list[LeaseRef]) -> list[UUID]: ...


# How many times one keyed claim walks on past the keys its last round filled.
KEYED_CLAIM_ROUNDS = 4


def keyed_claim_window(batch: int) -> int:
    """How many unblocked due jobs a keyed claim round looks at to fill a batch after cutting
    keys to their free share: a batch and a half (queries.sql: claim_due_jobs_keyed's `due`)."""
    return batch + batch // 2


_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyedRound:
    """One round of the keyed claim: what it claimed, and whether its window
    (keyed_claim_window due jobs of unblocked keys) was full, so that more may lie beyond it."""

    claimed: list[ClaimedJob]
    saturated: bool


async def claim_rounds(
    round_: Callable[[int], Awaitable[KeyedRound]], limit: int
) -> list[ClaimedJob]:
    """The keyed claim, both stores: a round's window may fill with the jobs of a few keys that
    it then cuts to their free share; those keys are blocked in the next round, which walks past
    them. Rounds go on while one claims something, leaves room and saw more, up to
    KEYED_CLAIM_ROUNDS. A later round's failure returns what the earlier ones claimed (their
    jobs are running and must be published); the next pass meets the failure again."""
    claimed: list[ClaimedJob] = []
    for _ in range(KEYED_CLAIM_ROUNDS):
        try:
            result = await round_(limit - len(claimed))
        except Exception:
            if not claimed:
                raise
            _logger.warning("keyed claim round failed; publishing the earlier rounds' claims")
            break
        claimed.extend(result.claimed)
        if not result.claimed or not result.saturated or len(claimed) >= limit:
            break
    return claimed


@dataclass(frozen=True, slots=True)
class RateBucketSweep:
    """One step of PruneStore.prune_rate_buckets."""

    deleted: int
    last: tuple[str, str] | None  # the last row looked at; None: the sweep reached the end


@dataclass(frozen=True, slots=True)
class RateBucket:
    """One rate key's starts in the last interval, and its jobs waiting."""

    use_case: str
    rate_key: str
    starts: tuple[tuple[datetime, int], ...]  # (claimed at, starts), oldest first
    waiting: int  # pending jobs with this key that are due


class FlowStore(Protocol):
    """The flow limits' state, for the dashboard and the API."""

    async def list_rate_buckets(
        self, use_case: str, *, per_seconds: float, limit: int
    ) -> list[RateBucket]:
        """The rate keys with starts in the last `per_seconds` or due jobs, busiest first."""
        ...


class OutcomeStore(Protocol):
    """The worker path: starts, heartbeats, outcomes, and the reaper's expired leases."""

    async def complete_attempts(self, done: list[SucceededAttempt]) -> dict[UUID, JobStatus]: ...

    async def fail_attempts(
        self, failed: list[FailedAttempt], *, require_expired: bool
    ) -> dict[UUID, JobStatus]: ...

    async def find_expired_leases(self, *, limit: int) -> list[RunningLease]: ...

    async def get_leases(self, job_ids: list[UUID]) -> list[RunningLease]: ...

    async def extend_leases(
        self, leases: list[LeaseRef], *, extend_seconds: list[float]
    ) -> list[LeaseStatus]: ...

    async def mark_attempts_started(self, leases: list[LeaseRef], *, worker_id: str) -> None: ...

    async def get_lease_tenant(self, lease: LeaseRef) -> str | None:
        """The job's tenant while `lease` is its live lease (running, unexpired, not marked
        for cancellation); None otherwise."""
        ...

    async def find_cancel_requested(self, leases: list[LeaseRef]) -> list[LeaseRef]:
        """Of `leases`, those whose job is running under that very lease and marked for
        cancellation (the workers' cancellation poll; a read, it extends nothing)."""
        ...


@dataclass(frozen=True, slots=True)
class ExpiredJob:
    """A job the expirer ended `expired`."""

    id: UUID
    tenant: str
    use_case: str
    deadline: datetime
    expires_at: datetime


class ExpireStore(Protocol):
    """The expirer's: pending jobs past their `expires_at`, ended expired before a claim."""

    async def expire_jobs(self, use_cases: list[str], *, limit: int) -> list[ExpiredJob]:
        """End up to `limit` pending jobs of `use_cases` whose `expires_at` is before the
        store's now (one exactly at it is still due, not expired): status expired,
        finished_at now, last_error the reason. Rows another transaction holds are skipped."""
        ...


class ActionStore(Protocol):
    """Cancel and retry, one job or in bounded batches over a filter (jobs_server.actions)."""

    async def cancel_job(self, job_id: UUID, *, tenant: str | None) -> Job | None: ...

    async def count_jobs(
        self, flt: JobFilter, *, statuses: frozenset[JobStatus] | None = None
    ) -> tuple[int, UUID | None]:
        """How many jobs match (and have one of `statuses`), and the newest one's id."""
        ...

    async def cancel_jobs(
        self, flt: JobFilter, *, batch: int, before_id: UUID | None
    ) -> ActionBatch:
        """Cancel (pending) or mark (running) up to `batch` matching jobs below `before_id`."""
        ...

    async def retry_jobs(
        self, flt: JobFilter, *, batch: int, before_id: UUID | None, rules: RetryRules
    ) -> ActionBatch:
        """Make up to `batch` matching dead, cancelled or expired jobs below `before_id`
        pending now (an expiring job's grace kept: its new expires_at is the new deadline plus
        it)."""
        ...


class PruneStore(Protocol):
    """What the pruner deletes: finished jobs, old idempotency keys, old statistics."""

    async def prune_finished_jobs(
        self, use_case: str, *, older_than_seconds: float, limit: int
    ) -> int: ...

    async def prune_idempotency_keys(self, *, older_than_seconds: float, limit: int) -> int: ...

    async def prune_job_stats(self, *, older_than_seconds: float) -> int: ...

    async def prune_rate_buckets(
        self,
        windows: dict[str, float],
        *,
        default_window_seconds: float,
        after: tuple[str, str] | None,
        limit: int,
    ) -> RateBucketSweep:
        """One step of a sweep over the rate_buckets rows in (use case, rate key) order: the
        next `limit` rows after `after` (None: from the first) are looked at, and those whose
        newest start is at least their use case's window old (`windows`, else
        `default_window_seconds`) are deleted, so none that a claim would count. Rows a claim
        holds are left for the next sweep."""
        ...

    async def prune_pause_history(self, *, older_than_seconds: float, limit: int) -> int:
        """Of the `limit` oldest pause_history rows, delete those changed more than
        `older_than_seconds` ago (the scopes' current state, in pauses, stays)."""
        ...


class StatsStore(Protocol):
    """The dashboard's statistics and the metrics' queue depths."""

    async def record_scheduler_pass(self, name: str, info: SchedulerPass) -> None: ...

    async def refresh_job_counts(self, name: str) -> None: ...

    async def add_dispatch_stats(self, stats: list[DispatchStat]) -> None: ...

    async def roll_up_finished(
        self, name: str, *, use_cases: list[str], lag_seconds: float, max_window_seconds: float
    ) -> int: ...

    async def get_job_counts(self, *, tenant: str | None) -> list[JobCounts]: ...

    async def get_minute_stats(self, *, since: datetime, tenant: str | None) -> list[MinuteStats]:
        """Per minute and use case, summed over tenants (or of one tenant)."""
        ...

    async def get_scheduler_status(self, name: str) -> SchedulerStatus: ...

    async def count_active_jobs(self, *, tenants: list[str]) -> QueueSnapshot:
        """Pending, due and running jobs per use case, and per tenant for `tenants` (the others
        together under tenant ""), with the run_at of the oldest due job."""
        ...


class SessionStore(Protocol):
    """Dashboard logins (jobs_server.dashboard.session)."""

    async def create_dashboard_session(
        self, id_hash: bytes, *, principal: Principal, token_check: bytes, ttl_seconds: float
    ) -> None:
        """Store a login (and delete a bounded batch of expired ones)."""
        ...

    async def get_dashboard_session(self, id_hash: bytes) -> DashboardSession | None:
        """The session, unless it was deleted or has expired by the store's clock."""
        ...

    async def delete_dashboard_session(self, id_hash: bytes) -> None: ...


class PauseStore(Protocol):
    """Paused queues (jobs_server.pauses): a scope is (use_case, tenant), "" meaning every one.
    Pausing a paused scope, or resuming one that is not paused, changes nothing (changed false).
    """

    async def pause_queue(
        self, use_case: str, tenant: str, *, principal: str, reason: str | None
    ) -> PauseChange: ...

    async def resume_queue(
        self, use_case: str, tenant: str, *, principal: str, reason: str | None
    ) -> PauseChange | None:
        """None: the scope was never paused."""
        ...

    async def list_pauses(self) -> list[QueuePause]:
        """The paused scopes, by use case then tenant."""
        ...

    async def list_pause_history(self, *, limit: int) -> list[QueuePause]:
        """Every change (pause or resume), the latest first."""
        ...


class HealthStore(Protocol):
    async def ping(self) -> None: ...

    async def pending_migrations(self) -> list[int]: ...

    async def close(self) -> None: ...


class ScheduleStore(Protocol):
    """Periodic jobs: the schedules, and their ticks turned into jobs exactly once."""

    async def create_schedule(self, schedule: StoredSchedule, *, limit: int) -> NewSchedule:
        """Store an API schedule unless its tenant has one of that name, or `limit` API
        schedules already (counted under a per-tenant lock: two creations never both pass)."""
        ...

    async def sync_config_schedules(self, schedules: list[StoredSchedule]) -> None:
        """The config file's schedules, in: new ones added, changed ones replaced (their
        ticks start over from the new definition), others of the config's removed."""
        ...

    async def get_schedule(self, tenant: str, name: str) -> StoredSchedule | None: ...

    async def list_schedules(
        self, *, tenant: str | None, after: tuple[str, str] | None = None, limit: int
    ) -> list[StoredSchedule]:
        """Up to `limit` schedules (of `tenant`, or every tenant's), by (tenant, name), those
        after `after` only."""
        ...

    async def set_schedule_paused(
        self, tenant: str, name: str, *, paused: bool, next_run_at: datetime
    ) -> StoredSchedule | None: ...

    async def delete_schedule(self, tenant: str, name: str) -> bool: ...

    async def due_schedules(self, *, limit: int) -> list[StoredSchedule]:
        """Unpaused schedules whose next tick is at or before the clock's now, earliest first."""
        ...

    async def enqueue_ticks(
        self, ticks: list[ScheduleTick], *, quotas: dict[str, int | None]
    ) -> list[TickResult]:
        """Each tick's jobs stored (by enqueue_jobs' rules, under `quotas` per tenant) in the
        same transaction as its schedule's next tick moves from `expected` to `next_run_at`.
        A tick whose schedule no longer expects it (another scheduler took it, or it was paused
        or changed) stores nothing: its result has `won=False`."""
        ...


class FeasibilityStore(Protocol):
    """The pending summary and load behind deadline feasibility (jobs_server.feasibility):
    kept up to date as jobs change, never by counting over them on a request."""

    async def fold_feasibility(self, *, rebuild: bool = False) -> list[UseCaseLoad]:
        """Bring the summary up to date (the leader, about once a second); `rebuild` counts
        it afresh from the jobs. Returns each use case's load."""
        ...

    async def set_feasibility_rates(self, rates: list[UseCaseRates]) -> None: ...

    async def get_feasibility(self, use_case: str) -> FeasibilitySnapshot:
        """The use case's pending jobs by priority and deadline second (per minute past an
        hour ahead), its running jobs and the rates last measured."""
        ...


# -- workflows and batches (docs/workflows.md) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewLink:
    """A job of a graph request and its parents: each the index of a job of the same call,
    or an existing job's id (which must be the tenant's)."""

    child: int
    parents: tuple[int | UUID, ...]
    on_parent_failure: OnParentFailure = OnParentFailure.CANCEL
    # the deadline on release: released at + this; None: the job's absolute deadline stays
    tolerance_seconds: float | None = None
    grace_seconds: float | None = None  # miss policy expire: expires_at = deadline + this


@dataclass(frozen=True, slots=True)
class NewBatch:
    """A batch to create (its callback job drawn now, stored when the batch finishes), or an
    existing batch to add to (`create` false: its callback is the one it has)."""

    id: UUID
    callback_job_id: UUID
    callback: NewJob | None = None  # its run_at and deadline are made when the batch finishes
    callback_tolerance_seconds: float = 0.0
    callback_grace_seconds: float | None = None
    create: bool = True


class GraphRefusal(StrEnum):
    MISSING_PARENTS = "missing_parents"  # unknown, or another tenant's
    QUOTA_EXCEEDED = "quota_exceeded"
    RETRY = "retry"  # a duplicate finished while we looked: try the request again
    BATCH_NOT_FOUND = "batch_not_found"
    BATCH_FINISHED = "batch_finished"
    BATCH_FULL = "batch_full"


@dataclass(frozen=True, slots=True)
class GraphResult:
    """A graph call is stored whole (`results`, one per job) or not at all (`refused`)."""

    results: list[EnqueueResult]
    refused: GraphRefusal | None = None
    missing_parents: tuple[UUID, ...] = ()


def graph_refusal(results: list[EnqueueResult]) -> GraphRefusal | None:
    """Why a graph call cannot be stored whole, by its jobs' outcomes; None: it can."""
    outcomes = {r.outcome for r in results}
    if EnqueueOutcome.QUOTA_EXCEEDED in outcomes:
        return GraphRefusal.QUOTA_EXCEEDED
    if EnqueueOutcome.RETRY in outcomes:
        return GraphRefusal.RETRY
    return None


def edge_arrays(links: list[NewLink], ids: list[UUID]) -> tuple[list[UUID], list[UUID]]:
    """The links' edges as (child ids, parent ids), parents given by index resolved to the
    stored job (a deduplicated parent is the job it matched)."""
    children, parents = [], []
    for link in links:
        for p in link.parents:
            children.append(ids[link.child])
            parents.append(ids[p] if isinstance(p, int) else p)
    return children, parents


class WorkflowStore(Protocol):
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
        """In one transaction: the jobs (as enqueue_jobs), each linked job waiting for its
        parents (pending when they all ended already, cancelled when one failed and it
        cancels), and the batch made or added to; nothing stored when anything is refused
        (the idempotency key neither)."""
        ...

    async def get_parents(self, job_id: UUID, *, tenant: str | None) -> list[ParentResult]:
        """The job's parents with their results, in id order ([] for an unknown job)."""
        ...

    async def get_job_graph(
        self, job_id: UUID, *, tenant: str | None, limit: int
    ) -> tuple[list[Job], list[JobLink], bool]:
        """The jobs linked to the job (over edges either way, itself first), at most `limit`,
        the edges among them, and whether more are linked."""
        ...

    async def get_batch(self, batch_id: UUID, *, tenant: str | None) -> Batch | None: ...


class JobStore(
    EnqueueStore,
    QueryStore,
    LeaderStore,
    DispatchStore,
    FlowStore,
    OutcomeStore,
    ExpireStore,
    ActionStore,
    PruneStore,
    StatsStore,
    SessionStore,
    PauseStore,
    HealthStore,
    ScheduleStore,
    FeasibilityStore,
    WebhookStore,
    WorkflowStore,
    Protocol,
):
    """Every role at once: what one adapter (PostgreSQL, or in memory) implements. Each
    service takes only the role it uses. `clock` is the one every statement reads, which
    every service shares."""

    @property
    def clock(self) -> Clock: ...


class Subscription(Protocol):
    @property
    def alive(self) -> bool: ...

    async def close(self) -> None: ...


# -- operator actions and dashboard statistics ------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActionBatch:
    """One bounded statement of a bulk action."""

    picked: int  # matching jobs examined (and locked)
    touched: int  # changed
    last_id: UUID | None  # the oldest picked id: where the next batch starts
    use_cases: frozenset[str]  # of the touched jobs
    ids: frozenset[UUID] = frozenset()  # the touched jobs


@dataclass(frozen=True, slots=True)
class RetryRules:
    """What a retry needs from the configuration: each use case's default tolerance (the new
    deadline is now + it) and each tenant's quota of active jobs (None: unlimited)."""

    tolerances: dict[str, float]
    quotas: dict[str, int | None]
    default_quota: int | None
    default_tolerance: float = 60.0


@dataclass(frozen=True, slots=True)
class DispatchStat:
    """Jobs of one tenant and use case published within one minute."""

    minute: datetime
    use_case: str
    tenant: str
    dispatched: int
    missed: int
    slack_sum: float
    slack_min: float
    slack_max: float


@dataclass(frozen=True, slots=True)
class SchedulerPass:
    holder: str
    epoch: int | None
    last_pass_at: datetime | None
    last_pass_seconds: float
    passes: int
    dispatched: int


@dataclass(frozen=True, slots=True)
class JobCounts:
    tenant: str
    use_case: str
    pending: int
    due: int
    overdue: int
    running: int
    oldest_due_run_at: datetime | None
    earliest_due_deadline: datetime | None


@dataclass(frozen=True, slots=True)
class MinuteStats:
    minute: datetime
    use_case: str
    dispatched: int
    missed: int
    slack_sum: float
    slack_min: float | None
    slack_max: float | None
    succeeded: int
    dead: int
    cancelled: int
    expired: int = 0


@dataclass(frozen=True, slots=True)
class SchedulerStatus:
    now: datetime  # the store's clock, which every other time here is read against
    holder: str | None
    epoch: int | None
    lease_expires_at: datetime | None
    leader_since: datetime | None  # when the holder took the lease (renewals keep it)
    live: bool
    last_pass_at: datetime | None
    last_pass_seconds: float | None
    passes: int
    dispatched: int
    counts_at: datetime | None


# -- metrics ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueDepth:
    use_case: str
    tenant: str  # "" for the tenants not asked for by name
    pending: int
    due: int
    running: int
    oldest_due_run_at: datetime | None


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    measured_at: datetime  # the store's clock, which run_at is read against
    rows: list[QueueDepth]


@dataclass(frozen=True, slots=True)
class DashboardSession:
    """A dashboard login as stored: who it stands for, never the token."""

    principal: Principal
    token_check: bytes  # HMAC-SHA256(key=session id, token): the token is still configured
    expires_at: datetime


# -- pauses -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueuePause:
    """A scope's state after its last change: "" for every use case or every tenant."""

    use_case: str
    tenant: str
    paused: bool
    changed_by: str  # the principal (jobs_server.pauses.principal_name)
    changed_at: datetime  # the store's clock
    reason: str | None


@dataclass(frozen=True, slots=True)
class PauseChange:
    pause: QueuePause
    changed: bool  # False: it already was in that state


class NewSchedule(StrEnum):
    """What ScheduleStore.create_schedule did."""

    CREATED = "created"
    NAME_TAKEN = "name_taken"
    AT_LIMIT = "at_limit"


@dataclass(frozen=True, slots=True)
class StoredSchedule:
    """A `schedules` row. Interval ticks fall on `anchor_at + k * interval`."""

    tenant: str
    name: str
    source: jobs_schema.ScheduleSource
    definition: jobs_schema.ScheduleDefinition
    paused: bool
    anchor_at: datetime
    next_run_at: datetime
    created_at: datetime
    last_run_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ScheduleTick:
    """A schedule's due ticks turned into `jobs` (none when all were skipped); `ran_at`, the
    tick of the last of them, becomes the schedule's last run."""

    tenant: str
    name: str
    expected: datetime
    next_run_at: datetime
    jobs: list[NewJob]
    ran_at: datetime | None


@dataclass(frozen=True, slots=True)
class TickResult:
    """`outcomes`: one per job of the tick, in its order (none when the tick was lost). A
    created job is the tick's own (its id the NewJob's); the jobs are not read back."""

    tenant: str
    name: str
    won: bool
    outcomes: list[EnqueueOutcome]


# -- deadline feasibility ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UseCaseLoad:
    """Running jobs of a use case, and its running attempts ended (not released) so far with
    their summed time from dispatch to end: counters that only grow while the store lives."""

    use_case: str
    running: int
    finished: int
    busy_seconds: float


@dataclass(frozen=True, slots=True)
class UseCaseRates:
    use_case: str
    throughput: float | None  # attempts ended per second
    mean_duration: float | None  # seconds from dispatch to end


@dataclass(frozen=True, slots=True)
class PendingBucket:
    priority: int
    bucket: int  # floor of the deadline's epoch seconds
    n: int


@dataclass(frozen=True, slots=True)
class FeasibilitySnapshot:
    use_case: str
    running: int
    throughput: float | None
    mean_duration: float | None
    pending: tuple[PendingBucket, ...]  # by priority (highest first), then bucket
