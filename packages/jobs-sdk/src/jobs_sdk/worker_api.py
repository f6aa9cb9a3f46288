"""`WorkerApiClient`: the jobs server's worker API (/v1/worker), for the worker token.

It shares the producer client's transport, retries, auth headers and error envelope parsing
(`_transport`, `_retry`, `_http`): a failed call raises the same JobsError tree. Every call is
safe to resend (reports, heartbeats and releases are fenced by lease on the server), so each
is retried after connection errors and the gateway answers 502, 503 and 504.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Self, TypeVar
from uuid import UUID, uuid4

import httpx
from pydantic import BaseModel

from jobs_schema import (
    CancellationsRequest,
    CancellationsResponse,
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
from jobs_schema.webhooks import WebhookTarget
from jobs_schema.workflows import ParentResult, ParentsResponse
from jobs_sdk import _http
from jobs_sdk._http import Call
from jobs_sdk._retry import RetryPolicy
from jobs_sdk._transport import AnswerObserver, AsyncSender
from jobs_sdk._version import __version__
from jobs_sdk.errors import NotFound

__all__ = ["MAX_ITEMS", "WORKER_RETRY", "WorkerApiClient"]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

MAX_ITEMS = 1000  # the worker API's limit of reports, heartbeats or leases per request
# A few quick resends: the worker keeps what failed and tries again on its own schedule.
WORKER_RETRY = RetryPolicy(
    attempts=5, base_delay=0.2, max_delay=5.0, timeout=None, statuses=frozenset({502, 503, 504})
)
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class WorkerApiClient:
    """Async client of /v1/worker. `observe` sees every answer with the time.time() around its
    request (the worker learns the server's clock from the `Date` header); `retries` and
    `transport` as for JobsClient."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: RetryPolicy = WORKER_RETRY,
        transport: httpx.AsyncBaseTransport | None = None,
        observe: AnswerObserver | None = None,
    ) -> None:
        headers = _http.client_headers(token) | {"User-Agent": f"jobs-worker/{__version__}"}
        http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._sender = AsyncSender(http, retries, observe=observe)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._sender.http.aclose()

    async def check(self) -> None:
        """Is the server there, and does it take our token? Asks for the payload of a job that
        does not exist, which answers 404 once the token is accepted: Unauthorized or
        Forbidden when it is refused, Unavailable when the server cannot be reached."""
        try:
            await self.payload(uuid4())
        except NotFound:
            return

    async def report(self, reports: Sequence[OutcomeReport]) -> list[OutcomeAck]:
        """One ack per report, in order; `applied` False when a report was stale."""
        acks: list[OutcomeAck] = []
        for chunk in _chunks(reports):
            body = OutcomeRequest(reports=chunk)
            acks += (await self._post("/v1/worker/outcomes", body, OutcomeResponse)).acks
        return acks

    async def heartbeat(
        self, worker_id: str, items: Sequence[HeartbeatItem]
    ) -> list[HeartbeatResult]:
        """Extend leases; each result says held, lost or cancelled."""
        results: list[HeartbeatResult] = []
        for chunk in _chunks(items):
            body = HeartbeatRequest(worker_id=worker_id, items=chunk)
            results += (await self._post("/v1/worker/heartbeats", body, HeartbeatResponse)).results
        return results

    async def release(self, worker_id: str, leases: Sequence[LeaseRef]) -> list[UUID]:
        """Give back leases of attempts that will not finish; the ids actually released."""
        released: list[UUID] = []
        for chunk in _chunks(leases):
            body = ReleaseRequest(worker_id=worker_id, leases=chunk)
            released += (await self._post("/v1/worker/release", body, ReleaseResponse)).released
        return released

    async def cancellations(self, worker_id: str, leases: Sequence[LeaseRef]) -> list[LeaseRef]:
        """Of these running attempts' leases, those whose job was cancelled (a read: it extends
        nothing, so it is cheap to ask every second)."""
        cancelled: list[LeaseRef] = []
        for chunk in _chunks(leases):
            body = CancellationsRequest(worker_id=worker_id, leases=chunk)
            answer = await self._post("/v1/worker/cancellations", body, CancellationsResponse)
            cancelled += answer.cancelled
        return cancelled

    async def payload(self, job_id: UUID) -> Payload:
        """The payload of a running job; NotFound once the job is no longer running."""
        call = Call("GET", f"/v1/worker/jobs/{job_id}/payload")
        return (await self._sender.request(call, PayloadResponse)).payload

    async def webhook_target(self, webhook_id: UUID) -> WebhookTarget:
        """A webhook subscription's url and signing secret, read at send time; NotFound once
        it was deleted."""
        call = Call("GET", f"/v1/worker/webhooks/{webhook_id}")
        return await self._sender.request(call, WebhookTarget)

    async def parents(self, job_id: UUID) -> list[ParentResult]:
        """The parents of a job (depends_on) with their states and results; NotFound for an
        unknown job."""
        call = Call("GET", f"/v1/worker/jobs/{job_id}/parents")
        return (await self._sender.request(call, ParentsResponse)).parents

    async def _post(self, path: str, body: BaseModel, model: type[M]) -> M:
        call = Call("POST", path, content=body.model_dump_json().encode())
        return await self._sender.request(call, model)


def _chunks(items: Sequence[T]) -> list[list[T]]:
    return [list(items[i : i + MAX_ITEMS]) for i in range(0, len(items), MAX_ITEMS)]
