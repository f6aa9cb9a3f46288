"""The outbox relay: sends the outbox's rows to jobs-server in batches, deletes them once the
server has confirmed, and never sends a row twice as two jobs.

A pass claims up to `batch_size` unclaimed rows under a new batch key (committed first, so
the batch's content is fixed), then, holding that batch's lock for one transaction, sends it
as one batch request whose Idempotency-Key is the batch key, and deletes what the server
stored. A server that cannot be reached (or whose answer is lost), or a relay that dies after
sending, leaves the batch claimed: the same relay sends the very same request again on its
next pass, any relay after `orphan_after` seconds, and the server answers it with the jobs it
stored the first time. Several relays run side by side:
claims skip locked rows, and a batch is sent by one relay at a time.

Items the server refuses: for good (unknown use case, a bad field) the row keeps its error
and is not sent again; for now (the tenant's quota is full) the row goes back to the outbox
and is sent later in another batch. The server keeps idempotency keys for a day by default:
a batch left unsent for longer is sent as new.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs_schema import BatchEnqueueResponse, EnqueueRequest, ErrorBody, ErrorCode
from jobs_sdk._http import failing_index, is_item_error
from jobs_sdk.errors import JobsError

if TYPE_CHECKING:
    from jobs_sdk.outbox._sql import Queries
    from jobs_sdk.protocols import Enqueuer

__all__ = ["OutboxRelay", "RelayPass"]

logger = logging.getLogger(__name__)

# Item errors worth sending again later; every other refusal is for good.
_TRANSIENT = {ErrorCode.QUOTA_EXCEEDED, ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL}


@dataclass(frozen=True)
class RelayPass:
    """What one pass did: rows sent (and deleted), put back for later (the tenant's quota was
    full, or a refused batch is sent again in parts) and failed for good. `again`: another
    pass now has work (another relay held the batch looked at, or a batch was split)."""

    sent: int = 0
    requeued: int = 0
    failed: int = 0
    again: bool = False

    @property
    def idle(self) -> bool:
        return not (self.sent or self.failed or self.again)

    def __add__(self, other: RelayPass) -> RelayPass:
        return RelayPass(
            self.sent + other.sent,
            self.requeued + other.requeued,
            self.failed + other.failed,
            self.again or other.again,
        )


@dataclass(frozen=True)
class _Row:
    id: int
    request: EnqueueRequest


class OutboxRelay:
    """See the module's docstring. `pool`: an asyncpg pool on the producer's database;
    `jobs`: a JobsClient. `on_sent` is called after the server answered and before the rows
    are deleted (to test a crash there)."""

    def __init__(
        self,
        pool: Any,
        jobs: Enqueuer,
        *,
        queries: Queries,
        batch_size: int = 500,
        orphan_after: float = 30.0,
        on_sent: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if not 1 <= batch_size <= 1000:
            raise ValueError("batch_size must be between 1 and 1000 (the server's batch limit)")
        if orphan_after < 0:
            raise ValueError("orphan_after must not be negative")
        self._pool = pool
        self._jobs = jobs
        self._q = queries
        self._batch = batch_size
        self._limit = batch_size
        self._orphan_after = orphan_after
        self._on_sent = on_sent
        self._unfinished: set[str] = set()

    async def run_once(self) -> RelayPass:
        """Send one batch: one this relay could not finish (at once), one another relay did
        not finish (after `orphan_after`), else a new one."""
        async with self._pool.acquire() as conn:
            for key in [*self._unfinished, *await self._orphans(conn)]:
                done = await self._attempt(conn, key)
                if done is not None:
                    return done
            key = f"outbox-{uuid.uuid4()}"
            await conn.execute(self._q["claim_batch"], key, self._limit)
            return await self._attempt(conn, key) or RelayPass(again=True)

    async def _attempt(self, conn: Any, key: str) -> RelayPass | None:
        self._unfinished.discard(key)
        try:
            return await self._deliver(conn, key)
        except BaseException:
            self._unfinished.add(key)  # still claimed: resent as is on the next pass
            raise

    async def drain(self) -> RelayPass:
        """Pass after pass until the outbox has nothing to send."""
        total = RelayPass()
        while not (done := await self.run_once()).idle:
            total += done
        return total

    async def run(self, *, stop: asyncio.Event, idle_seconds: float = 0.5) -> None:
        """Drain, then wait `idle_seconds` (longer after a failure), until `stop` is set."""
        pause = idle_seconds
        while not stop.is_set():
            try:
                await self.drain()
                pause = idle_seconds
            except Exception:  # server or database unreachable: nothing lost, try again later
                pause = min(30.0, pause * 2)
                logger.exception("outbox relay pass failed", extra={"retry_in": pause})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

    async def waiting(self) -> int:
        """Rows not yet sent (failed rows excluded)."""
        async with self._pool.acquire() as conn:
            return int(await conn.fetchval(self._q["count_waiting"]))

    async def _orphans(self, conn: Any) -> list[str]:
        rows = await conn.fetch(self._q["orphaned_batches"], self._orphan_after, 5)
        return [r["batch_key"] for r in rows]

    async def _deliver(self, conn: Any, key: str) -> RelayPass | None:
        """Send batch `key`; None when another relay holds it."""
        async with conn.transaction():
            if not await conn.fetchval(self._q["lock_batch"], key):
                return None
            rows = [
                _Row(r["id"], EnqueueRequest.model_validate_json(r["request"]))
                for r in await conn.fetch(self._q["batch_rows"], key)
            ]
            if not rows:
                return RelayPass()
            try:
                answer = await self._jobs.enqueue_batch(
                    [r.request for r in rows], idempotency_key=key
                )
            except JobsError as err:
                if not is_item_error(err):
                    raise  # unreachable or failing: the batch stays claimed, resent as is
                return await self._refused_whole(conn, rows, err)
            if self._on_sent is not None:
                await self._on_sent()
            return await self._settle(conn, rows, answer)

    async def _settle(
        self, conn: Any, rows: Sequence[_Row], answer: BatchEnqueueResponse
    ) -> RelayPass:
        by_index = {item.index: item for item in answer.results}
        sent, later = [], []
        for i, row in enumerate(rows):
            item = by_index.get(i)
            error = item.error if item is not None else None
            if item is not None and error is None:
                sent.append(row.id)
            elif error is not None and error.code not in _TRANSIENT:
                await self._fail(conn, row, error)
            else:
                later.append(row.id)
        await conn.execute(self._q["delete_rows"], sent)
        await conn.execute(self._q["release_rows"], later)
        self._limit = self._batch
        failed = len(rows) - len(sent) - len(later)
        return RelayPass(sent=len(sent), requeued=len(later), failed=failed)

    async def _refused_whole(self, conn: Any, rows: Sequence[_Row], err: JobsError) -> RelayPass:
        """The server refused the whole batch for one item: fail that one, send the rest
        again in new batches; when it names no item, in smaller and smaller batches."""
        bad = failing_index(err)
        if bad is None and len(rows) > 1:
            self._limit = max(1, len(rows) // 2)
            await conn.execute(self._q["release_rows"], [r.id for r in rows])
            return RelayPass(requeued=len(rows), again=True)
        blamed = rows[bad if bad is not None and 0 <= bad < len(rows) else 0]
        body = ErrorBody(code=err.code or ErrorCode.VALIDATION, message=err.message)
        await self._fail(conn, blamed, body)
        others = [r.id for r in rows if r is not blamed]
        await conn.execute(self._q["release_rows"], others)
        return RelayPass(requeued=len(others), failed=1, again=bool(others))

    async def _fail(self, conn: Any, row: _Row, error: ErrorBody) -> None:
        message = f"{error.code.value}: {error.message}"
        await conn.execute(self._q["fail_row"], row.id, message)
        logger.warning(
            "outbox request refused for good",
            extra={"outbox_id": row.id, "use_case": row.request.use_case, "code": error.code},
        )
