"""Talking to the jobs server's worker API: `WorkerApi` is the port, `HttpWorkerApi` the httpx
adapter (retries connection errors and 502/503/504), `Reporter` batches outcome reports."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol, TypeVar
from uuid import UUID, uuid4

import httpx
from pydantic import BaseModel, ValidationError

from jobs_schema import (
    ErrorEnvelope,
    HeartbeatItem,
    HeartbeatRequest,
    HeartbeatResponse,
    HeartbeatResult,
    LeaseRef,
    OutcomeAck,
    OutcomeReport,
    OutcomeRequest,
    OutcomeResponse,
    Payload,
    PayloadResponse,
    ReleaseRequest,
    ReleaseResponse,
)
from jobs_worker.batching import Batcher
from jobs_worker.errors import ConfigError, WorkerApiError

__all__ = [
    "HttpWorkerApi",
    "JobGone",
    "Reporter",
    "ServerClock",
    "ServerUnavailable",
    "WorkerApi",
]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

_RETRY_STATUSES = frozenset({502, 503, 504})
_MAX_ITEMS = 1000  # the worker API's limit per request


class JobGone(WorkerApiError):
    """The job is no longer running (finished, cancelled or given to another attempt)."""


class ServerUnavailable(WorkerApiError):
    """Connection errors or 502/503/504 on every try: worth trying again later."""


class ServerClock:
    """The server's clock as this worker sees it, learnt from the `Date` header of its answers
    (whole seconds, so the estimate is off by up to a second plus a round trip). Leases are
    stamped by the server's clock; this host's may be skewed."""

    UNCERTAINTY = 1.5  # seconds: the header's resolution plus a round trip

    def __init__(self) -> None:
        self._offset = 0.0  # server time - local time, in seconds
        self.known = False

    def observe(self, date_header: str | None, *, sent: float, received: float) -> None:
        """`sent` and `received`: time.time() around the request."""
        if not date_header:
            return
        try:
            server = parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError):
            return
        # the header truncates to the second: the server's reading lies in [server, server + 1)
        self._offset = server + 0.5 - (sent + received) / 2
        self.known = True

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._offset)


class WorkerApi(Protocol):
    clock: ServerClock

    async def report(self, reports: list[OutcomeReport]) -> list[OutcomeAck]: ...

    async def heartbeat(
        self, worker_id: str, items: list[HeartbeatItem]
    ) -> list[HeartbeatResult]: ...

    async def release(self, worker_id: str, leases: list[LeaseRef]) -> list[UUID]: ...

    async def payload(self, job_id: UUID) -> Payload: ...

    async def close(self) -> None: ...


class HttpWorkerApi:
    """The worker API over HTTP with the worker token. Every call is safe to resend: reports,
    heartbeats and releases are fenced by lease on the server."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        attempts: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "jobs-worker"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
        )
        self._attempts = max(1, attempts)
        self.clock = ServerClock()

    async def close(self) -> None:
        await self._http.aclose()

    async def check(self) -> None:
        """Is the server there, and does it take our token? (A payload request for a job that
        does not exist answers 404 once the token is accepted.) A refused token is a
        ConfigError; an unreachable server a ServerUnavailable, worth waiting for."""
        path = f"/v1/worker/jobs/{uuid4()}/payload"
        try:
            resp = await self._http.get(path)
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"cannot reach the jobs server: {exc!r}") from exc
        if resp.status_code in (401, 403):
            raise ConfigError(
                "JOBS_WORKER_TOKEN: the jobs server refused the worker token: "
                f"{_server_message(resp)}"
            )
        if resp.status_code != 404:
            raise WorkerApiError(f"unexpected answer from the jobs server: HTTP {resp.status_code}")

    async def report(self, reports: list[OutcomeReport]) -> list[OutcomeAck]:
        acks: list[OutcomeAck] = []
        for chunk in _chunks(reports):
            body = OutcomeRequest(reports=chunk)
            acks += (await self._post("/v1/worker/outcomes", body, OutcomeResponse)).acks
        return acks

    async def heartbeat(self, worker_id: str, items: list[HeartbeatItem]) -> list[HeartbeatResult]:
        results: list[HeartbeatResult] = []
        for chunk in _chunks(items):
            body = HeartbeatRequest(worker_id=worker_id, items=chunk)
            results += (await self._post("/v1/worker/heartbeats", body, HeartbeatResponse)).results
        return results

    async def release(self, worker_id: str, leases: list[LeaseRef]) -> list[UUID]:
        released: list[UUID] = []
        for chunk in _chunks(leases):
            body = ReleaseRequest(worker_id=worker_id, leases=chunk)
            released += (await self._post("/v1/worker/release", body, ReleaseResponse)).released
        return released

    async def payload(self, job_id: UUID) -> Payload:
        path = f"/v1/worker/jobs/{job_id}/payload"
        return (await self._send("GET", path, None, PayloadResponse)).payload

    async def _post(self, path: str, body: BaseModel, model: type[M]) -> M:
        return await self._send("POST", path, body, model)

    async def _send(self, method: str, path: str, body: BaseModel | None, model: type[M]) -> M:
        content = body.model_dump_json().encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else None
        for attempt in range(1, self._attempts + 1):
            sent = time.time()
            try:
                resp = await self._http.request(method, path, content=content, headers=headers)
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                self.clock.observe(resp.headers.get("date"), sent=sent, received=time.time())
                if resp.status_code not in _RETRY_STATUSES:
                    return _parse(resp, method, path, model)
                failure = f"HTTP {resp.status_code}"
            if attempt < self._attempts:
                delay = min(0.1 * 2**attempt, 5.0)
                logger.info("retrying worker API call", extra={"path": path, "reason": failure})
                await asyncio.sleep(delay)
        raise ServerUnavailable(f"{method} {path} failed after {self._attempts} tries: {failure}")


def _parse(resp: httpx.Response, method: str, path: str, model: type[M]) -> M:
    if resp.status_code == 404:
        raise JobGone(f"{method} {path}: {_server_message(resp)}")
    if resp.status_code >= 400:
        raise WorkerApiError(
            f"{method} {path} answered {resp.status_code}: {_server_message(resp)}"
        )
    try:
        return model.model_validate_json(resp.content)
    except ValidationError as exc:
        raise WorkerApiError(f"{method} {path}: unexpected answer: {exc}") from exc


def _server_message(resp: httpx.Response) -> str:
    try:
        return ErrorEnvelope.model_validate_json(resp.content).error.message
    except ValidationError:
        return resp.text[:200]


T = TypeVar("T")


def _chunks(items: list[T]) -> list[list[T]]:
    return [items[i : i + _MAX_ITEMS] for i in range(0, len(items), _MAX_ITEMS)]


class Reporter:
    """Outcome reports of concurrent attempts, sent together: one request per batch."""

    def __init__(self, api: WorkerApi, *, max_batch: int = 100, linger: float = 0.02) -> None:
        # the server answers one ack per report, in request order
        self._batcher: Batcher[OutcomeReport, OutcomeAck] = Batcher(
            api.report, max_batch=max_batch, linger=linger
        )

    async def report(self, report: OutcomeReport) -> OutcomeAck:
        """The server's answer: `applied` False when the report was stale."""
        return await self._batcher.submit(report)

    async def aclose(self) -> None:
        await self._batcher.aclose()
