"""Enqueue on commit: a transactional outbox in the producer's own PostgreSQL database.

Inside your own transaction, write the jobs to enqueue into an outbox table; they exist only
if the transaction commits. A relay sends them to jobs-server in batches and deletes them once
the server has confirmed:

    outbox = Outbox()                        # table "jobs_outbox"; create it once:
    await outbox.create_table(conn)          # or run outbox.create_table_sql() in a migration

    async with conn.transaction():           # asyncpg
        await conn.execute("INSERT INTO users ...")
        await outbox.add(conn, send_email.request(SendEmail(to=...)))

    with Session(engine) as session, session.begin():          # SQLAlchemy
        session.add(user)
        outbox.add_sync(session, send_email.request(...))      # add_async: AsyncSession

    relay = outbox.relay(pool, jobs)        # an asyncpg pool, a JobsClient
    await relay.run(stop=stopping)          # or: jobs outbox relay --database-url ...

Extras: `jobs-sdk[asyncpg]` (the asyncpg writer and the relay), `jobs-sdk[sqlalchemy]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jobs_schema import EnqueueRequest
from jobs_sdk.outbox._sql import Queries, check_table
from jobs_sdk.outbox.relay import OutboxRelay, RelayPass

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection as SyncConnection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.orm import Session

    from jobs_sdk.protocols import Enqueuer

__all__ = ["Outbox", "OutboxRelay", "RelayPass"]


def _bodies(requests: Sequence[EnqueueRequest]) -> list[str]:
    for r in requests:
        if not isinstance(r, EnqueueRequest):
            raise TypeError(f"the outbox takes EnqueueRequests (task.request(...)), not {r!r}")
    return [r.model_dump_json(exclude_defaults=True) for r in requests]


class Outbox:
    """One outbox table; `table` may be `schema.table`."""

    def __init__(self, table: str = "jobs_outbox") -> None:
        self.table = check_table(table)
        self.queries = Queries(table)

    def create_table_sql(self) -> str:
        """The DDL, for your migrations (idempotent: IF NOT EXISTS)."""
        return self.queries["create_table"]

    async def create_table(self, conn: Any) -> None:
        """Create the table and its indexes on an asyncpg connection, if missing."""
        await conn.execute(self.create_table_sql())

    async def add(self, conn: Any, *requests: EnqueueRequest) -> None:
        """Write `requests` with an asyncpg connection, inside the caller's transaction."""
        if requests:
            await conn.execute(self.queries["add_asyncpg"], _bodies(requests))

    def add_sync(self, conn: Session | SyncConnection, *requests: EnqueueRequest) -> None:
        """Write `requests` with a SQLAlchemy Session or Connection, in its transaction."""
        if requests:
            conn.execute(*self._sqlalchemy(requests))

    async def add_async(
        self, conn: AsyncSession | AsyncConnection, *requests: EnqueueRequest
    ) -> None:
        """Write `requests` with a SQLAlchemy AsyncSession or AsyncConnection."""
        if requests:
            await conn.execute(*self._sqlalchemy(requests))

    def _sqlalchemy(self, requests: Sequence[EnqueueRequest]) -> tuple[Any, list[dict[str, str]]]:
        from sqlalchemy import text

        return text(self.queries["add_sqlalchemy"]), [{"request": b} for b in _bodies(requests)]

    def relay(self, pool: Any, jobs: Enqueuer, **options: Any) -> OutboxRelay:
        """A relay draining this outbox through `pool` (asyncpg) into `jobs`."""
        return OutboxRelay(pool, jobs, queries=self.queries, **options)
