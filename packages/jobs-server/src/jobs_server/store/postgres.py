"""PostgresJobStore: the only module that talks to asyncpg. Records become our types here."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from jobs_schema import (
    AttemptOutcome,
    AttemptRecord,
    BackoffPolicy,
    Job,
    JobStatus,
    LeaseRef,
    LeaseState,
    Payload,
)
from jobs_server.errors import StoreUnavailable
from jobs_server.store.base import (
    ClaimedJob,
    EnqueueOutcome,
    EnqueueResult,
    FailedAttempt,
    IdempotentReplay,
    JobFilter,
    LeaderLease,
    LeaseStatus,
    NewJob,
    RunningLease,
    SucceededAttempt,
)

__all__ = ["PostgresJobStore", "load_queries"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)

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


def load_queries() -> dict[str, str]:
    """The named blocks of queries.sql."""
    text = resources.files("jobs_server.store").joinpath("queries.sql").read_text()
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _UNAVAILABLE):
        return True
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        return True  # the protocol state broke with the connection under it
    # asyncpg says "connection is closed" / "pool is closing" as an InterfaceError
    return isinstance(exc, asyncpg.exceptions.InterfaceError) and (
        "closed" in str(exc) or "closing" in str(exc)
    )


def _encode_jsonb(value: Any) -> bytes:
    return b"\x01" + json.dumps(value, separators=(",", ":")).encode()


def _decode_jsonb(data: bytes) -> Any:
    return json.loads(data[1:])


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
        result=rec["result"],
        last_error=rec["last_error"],
        cancel_requested=rec["cancel_requested"],
        deadline_missed=rec["deadline_missed"],
        created_at=rec["created_at"],
        updated_at=rec["updated_at"],
        finished_at=rec["finished_at"],
    )


class PostgresJobStore:
    """A JobStore over an asyncpg pool. Build it with `await PostgresJobStore.connect(url)`."""

    def __init__(self, pool: asyncpg.Pool, queries: dict[str, str], *, dsn: str) -> None:
        self._pool = pool
        self._q = queries
        self._dsn = dsn

    @classmethod
    async def connect(
        cls, dsn: str, *, min_size: int = 1, max_size: int = 10, connect_timeout: float = 5.0
    ) -> PostgresJobStore:
        """Open a pool. An unreachable database raises StoreUnavailable naming the cause."""
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout,
                command_timeout=60,
                init=_init_connection,
                # JIT compiles for hundreds of ms when estimates are large (skip scans, laterals);
                # every query here is short OLTP work where it only ever costs.
                server_settings={"jit": "off"},
            )
        except (*_UNAVAILABLE, asyncpg.exceptions.InvalidCatalogNameError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        assert pool is not None
        return cls(pool, load_queries(), dsn=dsn)

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self._pool.acquire() as conn:
                try:
                    yield conn
                except Exception as exc:
                    if _is_unavailable(exc):
                        conn.terminate()  # never hand a broken connection to the next caller
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
    ) -> list[EnqueueResult] | IdempotentReplay:
        args = (
            tenant,
            quota,
            [j.id for j in jobs],
            [j.use_case for j in jobs],
            [j.job_type for j in jobs],
            [j.payload for j in jobs],
            [j.priority for j in jobs],
            [j.run_at for j in jobs],
            [j.deadline for j in jobs],
            [j.max_attempts for j in jobs],
            [j.backoff.model_dump(mode="json") for j in jobs],
            [j.dedup_key for j in jobs],
            [j.trace_context for j in jobs],
        )
        async with self._conn() as conn:
            if idempotency_key is None:
                rows = await conn.fetch(self._q["enqueue_jobs"], *args)
                return [_enqueue_result(r) for r in rows]
            async with conn.transaction():
                claimed = await conn.fetchval(
                    self._q["claim_idempotency_key"], tenant, idempotency_key, request_hash
                )
                if not claimed:
                    rec = await conn.fetchrow(
                        self._q["get_idempotency_key"], tenant, idempotency_key
                    )
                    return _replay(rec)
                rows = await conn.fetch(self._q["enqueue_jobs"], *args)
                results = [_enqueue_result(r) for r in rows]
                stored = [[str(r.job.id) if r.job else None, r.outcome.value] for r in results]
                await conn.execute(
                    self._q["save_idempotency_result"], tenant, idempotency_key, stored
                )
                return results

    async def get_job(self, job_id: UUID, *, tenant: str | None) -> Job | None:
        rec = await self._run(lambda c: c.fetchval(self._q["get_job"], job_id, tenant))
        return _job(rec) if rec is not None else None

    async def get_jobs(self, job_ids: list[UUID]) -> list[Job]:
        rows = await self._run(lambda c: c.fetch(self._q["get_jobs"], job_ids))
        return [_job(r["j"]) for r in rows]

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
            )
            for r in rows
        ]

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        rows = await self._run(
            lambda c: c.fetch(
                self._q["list_jobs"],
                flt.tenant,
                flt.status.value if flt.status else None,
                flt.use_case,
                flt.job_type,
                flt.created_after,
                flt.created_before,
                flt.before_id,
                flt.limit,
            )
        )
        return [_job(r["j"]) for r in rows]

    async def cancel_job(self, job_id: UUID, *, tenant: str | None) -> Job | None:
        rec = await self._run(lambda c: c.fetchval(self._q["cancel_job"], job_id, tenant))
        return _job(rec) if rec is not None else None

    async def ping(self) -> None:
        await self._run(lambda c: c.fetchval(self._q["ping"]))

    # -- scheduler and worker path ----------------------------------------------------------

    async def acquire_leadership(self, name: str, holder: str, *, ttl: float) -> int | None:
        q = self._q["acquire_leadership"]
        epoch = await self._run(lambda c: c.fetchval(q, name, holder, ttl))
        return int(epoch) if epoch is not None else None

    async def resign_leadership(self, name: str, holder: str) -> None:
        await self._run(lambda c: c.execute(self._q["resign_leadership"], name, holder))

    async def claim_due_jobs(
        self,
        use_case: str,
        *,
        capacity: int,
        limit: int,
        lease_seconds: float,
        leader: LeaderLease,
        per_tenant_cap: int | None,
    ) -> list[ClaimedJob]:
        args: tuple[Any, ...] = (
            use_case,
            capacity,
            limit,
            lease_seconds,
            leader.name,
            leader.holder,
            leader.epoch,
        )
        if per_tenant_cap is None:
            q = self._q["claim_due_jobs"]
        else:
            q, args = self._q["claim_due_jobs_fair"], (*args, per_tenant_cap)
        rows = await self._run(lambda c: c.fetch(q, *args))
        return [_claimed(r) for r in rows]

    async def release_leases(self, leases: list[LeaseRef]) -> list[UUID]:
        if not leases:
            return []
        q = self._q["release_leases"]
        rows = await self._run(lambda c: c.fetch(q, *_lease_arrays(leases)))
        return [r["id"] for r in rows]

    async def complete_attempts(self, done: list[SucceededAttempt]) -> dict[UUID, JobStatus]:
        if not done:
            return {}
        args = (
            [d.id for d in done],
            [d.attempt for d in done],
            [d.lease_token for d in done],
            [d.result for d in done],
            [d.worker_id for d in done],
            [d.started_at for d in done],
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
        )
        rows = await self._run(lambda c: c.fetch(self._q["fail_attempts"], *args))
        return {r["id"]: JobStatus(r["status"]) for r in rows}

    async def find_expired_leases(self, *, limit: int) -> list[RunningLease]:
        rows = await self._run(lambda c: c.fetch(self._q["find_expired_leases"], limit))
        return [_running(r) for r in rows]

    async def get_leases(self, job_ids: list[UUID]) -> list[RunningLease]:
        rows = await self._run(lambda c: c.fetch(self._q["get_leases"], job_ids))
        return [_running(r) for r in rows]

    async def extend_leases(
        self, leases: list[LeaseRef], *, extend_seconds: list[float]
    ) -> list[LeaseStatus]:
        q = self._q["extend_leases"]
        rows = await self._run(lambda c: c.fetch(q, *_lease_arrays(leases), extend_seconds))
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

    async def mark_attempts_started(self, leases: list[LeaseRef], *, worker_id: str) -> None:
        ids, attempts, _ = _lease_arrays(leases)
        q = self._q["mark_attempts_started"]
        await self._run(lambda c: c.execute(q, ids, attempts, worker_id))

    async def get_payload(self, job_id: UUID) -> Payload | None:
        payload: Payload | None = await self._run(
            lambda c: c.fetchval(self._q["get_payload"], job_id)
        )
        return payload

    async def prune_finished_jobs(
        self, use_case: str, *, older_than_seconds: float, limit: int
    ) -> int:
        q = self._q["prune_finished_jobs"]
        status = await self._run(lambda c: c.execute(q, use_case, older_than_seconds, limit))
        return int(status.split()[-1])

    async def prune_idempotency_keys(self, *, older_than_seconds: float, limit: int) -> int:
        q = self._q["prune_idempotency_keys"]
        status = await self._run(lambda c: c.execute(q, older_than_seconds, limit))
        return int(status.split()[-1])

    async def notify(self, channel: str, payload: str) -> None:
        await self._run(lambda c: c.execute(self._q["notify"], channel, payload))

    async def listen(self, channel: str, callback: Callable[[str], None]) -> _PgSubscription:
        try:
            conn = await asyncpg.connect(self._dsn, timeout=5, server_settings={"jit": "off"})
            await conn.add_listener(channel, lambda *args: callback(args[-1]))
        except Exception as exc:
            if _is_unavailable(exc):
                raise StoreUnavailable(f"cannot LISTEN: {exc}") from exc
            raise
        return _PgSubscription(conn)


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
        lease_expires_at=r["lease_expires_at"],
        deadline=r["deadline"],
        run_at=r["run_at"],
        created_at=r["created_at"],
        trace_context=r["trace_context"],
        missed_deadline=r["missed"],
    )


def _running(r: Any) -> RunningLease:
    return RunningLease(
        id=r["id"],
        attempt=r["attempts"],
        lease_token=r["lease_token"],
        max_attempts=r["max_attempts"],
        backoff=BackoffPolicy.model_validate(r["backoff"]),
    )


def _enqueue_result(rec: Any) -> EnqueueResult:
    job = rec["job"]
    return EnqueueResult(
        outcome=EnqueueOutcome(rec["outcome"]),
        job=_job(job) if job is not None and job["id"] is not None else None,
    )


def _replay(rec: Any) -> IdempotentReplay:
    stored = rec["response"]
    results = (
        [(UUID(i) if i else None, EnqueueOutcome(o)) for i, o in stored]
        if stored is not None
        else None
    )
    return IdempotentReplay(request_hash=rec["request_hash"], results=results)
