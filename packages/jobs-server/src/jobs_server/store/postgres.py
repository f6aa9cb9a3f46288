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

from jobs_schema import AttemptOutcome, AttemptRecord, Job, JobStatus
from jobs_server.errors import StoreUnavailable
from jobs_server.store.base import (
    EnqueueOutcome,
    EnqueueResult,
    IdempotentReplay,
    JobFilter,
    NewJob,
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

    def __init__(self, pool: asyncpg.Pool, queries: dict[str, str]) -> None:
        self._pool = pool
        self._q = queries

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
            )
        except (*_UNAVAILABLE, asyncpg.exceptions.InvalidCatalogNameError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        assert pool is not None
        return cls(pool, load_queries())

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self._pool.acquire() as conn:
                yield conn
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
