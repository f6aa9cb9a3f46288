"""PostgresJobStore: the only module that talks to asyncpg. Records become our types here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
from pydantic import JsonValue, TypeAdapter

from jobs_schema import (
    AttemptOutcome,
    AttemptRecord,
    BackoffPolicy,
    Job,
    JobHead,
    JobStatus,
    LeaseRef,
    LeaseState,
    MissedTickPolicy,
    Payload,
    RateLimit,
    ScheduleDefinition,
    ScheduleSource,
    UniqueRule,
)
from jobs_schema.limits import clamp_timestamp
from jobs_schema.webhooks import WebhookTarget
from jobs_schema.workflows import MAX_BATCH_JOBS, Batch, BatchCounts, JobLink, ParentResult
from jobs_server.auth import Principal, Role
from jobs_server.clock import Clock, DatabaseClock
from jobs_server.errors import StoreUnavailable
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
)
from jobs_server.store.migrations import applied_versions, available_migrations
from jobs_server.store.webhook_port import FannedOut, FanOutRules, StoredDelivery, StoredWebhook

__all__ = ["PostgresJobStore", "load_queries"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"/\*include (\w+)\*/")

# Errors that mean "the database is not there right now", as opposed to a bug in a query.
_UNAVAILABLE = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionFailureError,
)


_FEASIBILITY_OFF = {"jobs.feasibility": "off"}
_EVENTS_OFF = {"jobs.events": "off"}  # jobs_notify_ids sends nothing (migration 0024)
# get_feasibility: deadlines up to this far ahead per second, later ones per minute.
_FEASIBILITY_FINE_SECONDS = 3600

# Seconds between tries to read a DatabaseClock that has never been read.
_FIRST_SYNC_RETRY = 1.0


def load_queries() -> dict[str, str]:
    """The named blocks of queries.sql, each `/*include name*/` in them replaced by the block
    of that name (a part several statements share)."""
    text = resources.files("jobs_server.store").joinpath("queries.sql").read_text()
    parts = _NAME.split(text)
    blocks = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    return {name: _INCLUDE.sub(lambda m: blocks[m[1]], body) for name, body in blocks.items()}


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _UNAVAILABLE):
        return True
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        return True  # the protocol state broke with the connection under it
    # asyncpg says "connection is closed" / "pool is closing" as an InterfaceError
    return isinstance(exc, asyncpg.exceptions.InterfaceError) and (
        "closed" in str(exc) or "closing" in str(exc)
    )


# json.dumps(value, separators=...) builds an encoder on every call, and json.loads of bytes
# first detects their encoding; these are the same encoder and decoder, built once.
_to_json = json.JSONEncoder(separators=(",", ":")).encode
_from_json = json.JSONDecoder().decode


def _encode_jsonb(value: Any) -> bytes:
    return b"\x01" + _to_json(value).encode()


def _decode_jsonb(data: bytes) -> Any:
    # jsonb's binary form is a version byte and UTF-8 text; decoding it ourselves halves the
    # cost of a small payload (every claimed job's) against json.loads of the bytes
    return _from_json(data[1:].decode())


async def _no_reset(conn: asyncpg.Connection) -> None:
    """No session state is ever left on a pooled connection (no SET, LISTEN or session
    advisory lock; settings are fixed at connect), so asyncpg's reset round trip is skipped."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    # binary, so that jsonb inside composite rows (`SELECT j FROM jobs j`) decodes too
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def _job(rec: Any) -> Job:
    """A `jobs` row (a record or a composite) as the API model."""
    return Job(
        id=rec["id"],
        tenant=rec["tenant"],
        use_case=rec["use_case"],
        job_type=rec["job_type"],
        payload=rec["payload"],
        status=JobStatus(rec["status"]),
        priority=rec["priority"],
        run_at=rec["run_at"],
        deadline=rec["deadline"],
        attempts=rec["attempts"],
        max_attempts=rec["max_attempts"],
        dedup_key=rec["dedup_key"],
        unique=_unique(rec["dedup_key"], rec["unique_rule"]),
        concurrency_key=rec["concurrency_key"],
        rate_key=rec["rate_key"],
        result=rec["result"],
        last_error=rec["last_error"],
        cancel_requested=rec["cancel_requested"],
        deadline_missed=rec["deadline_missed"],
        expires_at=rec["expires_at"],
        created_at=rec["created_at"],
        updated_at=rec["updated_at"],
        finished_at=rec["finished_at"],
    )


class PostgresJobStore:
    """A JobStore over an asyncpg pool. Build it with `await PostgresJobStore.connect(url)`."""

    announces_enqueues = True  # enqueue_jobs(announce=True): NOTIFY in the statement

    def __init__(
        self, pool: asyncpg.Pool, queries: dict[str, str], *, dsn: str, clock: Clock | None = None
    ) -> None:
        self._pool = pool
        self._q = queries
        self._dsn = dsn
        self.clock: Clock = clock or DatabaseClock()
        self._resync: asyncio.Task[None] | None = None
        self._definitions: dict[tuple[Any, ...], ScheduleDefinition] = {}

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        clock: Clock | None = None,
        feasibility: bool = True,
        events: bool = True,
    ) -> PostgresJobStore:
        """Open a pool. An unreachable database raises StoreUnavailable naming the cause.
        `feasibility=False` makes this pool's statements skip the feasibility triggers
        (migration 0012); `events=False`, the NOTIFYs to the event streams that statements
        and triggers send themselves (claims, a parent's end: migration 0024)."""
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout,
                command_timeout=60,
                init=_init_connection,
                reset=_no_reset,
                # JIT compiles for hundreds of ms when estimates are large (skip scans, laterals);
                # every query here is short OLTP work where it only ever costs.
                server_settings={"jit": "off"}
                | ({} if feasibility else _FEASIBILITY_OFF)
                | ({} if events else _EVENTS_OFF),
            )
        except (*_UNAVAILABLE, asyncpg.exceptions.InvalidCatalogNameError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        assert pool is not None
        store = cls(pool, load_queries(), dsn=dsn, clock=clock)
        try:
            await store._start_clock()
        except BaseException:
            await pool.close()
            raise
        return store

    async def _start_clock(self) -> None:
        """A DatabaseClock reads this database: once now, then every RESYNC_SECONDS in the
        background, so that no statement waits for a reading. A database that is down at
        connect (a pool of min_size 0 opens without it) is read once it answers."""
        if not isinstance(self.clock, DatabaseClock):
            return
        self.clock.bind(self._read_clock)
        try:
            await self.clock.sync()
        except StoreUnavailable:
            logger.warning("database clock not read at connect; retrying in the background")
        self._resync = asyncio.create_task(self._keep_clock(self.clock), name="jobs-clock-resync")

    async def _read_clock(self) -> datetime:
        now: datetime = await self._run(lambda c: c.fetchval(self._q["read_clock"]))
        return now

    async def _keep_clock(self, clock: DatabaseClock) -> None:
        while True:
            await asyncio.sleep(clock.RESYNC_SECONDS if clock.synced else _FIRST_SYNC_RETRY)
            try:
                await clock.sync()
            except Exception:
                # carried forward on the monotonic clock meanwhile; the next round tries again
                logger.warning("database clock not read", exc_info=True)

    async def close(self) -> None:
        if self._resync is not None:
            self._resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync
            self._resync = None
        await self._pool.close()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self._pool.acquire() as conn:
                try:
                    yield conn
                except Exception as exc:
                    if _is_unavailable(exc):
                        # never hand a broken connection to the next caller (asyncpg may have
                        # taken it back already)
                        with contextlib.suppress(asyncpg.exceptions.InterfaceError):
                            conn.terminate()
                    raise
        except Exception as exc:
            if _is_unavailable(exc):
                raise StoreUnavailable(f"PostgreSQL is unavailable: {exc}") from exc
            raise

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with self._conn() as conn:
            return await fn(conn)

    # -- producer path ---------------------------------------------------------------------

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
        # JSON as text (see enqueue_jobs in queries.sql): the jsonb codec builds a json encoder
        # per value.
        now = self.clock.now()
        args = (*_enqueue_args(tenant, quota, jobs, now), idempotency_key, request_hash, announce)
        async with self._conn() as conn:
            try:
                rows = await conn.fetch(self._q["enqueue_jobs"], *args)
            except asyncpg.UniqueViolationError as exc:
                if idempotency_key is None or exc.table_name != "idempotency_keys":
                    raise
                rows = []  # a request with the same key stored first: answer from its outcomes
            if idempotency_key is not None and not rows and jobs:
                rec = await conn.fetchrow(self._q["get_idempotency_key"], tenant, idempotency_key)
                return _replay(rec)
            return _enqueue_results(rows)

    async def get_job(self, job_id: UUID, *, tenant: str | None) -> Job | None:
        rec = await self._run(lambda c: c.fetchval(self._q["get_job"], job_id, tenant))
        return _job(rec) if rec is not None else None

    async def get_jobs(self, job_ids: list[UUID]) -> list[Job]:
        rows = await self._run(lambda c: c.fetch(self._q["get_jobs"], job_ids))
        return [_job(r["j"]) for r in rows]

    async def get_job_heads(self, job_ids: list[UUID]) -> list[JobHead]:
        rows = await self._run(lambda c: c.fetch(self._q["get_job_heads"], job_ids))
        return [JobHead.model_validate(dict(r)) for r in rows]

    async def get_job_attempts(self, job_id: UUID) -> list[AttemptRecord]:
        rows = await self._run(lambda c: c.fetch(self._q["get_job_attempts"], job_id))
        return [
            AttemptRecord(
                attempt=r["attempt"],
                outcome=AttemptOutcome(r["outcome"]),
                worker_id=r["worker_id"],
                dispatched_at=r["dispatched_at"],
                started_at=r["started_at"],
                finished_at=r["finished_at"],
                error_type=r["error_type"],
                error_message=r["error_message"],
                traceback=r["traceback"],
                deadline=r["deadline"],
            )
            for r in rows
        ]

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        args: list[Any] = [flt.limit]
        q = _filtered(self._q["list_jobs"], flt, args)
        rows = await self._run(lambda c: c.fetch(q, *args))
        return [_job(r["j"]) for r in rows]

    async def cancel_job(self, job_id: UUID, *, tenant: str | None) -> Job | None:
        q, now = self._q["cancel_job"], self.clock.now()
        rec = await self._run(lambda c: c.fetchval(q, job_id, tenant, now))
        return _job(rec) if rec is not None else None

    async def ping(self) -> None:
        await self._run(lambda c: c.fetchval(self._q["ping"]))

    async def pending_migrations(self) -> list[int]:
        """Versions this code has that the database does not (readiness)."""
        applied = await self._run(applied_versions)
        return [m.version for m in available_migrations() if m.version not in applied]

    # -- scheduler and worker path ----------------------------------------------------------

    async def acquire_leadership(self, name: str, holder: str, *, ttl: float) -> int | None:
        q = self._q["acquire_leadership"]
        epoch = await self._run(lambda c: c.fetchval(q, name, holder, ttl, self.clock.now()))
        return int(epoch) if epoch is not None else None

    async def resign_leadership(self, name: str, holder: str) -> None:
        q, now = self._q["resign_leadership"], self.clock.now()
        await self._run(lambda c: c.execute(q, name, holder, now))

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
        def head(batch: int) -> tuple[Any, ...]:
            return (
                use_case,
                capacity,
                batch,
                lease_seconds,
                leader.name,
                leader.holder,
                leader.epoch,
                self.clock.now(),
            )

        if per_key_cap is not None or rate_limit is not None:
            keys = (
                per_tenant_cap,
                per_key_cap,
                rate_limit.starts if rate_limit else None,
                rate_limit.per_seconds if rate_limit else None,
            )
            return await claim_rounds(lambda batch: self._claim_keyed((*head(batch), *keys)), limit)
        if per_tenant_cap is None:
            q, args = self._q["claim_due_jobs"], head(limit)
        else:
            q, args = self._q["claim_due_jobs_fair"], (*head(limit), per_tenant_cap)
        rows = await self._run(lambda c: c.fetch(q, *args))
        return [_claimed(r) for r in rows]

    async def _claim_keyed(self, args: tuple[Any, ...]) -> KeyedRound:
        q = self._q["claim_due_jobs_keyed"]
        rows = await self._run(lambda c: c.fetch(q, *args))
        return KeyedRound([_claimed(r) for r in rows], bool(rows) and rows[0]["saturated"])

    async def list_rate_buckets(
        self, use_case: str, *, per_seconds: float, limit: int
    ) -> list[RateBucket]:
        q = self._q["list_rate_buckets"]
        now = self.clock.now()
        rows = await self._run(lambda c: c.fetch(q, use_case, per_seconds, limit, now))
        return [
            RateBucket(
                use_case=use_case,
                rate_key=r["rate_key"],
                starts=tuple(zip(r["starts_at"], r["starts"], strict=True)),
                waiting=r["waiting"],
            )
            for r in rows
        ]

    async def release_leases(self, leases: list[LeaseRef]) -> list[UUID]:
        if not leases:
            return []
        q = self._q["release_leases"]
        now = self.clock.now()
        rows = await self._run(lambda c: c.fetch(q, *_lease_arrays(leases), now))
        return [r["id"] for r in rows]

    async def complete_attempts(self, done: list[SucceededAttempt]) -> dict[UUID, JobStatus]:
        if not done:
            return {}
        args = (
            [d.id for d in done],
            [d.attempt for d in done],
            [d.lease_token for d in done],
            [None if d.result is None else _to_json(d.result) for d in done],
            [d.worker_id for d in done],
            [d.started_at for d in done],
            self.clock.now(),
        )
        rows = await self._run(lambda c: c.fetch(self._q["complete_attempts"], *args))
        return {r["id"]: JobStatus(r["status"]) for r in rows}

    async def fail_attempts(
        self, failed: list[FailedAttempt], *, require_expired: bool
    ) -> dict[UUID, JobStatus]:
        if not failed:
            return {}
        args = (
            [f.id for f in failed],
            [f.attempt for f in failed],
            [f.lease_token for f in failed],
            [f.next_status.value for f in failed],
            [f.run_at for f in failed],
            [f.error_type for f in failed],
            [f.error_message for f in failed],
            [f.traceback for f in failed],
            [f.worker_id for f in failed],
            require_expired,
            [f.outcome.value for f in failed],
            [f.started_at for f in failed],
            self.clock.now(),
        )
        rows = await self._run(lambda c: c.fetch(self._q["fail_attempts"], *args))
        return {r["id"]: JobStatus(r["status"]) for r in rows}

    async def expire_jobs(self, use_cases: list[str], *, limit: int) -> list[ExpiredJob]:
        q, now = self._q["expire_jobs"], self.clock.now()
        rows = await self._run(lambda c: c.fetch(q, use_cases, limit, now))
        return [
            ExpiredJob(
                id=r["id"],
                tenant=r["tenant"],
                use_case=r["use_case"],
                deadline=r["deadline"],
                expires_at=r["expires_at"],
            )
            for r in rows
        ]

    async def find_expired_leases(self, *, limit: int) -> list[RunningLease]:
        q, now = self._q["find_expired_leases"], self.clock.now()
        rows = await self._run(lambda c: c.fetch(q, limit, now))
        return [_running(r) for r in rows]

    async def get_leases(self, job_ids: list[UUID]) -> list[RunningLease]:
        rows = await self._run(lambda c: c.fetch(self._q["get_leases"], job_ids))
        return [_running(r) for r in rows]

    async def extend_leases(
        self, leases: list[LeaseRef], *, extend_seconds: list[float]
    ) -> list[LeaseStatus]:
        q = self._q["extend_leases"]
        now = self.clock.now()
        rows = await self._run(lambda c: c.fetch(q, *_lease_arrays(leases), extend_seconds, now))
        return [
            LeaseStatus(
                id=r["id"],
                state=LeaseState.LOST
                if r["lease_expires_at"] is None
                else LeaseState.CANCELLED
                if r["cancel_requested"]
                else LeaseState.HELD,
                lease_expires_at=r["lease_expires_at"],
            )
            for r in rows
        ]

    async def find_cancel_requested(self, leases: list[LeaseRef]) -> list[LeaseRef]:
        if not leases:
            return []
        q = self._q["find_cancel_requested"]
        rows = await self._run(lambda c: c.fetch(q, *_lease_arrays(leases)))
        return [
            LeaseRef(job_id=r["id"], attempt=r["attempts"], lease_token=r["lease_token"])
            for r in rows
        ]

    async def mark_attempts_started(self, leases: list[LeaseRef], *, worker_id: str) -> None:
        if not leases:
            return
        ids, attempts, _ = _lease_arrays(leases)
        q = self._q["mark_attempts_started"]
        now = self.clock.now()
        await self._run(lambda c: c.execute(q, ids, attempts, worker_id, now))

    async def get_payload(self, job_id: UUID) -> Payload | None:
        payload: Payload | None = await self._run(
            lambda c: c.fetchval(self._q["get_payload"], job_id)
        )
        return payload

    async def get_lease_tenant(self, lease: LeaseRef) -> str | None:
        q, now = self._q["get_lease_tenant"], self.clock.now()
        tenant: str | None = await self._run(
            lambda c: c.fetchval(q, lease.job_id, lease.attempt, lease.lease_token, now)
        )
        return tenant

    async def prune_finished_jobs(
        self, use_case: str, *, older_than_seconds: float, limit: int
    ) -> int:
        q, now = self._q["prune_finished_jobs"], self.clock.now()
        status = await self._run(lambda c: c.execute(q, use_case, older_than_seconds, limit, now))
        return int(status.split()[-1])

    async def prune_idempotency_keys(self, *, older_than_seconds: float, limit: int) -> int:
        q, now = self._q["prune_idempotency_keys"], self.clock.now()
        status = await self._run(lambda c: c.execute(q, older_than_seconds, limit, now))
        return int(status.split()[-1])

    async def prune_rate_buckets(
        self,
        windows: dict[str, float],
        *,
        default_window_seconds: float,
        after: tuple[str, str] | None,
        limit: int,
    ) -> RateBucketSweep:
        q, now = self._q["prune_rate_buckets"], self.clock.now()
        first, second = after if after is not None else (None, None)
        args = (first, second, limit, list(windows), list(windows.values()))
        rec = await self._run(lambda c: c.fetchrow(q, *args, default_window_seconds, now))
        last = (rec["use_case"], rec["rate_key"]) if rec["scanned"] == limit else None
        return RateBucketSweep(deleted=rec["deleted"], last=last)

    async def prune_pause_history(self, *, older_than_seconds: float, limit: int) -> int:
        q, now = self._q["prune_pause_history"], self.clock.now()
        status = await self._run(lambda c: c.execute(q, older_than_seconds, limit, now))
        return int(status.split()[-1])

    async def notify(self, channel: str, payload: str) -> None:
        await self._run(lambda c: c.execute(self._q["notify"], channel, payload))

    async def notify_all(self, notes: Sequence[tuple[str, str]]) -> None:
        channels, payloads = [c for c, _ in notes], [p for _, p in notes]
        await self._run(lambda c: c.fetchval(self._q["notify_all"], channels, payloads))

    async def listen(self, channel: str, callback: Callable[[str], None]) -> _PgSubscription:
        try:
            conn = await asyncpg.connect(self._dsn, timeout=5, server_settings={"jit": "off"})
            await conn.add_listener(channel, lambda *args: callback(args[-1]))
        except Exception as exc:
            if _is_unavailable(exc):
                raise StoreUnavailable(f"cannot LISTEN: {exc}") from exc
            raise
        return _PgSubscription(conn)

    # -- operator actions --------------------------------------------------------------------

    async def count_jobs(
        self, flt: JobFilter, *, statuses: frozenset[JobStatus] | None = None
    ) -> tuple[int, UUID | None]:
        args: list[Any] = []
        q = _filtered(self._q["count_jobs"], flt, args, statuses=statuses)
        rec = await self._run(lambda c: c.fetchrow(q, *args))
        return int(rec["n"]), rec["max_id"]

    async def cancel_jobs(
        self, flt: JobFilter, *, batch: int, before_id: UUID | None
    ) -> ActionBatch:
        args: list[Any] = [batch, before_id, self.clock.now()]
        q = _filtered(self._q["cancel_jobs"], flt, args)
        return _action_batch(await self._retrying(q, args))

    async def retry_jobs(
        self, flt: JobFilter, *, batch: int, before_id: UUID | None, rules: RetryRules
    ) -> ActionBatch:
        args: list[Any] = [
            batch,
            before_id,
            list(rules.tolerances),
            list(rules.tolerances.values()),
            list(rules.quotas),
            list(rules.quotas.values()),
            rules.default_quota,
            rules.default_tolerance,
            self.clock.now(),
        ]
        q = _filtered(self._q["retry_jobs"], flt, args)
        return _action_batch(await self._retrying(q, args))

    async def _retrying(self, q: str, args: list[Any]) -> Any:
        """A bulk statement locks many rows and waits for them: a deadlock with a concurrent
        report, or a dedup key an enqueue took meanwhile, fails it as a whole; run it again."""
        for attempt in range(3):
            try:
                return await self._run(lambda c: c.fetchrow(q, *args))
            except (
                asyncpg.exceptions.DeadlockDetectedError,
                asyncpg.exceptions.UniqueViolationError,
            ):
                if attempt == 2:
                    raise
                logger.info("bulk action batch retried", extra={"attempt": attempt + 1})
        raise AssertionError("unreachable")

    # -- dashboard statistics ----------------------------------------------------------------

    async def record_scheduler_pass(self, name: str, info: SchedulerPass) -> None:
        args = (
            name,
            info.holder,
            info.epoch,
            info.last_pass_at,
            info.last_pass_seconds,
            info.passes,
            info.dispatched,
            self.clock.now(),
        )
        await self._run(lambda c: c.execute(self._q["record_scheduler_pass"], *args))

    async def refresh_job_counts(self, name: str) -> None:
        q, now = self._q["refresh_job_counts"], self.clock.now()
        await self._run(lambda c: c.execute(q, name, now))

    async def add_dispatch_stats(self, stats: list[DispatchStat]) -> None:
        if not stats:
            return
        args = (
            [s.minute for s in stats],
            [s.use_case for s in stats],
            [s.tenant for s in stats],
            [s.dispatched for s in stats],
            [s.missed for s in stats],
            [s.slack_sum for s in stats],
            [s.slack_min for s in stats],
            [s.slack_max for s in stats],
        )
        await self._run(lambda c: c.execute(self._q["add_dispatch_stats"], *args))

    async def roll_up_finished(
        self, name: str, *, use_cases: list[str], lag_seconds: float, max_window_seconds: float
    ) -> int:
        q, now = self._q["roll_up_finished"], self.clock.now()
        async with self._conn() as conn, conn.transaction():
            await conn.execute(self._q["ensure_scheduler_status"], name, now)
            n = await conn.fetchval(q, name, use_cases, lag_seconds, max_window_seconds, now)
        return int(n)

    async def prune_job_stats(self, *, older_than_seconds: float) -> int:
        q, now = self._q["prune_job_stats"], self.clock.now()
        status = await self._run(lambda c: c.execute(q, older_than_seconds, now))
        return int(status.split()[-1])

    async def get_job_counts(self, *, tenant: str | None) -> list[JobCounts]:
        rows = await self._run(lambda c: c.fetch(self._q["get_job_counts"], tenant))
        return [
            JobCounts(
                **{
                    **dict(r),
                    "oldest_due_run_at": _clamped(r["oldest_due_run_at"]),
                    "earliest_due_deadline": _clamped(r["earliest_due_deadline"]),
                }
            )
            for r in rows
        ]

    async def get_minute_stats(self, *, since: datetime, tenant: str | None) -> list[MinuteStats]:
        rows = await self._run(lambda c: c.fetch(self._q["get_minute_stats"], since, tenant))
        return [
            MinuteStats(
                minute=r["minute"],
                use_case=r["use_case"],
                dispatched=int(r["dispatched"]),
                missed=int(r["missed"]),
                slack_sum=float(r["slack_sum"]),
                slack_min=r["slack_min"],
                slack_max=r["slack_max"],
                succeeded=int(r["succeeded"]),
                dead=int(r["dead"]),
                cancelled=int(r["cancelled"]),
                expired=int(r["expired"]),
            )
            for r in rows
        ]

    async def get_scheduler_status(self, name: str) -> SchedulerStatus:
        q, now = self._q["get_scheduler_status"], self.clock.now()
        r = await self._run(lambda c: c.fetchrow(q, name, now))
        return SchedulerStatus(
            now=r["now"],
            holder=r["holder"],
            epoch=r["epoch"],
            lease_expires_at=r["expires_at"],
            leader_since=r["leader_since"],
            live=r["live"],
            last_pass_at=r["last_pass_at"],
            last_pass_seconds=r["last_pass_seconds"],
            passes=int(r["passes"]),
            dispatched=int(r["dispatched"]),
            counts_at=r["counts_at"],
        )

    # -- metrics ---------------------------------------------------------------------------

    async def count_active_jobs(self, *, tenants: list[str]) -> QueueSnapshot:
        q, now = self._q["count_active_jobs"], self.clock.now()
        rows = await self._run(lambda c: c.fetch(q, tenants, now))
        return QueueSnapshot(
            measured_at=now,
            rows=[
                QueueDepth(
                    use_case=r["use_case"],
                    tenant=r["tenant"],
                    pending=int(r["pending"]),
                    due=int(r["due"]),
                    running=int(r["running"]),
                    oldest_due_run_at=_clamped(r["oldest_due_run_at"]),
                )
                for r in rows
            ],
        )

    # -- deadline feasibility ----------------------------------------------------------------

    async def fold_feasibility(self, *, rebuild: bool = False) -> list[UseCaseLoad]:
        q = self._q
        async with self._conn() as conn:
            if rebuild:
                async with conn.transaction(isolation="repeatable_read"):
                    await conn.execute(q["rebuild_feasibility"])
                    await conn.execute(q["rebuild_feasibility_pending"])
            else:
                async with conn.transaction():
                    await conn.execute(q["fold_feasibility_pending"])
                    await conn.execute(q["drop_empty_feasibility_buckets"])
                    await conn.execute(q["fold_feasibility_load"])
            rows = await conn.fetch(q["get_feasibility_loads"])
        return [
            UseCaseLoad(
                use_case=r["use_case"],
                running=int(r["running"]),
                finished=int(r["finished"]),
                busy_seconds=float(r["busy_seconds"]),
            )
            for r in rows
        ]

    async def set_feasibility_rates(self, rates: list[UseCaseRates]) -> None:
        if not rates:
            return
        args = (
            [r.use_case for r in rates],
            [r.throughput for r in rates],
            [r.mean_duration for r in rates],
            self.clock.now(),
        )
        await self._run(lambda c: c.execute(self._q["set_feasibility_rates"], *args))

    async def get_feasibility(self, use_case: str) -> FeasibilitySnapshot:
        fine_until = int(self.clock.now().timestamp()) + _FEASIBILITY_FINE_SECONDS
        async with self._conn() as conn:
            load = await conn.fetchrow(self._q["get_feasibility_load"], use_case)
            rows = await conn.fetch(self._q["get_feasibility_pending"], use_case, fine_until)
        return FeasibilitySnapshot(
            use_case=use_case,
            running=max(0, int(load["running"])) if load else 0,
            throughput=load["throughput"] if load else None,
            mean_duration=load["mean_duration"] if load else None,
            pending=tuple(
                PendingBucket(priority=r["priority"], bucket=int(r["bucket"]), n=int(r["n"]))
                for r in rows
                if r["n"] > 0
            ),
        )

    # -- dashboard sessions ------------------------------------------------------------------

    async def create_dashboard_session(
        self, id_hash: bytes, *, principal: Principal, token_check: bytes, ttl_seconds: float
    ) -> None:
        args = (
            id_hash,
            principal.role.value,
            principal.tenant,
            token_check,
            ttl_seconds,
            self.clock.now(),
        )
        await self._run(lambda c: c.execute(self._q["create_dashboard_session"], *args))

    async def get_dashboard_session(self, id_hash: bytes) -> DashboardSession | None:
        q, now = self._q["get_dashboard_session"], self.clock.now()
        r = await self._run(lambda c: c.fetchrow(q, id_hash, now))
        if r is None:
            return None
        return DashboardSession(
            principal=Principal(Role(r["role"]), r["tenant"]),
            token_check=bytes(r["token_check"]),
            expires_at=r["expires_at"],
        )

    async def delete_dashboard_session(self, id_hash: bytes) -> None:
        await self._run(lambda c: c.execute(self._q["delete_dashboard_session"], id_hash))

    # -- pauses ----------------------------------------------------------------------------

    async def pause_queue(
        self, use_case: str, tenant: str, *, principal: str, reason: str | None
    ) -> PauseChange:
        # no row only when a concurrent pause inserted it after the statement's snapshot
        for _ in range(2):
            change = await self._change_pause("pause_queue", use_case, tenant, principal, reason)
            if change is not None:
                return change
        raise StoreUnavailable("pause_queue returned no row twice")

    async def resume_queue(
        self, use_case: str, tenant: str, *, principal: str, reason: str | None
    ) -> PauseChange | None:
        return await self._change_pause("resume_queue", use_case, tenant, principal, reason)

    async def _change_pause(
        self, name: str, use_case: str, tenant: str, principal: str, reason: str | None
    ) -> PauseChange | None:
        q, now = self._q[name], self.clock.now()
        r = await self._run(lambda c: c.fetchrow(q, use_case, tenant, principal, reason, now))
        return PauseChange(_pause(r), changed=r["changed"]) if r is not None else None

    async def list_pauses(self) -> list[QueuePause]:
        rows = await self._run(lambda c: c.fetch(self._q["list_pauses"]))
        return [_pause(r) for r in rows]

    async def list_pause_history(self, *, limit: int) -> list[QueuePause]:
        q = self._q["list_pause_history"]
        rows = await self._run(lambda c: c.fetch(q, limit))
        return [_pause(r) for r in rows]

    # -- periodic jobs ---------------------------------------------------------------------

    async def create_schedule(self, schedule: StoredSchedule, *, limit: int) -> NewSchedule:
        s = schedule
        args = (s.tenant, s.name, s.source.value, *_definition_args(s.definition), s.paused)
        times = (s.anchor_at, s.next_run_at, s.created_at, s.definition.dedup_key)
        async with self._conn() as conn, conn.transaction():
            await conn.execute(self._q["lock_tenant_schedules"], s.tenant)
            if await conn.fetchval(self._q["count_api_schedules"], s.tenant) >= limit:
                return NewSchedule.AT_LIMIT
            done = await conn.fetchval(self._q["create_schedule"], *args, *times)
        return NewSchedule.CREATED if done else NewSchedule.NAME_TAKEN

    async def sync_config_schedules(self, schedules: list[StoredSchedule]) -> None:
        rows = [
            (
                s.tenant,
                s.name,
                *_definition_args(s.definition),
                s.anchor_at,
                s.next_run_at,
                s.definition.dedup_key,
            )
            for s in schedules
        ]
        async with self._conn() as conn, conn.transaction():
            await conn.execute(
                self._q["delete_config_schedules"],
                [s.tenant for s in schedules],
                [s.name for s in schedules],
            )
            if rows:
                await conn.executemany(self._q["sync_config_schedule"], rows)

    async def get_schedule(self, tenant: str, name: str) -> StoredSchedule | None:
        rec = await self._run(lambda c: c.fetchrow(self._q["get_schedule"], tenant, name))
        return self._schedule(rec) if rec is not None else None

    async def list_schedules(
        self, *, tenant: str | None, after: tuple[str, str] | None = None, limit: int
    ) -> list[StoredSchedule]:
        a_tenant, a_name = after or (None, None)
        q = self._q["list_schedules"]
        rows = await self._run(lambda c: c.fetch(q, tenant, a_tenant, a_name, limit))
        return [self._schedule(r) for r in rows]

    async def set_schedule_paused(
        self, tenant: str, name: str, *, paused: bool, next_run_at: datetime
    ) -> StoredSchedule | None:
        q = self._q["set_schedule_paused"]
        rec = await self._run(lambda c: c.fetchrow(q, tenant, name, paused, next_run_at))
        return self._schedule(rec) if rec is not None else None

    async def delete_schedule(self, tenant: str, name: str) -> bool:
        done = await self._run(lambda c: c.fetchval(self._q["delete_schedule"], tenant, name))
        return bool(done)

    def _schedule(self, r: Any) -> StoredSchedule:
        # The same columns make the same definition, kept (a pass of periodic jobs reads the
        # same schedules again and again; building one is most of a row's cost, and the
        # definition, frozen, can be shared).
        key = (
            r["cron"],
            r["interval_seconds"],
            r["timezone"],
            r["use_case"],
            r["job_type"],
            r["payload"],
            r["delay_tolerance_seconds"],
            r["priority"],
            r["missed"],
            r["dedup_key"],
        )
        definition = self._definitions.get(key)
        if definition is None:
            if len(self._definitions) >= _DEFINITIONS:
                self._definitions.clear()
            definition = self._definitions[key] = _definition(r)
        return StoredSchedule(
            tenant=r["tenant"],
            name=r["name"],
            source=_SOURCES[r["source"]],
            definition=definition,
            paused=r["paused"],
            anchor_at=r["anchor_at"],
            next_run_at=r["next_run_at"],
            created_at=r["created_at"],
            last_run_at=r["last_run_at"],
        )

    async def due_schedules(self, *, limit: int) -> list[StoredSchedule]:
        now = self.clock.now()
        rows = await self._run(lambda c: c.fetch(self._q["due_schedules"], limit, now))
        return [self._schedule(r) for r in rows]

    async def enqueue_ticks(
        self, ticks: list[ScheduleTick], *, quotas: dict[str, int | None]
    ) -> list[TickResult]:
        if not ticks:
            return []
        jobs = [j for t in ticks for j in t.jobs]
        owners = [n for n, t in enumerate(ticks, 1) for _ in t.jobs]
        args = (
            [t.tenant for t in ticks],
            [t.name for t in ticks],
            [t.expected for t in ticks],
            [t.next_run_at for t in ticks],
            _sparse([t.ran_at for t in ticks]),
            owners,
            *(_sparse(column) for column in _job_columns(jobs)),
            list(quotas),
            list(quotas.values()),
            self.clock.now(),
        )
        rows = await self._run(lambda c: c.fetch(self._q["enqueue_ticks"], *args))
        won: set[int] = set()
        outcomes: dict[int, EnqueueOutcome] = {}
        for r in rows:
            if r["job"] is None:
                won.add(r["tick"])
            else:
                outcomes[r["job"]] = _OUTCOMES[r["outcome"]]
        results, first = [], 1
        for n, t in enumerate(ticks, 1):
            mine = [outcomes[i] for i in range(first, first + len(t.jobs))] if n in won else []
            results.append(TickResult(t.tenant, t.name, n in won, mine))
            first += len(t.jobs)
        return results

    # -- webhooks (migration 0020) ---------------------------------------------------------

    async def create_webhook(
        self, hook: StoredWebhook, *, secret: str, limit: int
    ) -> StoredWebhook | None:
        h = hook
        async with self._conn() as conn, conn.transaction():
            await conn.execute(self._q["lock_tenant_webhooks"], h.tenant)
            if await conn.fetchval(self._q["count_webhooks"], h.tenant) >= limit:
                return None
            rec = await conn.fetchrow(
                self._q["create_webhook"],
                h.id,
                h.tenant,
                h.url,
                h.event_types,
                h.use_case,
                h.description,
                secret,
                h.created_at,
            )
        return _webhook(rec)

    async def list_webhooks(self, *, tenant: str | None, limit: int) -> list[StoredWebhook]:
        rows = await self._run(lambda c: c.fetch(self._q["list_webhooks"], tenant, limit))
        return [_webhook(r) for r in rows]

    async def get_webhook(self, webhook_id: UUID, *, tenant: str | None) -> StoredWebhook | None:
        rec = await self._run(lambda c: c.fetchrow(self._q["get_webhook"], webhook_id, tenant))
        return _webhook(rec) if rec is not None else None

    async def set_webhook_paused(
        self, webhook_id: UUID, *, tenant: str | None, paused: bool
    ) -> StoredWebhook | None:
        q = self._q["set_webhook_paused"]
        rec = await self._run(lambda c: c.fetchrow(q, webhook_id, tenant, paused))
        return _webhook(rec) if rec is not None else None

    async def delete_webhook(self, webhook_id: UUID, *, tenant: str | None) -> bool:
        q = self._q["delete_webhook"]
        return await self._run(lambda c: c.fetchval(q, webhook_id, tenant)) is not None

    async def get_webhook_target(self, webhook_id: UUID) -> WebhookTarget | None:
        rec = await self._run(lambda c: c.fetchrow(self._q["get_webhook_target"], webhook_id))
        if rec is None:
            return None
        return WebhookTarget(
            id=rec["id"], url=rec["url"], secret=rec["secret"], paused=rec["paused"]
        )

    async def list_webhook_deliveries(
        self, webhook_id: UUID, *, before: UUID | None, limit: int
    ) -> list[StoredDelivery]:
        q = self._q["list_webhook_deliveries"]
        rows = await self._run(lambda c: c.fetch(q, webhook_id, before, limit))
        return [
            StoredDelivery(
                job_id=r["job_id"],
                event_id=r["event_id"],
                event_type=r["event_type"],
                status=r["status"],
                attempts=r["attempts"],
                result=r["result"],
                last_error=r["last_error"],
                created_at=r["created_at"],
                finished_at=r["finished_at"],
            )
            for r in rows
        ]

    # -- workflows and batches (docs/workflows.md) ----------------------------------------------

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
        try:
            async with self._conn() as conn, conn.transaction():
                if idempotency_key is not None:
                    claimed = await conn.fetchval(
                        self._q["claim_idempotency_key"],
                        tenant,
                        idempotency_key,
                        request_hash,
                        now,
                    )
                    if not claimed:
                        rec = await conn.fetchrow(
                            self._q["get_idempotency_key"], tenant, idempotency_key
                        )
                        return _replay(rec)
                out = await self._store_graph(conn, tenant, quota, jobs, links, batch, now)
                if idempotency_key is not None:
                    stored = [
                        [str(r.job.id) if r.job else None, r.outcome.value] for r in out.results
                    ]
                    await conn.execute(
                        self._q["save_idempotency_result"], tenant, idempotency_key, stored
                    )
                return out
        except _GraphRefused as refused:
            return refused.result

    async def _store_graph(
        self,
        conn: asyncpg.Connection,
        tenant: str,
        quota: int | None,
        jobs: list[NewJob],
        links: list[NewLink],
        batch: NewBatch | None,
        now: datetime,
    ) -> GraphResult:
        args = (*_enqueue_args(tenant, quota, jobs, now), None, None, False)
        rows = await conn.fetch(self._q["enqueue_jobs"], *args)
        results = _enqueue_results(rows)
        refusal = graph_refusal(results)
        if refusal is not None:
            raise _GraphRefused(GraphResult([], refusal))
        ids = [r.job.id for r in results if r.job is not None]
        if batch is not None:
            if batch.create:
                await conn.execute(
                    self._q["create_batch"],
                    batch.id,
                    tenant,
                    _to_json(batch_callback_columns(batch)) if batch.callback else None,
                    batch.callback_job_id,
                    now,
                )
            state = await conn.fetchval(
                self._q["add_batch_jobs"], batch.id, tenant, ids, MAX_BATCH_JOBS
            )
            if state != "ok":
                raise _GraphRefused(GraphResult([], _BATCH_STATES[state]))
        if not links:
            return GraphResult(results)
        children, parents = edge_arrays(links, ids)
        missing = await conn.fetch(
            self._q["link_jobs"],
            tenant,
            now,
            [ids[link.child] for link in links],
            [link.on_parent_failure.value for link in links],
            [link.tolerance_seconds for link in links],
            [link.grace_seconds for link in links],
            children,
            parents,
        )
        if missing:
            found = tuple(sorted(r["missing"] for r in missing))
            raise _GraphRefused(GraphResult([], GraphRefusal.MISSING_PARENTS, found))
        linked = {ids[link.child] for link in links}
        fresh = {
            j.id: j
            for j in map(_job, (r["j"] for r in await conn.fetch(self._q["get_jobs"], linked)))
        }
        return GraphResult(
            [EnqueueResult(r.outcome, fresh.get(r.job.id, r.job)) if r.job else r for r in results]
        )

    async def get_parents(self, job_id: UUID, *, tenant: str | None) -> list[ParentResult]:
        rows = await self._run(lambda c: c.fetch(self._q["get_parents"], job_id, tenant))
        return [
            ParentResult(
                id=r["id"],
                job_type=r["job_type"],
                status=JobStatus(r["status"]),
                result=r["result"],
                last_error=r["last_error"],
            )
            for r in rows
        ]

    async def get_job_graph(
        self, job_id: UUID, *, tenant: str | None, limit: int
    ) -> tuple[list[Job], list[JobLink], bool]:
        async with self._conn() as conn:
            rows = await conn.fetch(self._q["get_job_graph"], job_id, tenant, limit + 1)
            jobs = [_job(r["j"]) for r in rows]
            more = len(jobs) > limit
            jobs = jobs[:limit]
            edges = await conn.fetch(self._q["get_job_links"], [j.id for j in jobs])
        links = [JobLink(parent=r["parent_id"], child=r["child_id"]) for r in edges]
        return jobs, links, more

    async def get_batch(self, batch_id: UUID, *, tenant: str | None) -> Batch | None:
        r = await self._run(lambda c: c.fetchrow(self._q["get_batch"], batch_id, tenant))
        if r is None:
            return None
        return Batch(
            id=r["id"],
            tenant=r["tenant"],
            counts=BatchCounts(
                total=r["total"],
                unfinished=r["remaining"],
                succeeded=r["succeeded"],
                dead=r["dead"],
                cancelled=r["cancelled"],
                expired=r["expired"],
            ),
            failed_job_ids=list(r["failed_ids"]),
            callback_job_id=r["callback_job_id"],
            has_callback=r["has_callback"],
            created_at=r["created_at"],
            finished_at=r["finished_at"],
        )

    async def emit_webhook_event(
        self, tenant: str, event_type: str, *, use_case: str | None, data: dict[str, JsonValue]
    ) -> bool:
        args = (tenant, event_type, use_case, data, self.clock.now())
        return bool(await self._run(lambda c: c.fetchval(self._q["emit_webhook_event"], *args)))

    async def fan_out_webhook_events(self, rules: FanOutRules, *, limit: int) -> FannedOut:
        args = (
            limit,
            self.clock.now(),
            rules.use_case,
            rules.job_type,
            rules.tolerance_seconds,
            rules.max_attempts,
            rules.backoff.model_dump(mode="json"),
        )
        rec = await self._run(lambda c: c.fetchrow(self._q["fan_out_webhook_events"], *args))
        return FannedOut(events=rec["events"], deliveries=rec["deliveries"])


def _webhook(rec: Any) -> StoredWebhook:
    return StoredWebhook(
        id=rec["id"],
        tenant=rec["tenant"],
        url=rec["url"],
        event_types=list(rec["event_types"]),
        use_case=rec["use_case"],
        description=rec["description"],
        paused=rec["paused"],
        created_at=rec["created_at"],
    )


# Job ids are UUIDv7 (service.JobIds): their first 48 bits are the creation time in ms, a
# few ms before created_at. A created-at range is also an id range, which the id indexes seek
# to; the margin covers clock skew between the servers and the database.
_ID_CLOCK_MARGIN = timedelta(minutes=10)


def _pause(r: Any) -> QueuePause:
    return QueuePause(
        use_case=r["use_case"],
        tenant=r["tenant"],
        paused=r["paused"],
        changed_by=r["changed_by"],
        changed_at=r["changed_at"],
        reason=r["reason"],
    )


def _id_floor(at: datetime) -> UUID:
    ms = max(0, int(at.timestamp() * 1000))
    return UUID(int=(min(ms, (1 << 48) - 1)) << 80)


def job_filter(
    flt: JobFilter, args: list[Any], *, statuses: frozenset[JobStatus] | None = None
) -> str:
    """The AND of `flt`'s filters over `jobs j` (and of `statuses`), with their values appended
    to `args`. Only the filters given appear, each as a fixed fragment; values are parameters."""

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    clauses = []
    if statuses is not None:
        clauses.append(f"j.status = ANY ({arg(sorted(s.value for s in statuses))}::job_status[])")
    if flt.job_id is not None:
        clauses.append(f"j.id = {arg(flt.job_id)}")
    if flt.tenant is not None:
        clauses.append(f"j.tenant = {arg(flt.tenant)}")
    if flt.status is not None:
        clauses.append(f"j.status = {arg(flt.status.value)}::job_status")
    if flt.use_case is not None:
        clauses.append(f"j.use_case = {arg(flt.use_case)}")
    if flt.job_type is not None:
        clauses.append(f"j.job_type = {arg(flt.job_type)}")
    if flt.dedup_key is not None:
        clauses.append(f"j.dedup_key = {arg(flt.dedup_key)}")
    if flt.created_after is not None:
        clauses.append(f"j.created_at >= {arg(flt.created_after)}")
        clauses.append(f"j.id >= {arg(_id_floor(flt.created_after - _ID_CLOCK_MARGIN))}")
    if flt.created_before is not None:
        clauses.append(f"j.created_at < {arg(flt.created_before)}")
        clauses.append(f"j.id < {arg(_id_floor(flt.created_before + _ID_CLOCK_MARGIN))}")
    if flt.before_id is not None:
        clauses.append(f"j.id < {arg(flt.before_id)}")
    if flt.max_id is not None:
        clauses.append(f"j.id <= {arg(flt.max_id)}")
    return " AND ".join(clauses) or "true"


def _filtered(
    query: str, flt: JobFilter, args: list[Any], *, statuses: frozenset[JobStatus] | None = None
) -> str:
    return query.replace("/*filter*/", "(" + job_filter(flt, args, statuses=statuses) + ")")


def _action_batch(rec: Any) -> ActionBatch:
    return ActionBatch(
        picked=int(rec["picked"]),
        touched=int(rec["touched"]),
        last_id=rec["last_id"],
        use_cases=frozenset(rec["use_cases"]),
        ids=frozenset(rec["ids"]),
    )


class _PgSubscription:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @property
    def alive(self) -> bool:
        return not self._conn.is_closed()

    async def close(self) -> None:
        if not self._conn.is_closed():
            await self._conn.close(timeout=2)


def _lease_arrays(leases: list[LeaseRef]) -> tuple[list[UUID], list[int], list[UUID]]:
    return (
        [x.job_id for x in leases],
        [x.attempt for x in leases],
        [x.lease_token for x in leases],
    )


def _claimed(r: Any) -> ClaimedJob:
    return ClaimedJob(
        id=r["id"],
        tenant=r["tenant"],
        use_case=r["use_case"],
        job_type=r["job_type"],
        payload=r["payload"],
        attempt=r["attempts"],
        max_attempts=r["max_attempts"],
        lease_token=r["lease_token"],
        lease_expires_at=clamp_timestamp(r["lease_expires_at"]),
        deadline=clamp_timestamp(r["deadline"]),
        run_at=clamp_timestamp(r["run_at"]),
        created_at=clamp_timestamp(r["created_at"]),
        trace_context=r["trace_context"],
        missed_deadline=r["missed"],
    )


def _clamped(at: datetime | None) -> datetime | None:
    # a stored time outside the API's range (a row written before the range was enforced,
    # or by hand) must not break the arithmetic of the readers: they see its bound
    return clamp_timestamp(at) if at is not None else None


def _running(r: Any) -> RunningLease:
    return RunningLease(
        id=r["id"],
        attempt=r["attempts"],
        lease_token=r["lease_token"],
        max_attempts=r["max_attempts"],
        backoff=BackoffPolicy.model_validate(r["backoff"]),
        tenant=r["tenant"],
        use_case=r["use_case"],
    )


def _shared_json(values: list[T | None], jsonable: Callable[[T], Any]) -> list[str | None]:
    """JSON text per value, each object encoded once: the jobs of a call mostly share one
    backoff policy (their use case's) and one trace context (the request's)."""
    done: dict[int, str] = {}
    out: list[str | None] = []
    for v in values:
        if v is None:
            out.append(None)
        elif (text := done.get(id(v))) is not None:
            out.append(text)
        else:
            out.append(done.setdefault(id(v), _to_json(jsonable(v))))
    return out


_JOBS = TypeAdapter(list[Job])
_SOURCES = {s.value: s for s in ScheduleSource}
# schedule definitions kept by PostgresJobStore._schedule; past it the memo starts over
_DEFINITIONS = 10_000
_OUTCOMES = {o.value: o for o in EnqueueOutcome}


def _enqueue_args(
    tenant: str, quota: int | None, jobs: list[NewJob], now: datetime
) -> tuple[Any, ...]:
    *columns, concurrency_keys, rate_keys, expires_ats = _job_columns(jobs)
    return (tenant, quota, *columns, now, concurrency_keys, rate_keys, expires_ats)


def _job_columns(jobs: list[NewJob]) -> tuple[list[Any], ...]:
    """The jobs as the arrays jobs_enqueue takes (JSON as text), in its order without the
    tenant, quota and now."""
    return (
        [j.id for j in jobs],
        [j.use_case for j in jobs],
        [j.job_type for j in jobs],
        [_to_json(j.payload) for j in jobs],
        [j.priority for j in jobs],
        [j.run_at for j in jobs],
        [j.deadline for j in jobs],
        [j.max_attempts for j in jobs],
        _shared_json([j.backoff for j in jobs], lambda b: b.model_dump(mode="json")),
        [j.dedup_key for j in jobs],
        _shared_json([j.trace_context for j in jobs], lambda c: c),
        [_unique_rule(j.unique) for j in jobs],
        [j.concurrency_key for j in jobs],
        [j.rate_key for j in jobs],
        [j.expires_at for j in jobs],
    )


def _sparse(column: list[T]) -> list[T] | None:
    """A column of no values as null, for a multi-array unnest (which pads it with nulls):
    asyncpg's encoding of an array costs about as much per element whatever its value."""
    return column if any(v is not None for v in column) else None


def _definition_args(d: ScheduleDefinition) -> tuple[Any, ...]:
    return (
        d.cron,
        d.interval_seconds,
        d.timezone,
        d.use_case,
        d.job_type,
        _to_json(d.payload),
        d.delay_tolerance_seconds,
        d.priority,
        d.missed.value,
    )


def _definition(r: Any) -> ScheduleDefinition:
    return ScheduleDefinition.model_construct(
        cron=r["cron"],
        interval_seconds=r["interval_seconds"],
        timezone=r["timezone"],
        use_case=r["use_case"],
        job_type=r["job_type"],
        payload=json.loads(r["payload"]),
        delay_tolerance_seconds=r["delay_tolerance_seconds"],
        priority=r["priority"],
        missed=MissedTickPolicy(r["missed"]),
        dedup_key=r["dedup_key"],
    )


def _enqueue_results(rows: list[Any]) -> list[EnqueueResult]:
    """One result per row; a row's job columns are null when it has no job. The jobs are
    validated in one call: pydantic's overhead per call is a good part of a small job's cost."""
    jobs = iter(_JOBS.validate_python([_job_fields(r) for r in rows if r["id"] is not None]))
    results = []
    for r in rows:
        outcome = _OUTCOMES[r["outcome"]]
        announced = bool(r["announced"]) and outcome is EnqueueOutcome.CREATED
        results.append(
            EnqueueResult(outcome, next(jobs) if r["id"] is not None else None, announced)
        )
    return results


def _job_fields(rec: Any) -> dict[str, Any]:
    fields = dict(rec)
    del fields["announced"]  # the statement's, not the job's
    fields["payload"] = _from_json(fields["payload"])  # text, see enqueue_jobs in queries.sql
    rule = fields.pop("unique_rule")
    fields["unique"] = {"key": fields["dedup_key"], **rule} if rule is not None else None
    return fields


def _unique_rule(rule: UniqueRule | None) -> str | None:
    """jobs.unique_rule: the rule without its key (the job's dedup_key)."""
    if rule is None:
        return None
    return _to_json(rule.model_dump(mode="json", exclude={"key"}, exclude_none=True))


def _unique(key: str | None, rule: dict[str, Any] | None) -> UniqueRule | None:
    return UniqueRule(key=key, **rule) if key is not None and rule is not None else None


def _replay(rec: Any) -> IdempotentReplay:
    stored = rec["response"]
    results = (
        [(UUID(i) if i else None, EnqueueOutcome(o)) for i, o in stored]
        if stored is not None
        else None
    )
    return IdempotentReplay(request_hash=rec["request_hash"], results=results)


class _GraphRefused(Exception):
    """Rolls a graph call's transaction back, carrying what to answer."""

    def __init__(self, result: GraphResult) -> None:
        super().__init__(result.refused)
        self.result = result


_BATCH_STATES = {
    None: GraphRefusal.BATCH_NOT_FOUND,
    "finished": GraphRefusal.BATCH_FINISHED,
    "full": GraphRefusal.BATCH_FULL,
}


def batch_callback_columns(batch: NewBatch) -> dict[str, Any]:
    """batches.callback: what jobs_batch_callback stores the callback job with."""
    cb = batch.callback
    assert cb is not None
    return {
        "use_case": cb.use_case,
        "job_type": cb.job_type,
        "payload": cb.payload,
        "priority": cb.priority,
        "max_attempts": cb.max_attempts,
        "backoff": cb.backoff.model_dump(mode="json"),
        "concurrency_key": cb.concurrency_key,
        "rate_key": cb.rate_key,
        "tolerance_seconds": batch.callback_tolerance_seconds,
        "grace_seconds": batch.callback_grace_seconds,
    }
