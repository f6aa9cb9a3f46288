"""Talking to the jobs server's worker API: `WorkerApi` is the port, `HttpWorkerApi` the httpx
adapter over jobs-sdk's WorkerApiClient, `Reporter` batches outcome reports."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol, TypeVar
from uuid import UUID

import httpx
from pydantic import ValidationError

from jobs_schema import (
    SERVER_TIME_HEADER,
    HeartbeatItem,
    HeartbeatResult,
    LeaseRef,
    OutcomeAck,
    OutcomeReport,
    Payload,
)
from jobs_schema.workflows import ParentResult
from jobs_sdk import Forbidden, JobsError, JobsTimeout, NotFound, Unauthorized, Unavailable
from jobs_sdk.batching import Batcher
from jobs_sdk.worker_api import WORKER_RETRY, WorkerApiClient
from jobs_worker.errors import ConfigError, WorkerApiError

__all__ = [
    "HttpWorkerApi",
    "JobGone",
    "Reporter",
    "ServerClock",
    "ServerUnavailable",
    "WorkerApi",
]

T = TypeVar("T")


class JobGone(WorkerApiError):
    """The job is no longer running (finished, cancelled or given to another attempt)."""


class ServerUnavailable(WorkerApiError):
    """Connection errors or 502/503/504 on every try: worth trying again later."""


class ServerClock:
    """The server's clock as this worker sees it. Leases are stamped by the server's clock
    (PostgreSQL's); this host's may be skewed. Learnt from the `Jobs-Server-Time` header of
    every answer (milliseconds, off by at most half the round trip), or, from a server that
    sends none, from `Date` (whole seconds: off by up to a second more)."""

    def __init__(self) -> None:
        self._offset = 0.0  # server time - local time, in seconds
        self.known = False
        self.uncertainty = 1.5  # seconds the estimate may be off

    def observe(self, headers: Mapping[str, str], *, sent: float, received: float) -> None:
        """`headers`: an answer's; `sent` and `received`: time.time() around the request."""
        half_trip = max(0.0, received - sent) / 2
        precise = _seconds(headers.get(SERVER_TIME_HEADER))
        if precise is not None:
            self._learn(precise - (sent + received) / 2, half_trip + 0.01)
            return
        try:
            server = parsedate_to_datetime(headers.get("date") or "").timestamp()
        except (TypeError, ValueError):
            return
        # the header truncates to the second: the server's reading lies in [server, server + 1)
        self._learn(server + 0.5 - (sent + received) / 2, half_trip + 0.5 + 1.0)

    def _learn(self, offset: float, uncertainty: float) -> None:
        self._offset, self.uncertainty, self.known = offset, uncertainty, True

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._offset)


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) else None


class WorkerApi(Protocol):
    clock: ServerClock

    async def report(self, reports: list[OutcomeReport]) -> list[OutcomeAck]: ...

    async def heartbeat(
        self, worker_id: str, items: list[HeartbeatItem]
    ) -> list[HeartbeatResult]: ...

    async def release(self, worker_id: str, leases: list[LeaseRef]) -> list[UUID]: ...

    async def cancellations(self, worker_id: str, leases: list[LeaseRef]) -> list[LeaseRef]:
        """Of `leases`, those whose job was cancelled (the worker's cancellation poll)."""
        ...

    async def payload(self, job_id: UUID) -> Payload: ...

    async def parents(self, job_id: UUID) -> list[ParentResult]:
        """The job's parents with their results (JobContext.parent_results)."""
        ...

    async def close(self) -> None: ...


class HttpWorkerApi:
    """The worker API over HTTP with the worker token: jobs-sdk's WorkerApiClient, its errors
    translated to this package's (NotFound is JobGone; no answer after the retries,
    ServerUnavailable), and the server's clock learnt from every answer."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        attempts: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.clock = ServerClock()
        self._client = WorkerApiClient(
            base_url,
            token,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            retries=replace(WORKER_RETRY, attempts=max(1, attempts)),
            transport=transport,
            observe=self._observe,
        )

    def _observe(self, response: httpx.Response, sent: float, received: float) -> None:
        self.clock.observe(response.headers, sent=sent, received=received)

    async def close(self) -> None:
        await self._client.aclose()

    async def check(self) -> None:
        """Is the server there, and does it take our token? A refused token is a
        ConfigError; an unreachable server a ServerUnavailable, worth waiting for."""
        try:
            await self._client.check()
        except (Unauthorized, Forbidden) as exc:
            raise ConfigError(
                f"JOBS_WORKER_TOKEN: the jobs server refused the worker token: {exc.message}"
            ) from exc
        except JobsError as exc:
            raise _translated(exc) from exc

    async def report(self, reports: list[OutcomeReport]) -> list[OutcomeAck]:
        return await _translating(self._client.report(reports))

    async def heartbeat(self, worker_id: str, items: list[HeartbeatItem]) -> list[HeartbeatResult]:
        return await _translating(self._client.heartbeat(worker_id, items))

    async def release(self, worker_id: str, leases: list[LeaseRef]) -> list[UUID]:
        return await _translating(self._client.release(worker_id, leases))

    async def cancellations(self, worker_id: str, leases: list[LeaseRef]) -> list[LeaseRef]:
        return await _translating(self._client.cancellations(worker_id, leases))

    async def payload(self, job_id: UUID) -> Payload:
        return await _translating(self._client.payload(job_id))

    async def parents(self, job_id: UUID) -> list[ParentResult]:
        return await _translating(self._client.parents(job_id))


async def _translating(call: Awaitable[T]) -> T:
    try:
        return await call
    except JobsError as exc:
        raise _translated(exc) from exc
    except ValidationError as exc:
        raise WorkerApiError(f"unexpected answer from the jobs server: {exc}") from exc


def _translated(exc: JobsError) -> WorkerApiError:
    if isinstance(exc, NotFound):
        return JobGone(exc.message)
    # the answers resent until the tries ran out (a 502 or 504 is a ServerError to the SDK)
    if isinstance(exc, Unavailable | JobsTimeout) or exc.status in WORKER_RETRY.statuses:
        return ServerUnavailable(str(exc))
    return WorkerApiError(f"the jobs server refused a worker API call: {exc}")


class Reporter:
    """Outcome reports of concurrent attempts, sent together: one request per batch, at most
    one a `linger` (paced): an outcome after a quiet `linger` goes at once, and under load the
    request rate stays at one a linger while each carries more. Eager batching (a request as
    soon as the last returned) sent one or two outcomes a request at 200 jobs/s; paced (with
    the receive loop's hand-off beside it) our processes' CPU a job there was 0.91 times the eager
    revision's in the same runs (bench/e2e_compare.py), and an outcome is stored up to a linger
    later."""

    def __init__(self, api: WorkerApi, *, max_batch: int = 100, linger: float = 0.02) -> None:
        # the server answers one ack per report, in request order
        self._batcher: Batcher[OutcomeReport, OutcomeAck] = Batcher(
            api.report, max_batch=max_batch, linger=linger, paced=True
        )

    async def report(self, report: OutcomeReport) -> OutcomeAck:
        """The server's answer: `applied` False when the report was stale."""
        return await self._batcher.submit(report)

    async def aclose(self) -> None:
        await self._batcher.aclose()
