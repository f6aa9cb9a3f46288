"""JobContext: what a handler knows about the attempt it runs, and what it may do besides."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from uuid import UUID

import httpx

from jobs_schema import JobMessage, LeaseRef
from jobs_schema.workflows import ParentResult
from jobs_worker.errors import JobCancelled, JobsWorkerError

if TYPE_CHECKING:
    from jobs_sdk import JobsApi, JobsClient

__all__ = [
    "CancelSignal",
    "JobContext",
    "JobLogger",
    "JobsClientProvider",
    "LeaseClients",
    "TenantClients",
    "job_fields",
    "job_logger",
]

T = TypeVar("T")

# Reads the attempt's job's parents (WorkerApi.parents of its job id).
ParentsReader = Callable[[], Coroutine[Any, Any, list["ParentResult"]]]

# Gives the client a handler enqueues follow-up jobs with, as the job's tenant (the server
# takes the tenant from the credential).
JobsClientProvider = Callable[["JobContext"], "JobsApi"]


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds the job's fields to every record, keeping the caller's own `extra` too."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


class CancelSignal:
    """Set on the runtime's event loop when the server says the job was cancelled; readable
    from a sync handler's thread, and awaitable on any event loop: async handlers run on
    handler loops of their own, which a plain asyncio.Event set from the runtime's loop
    would not wake."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def set(self) -> None:
        with self._lock:
            self._flag.set()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_wake, future)

    def is_set(self) -> bool:
        return self._flag.is_set()

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._flag.is_set():
                return
            self._waiters.append((loop, future))
        try:
            await future
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove((loop, future))


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _no_client(tenant: str) -> NoReturn:
    raise JobsWorkerError(
        f"no jobs client for tenant {tenant!r}: the worker enqueues with the attempt's lease "
        "(LeaseClients, given JOBS_SERVER_URL), or with the tenant's token (TenantClients)"
    )


def job_fields(job: JobMessage) -> dict[str, object]:
    """The fields every log line about this attempt carries."""
    return {
        "job_id": str(job.job_id),
        "job_type": job.job_type,
        "use_case": job.use_case,
        "tenant": job.tenant,
        "attempt": job.attempt,
    }


@dataclass
class JobContext:
    """Handed to a handler beside its payload."""

    job_id: UUID
    tenant: str
    use_case: str
    job_type: str
    attempt: int
    max_attempts: int
    deadline: datetime
    worker_id: str
    logger: JobLogger
    trace_context: Mapping[str, str] = field(default_factory=dict)
    _cancel: CancelSignal = field(default_factory=CancelSignal, repr=False)
    _clients: JobsClientProvider | None = field(default=None, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _lease: LeaseRef | None = field(default=None, repr=False)
    _client: JobsApi | None = field(default=None, repr=False)
    # the worker API's read of this job's parents, and the loop its connections belong to
    _parents: ParentsReader | None = field(default=None, repr=False)
    _api_loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _parent_results: dict[UUID, ParentResult] | None = field(default=None, repr=False)

    @classmethod
    def for_message(
        cls,
        job: JobMessage,
        *,
        worker_id: str,
        logger_name: str,
        cancel: CancelSignal,
        clients: JobsClientProvider | None,
        loop: asyncio.AbstractEventLoop,
        parents: ParentsReader | None = None,
    ) -> JobContext:
        """The context of the attempt `job` names; `loop` is where a sync handler's
        `run_async` runs, `logger_name` the handler's module."""
        return cls(
            job_id=job.job_id,
            tenant=job.tenant,
            use_case=job.use_case,
            job_type=job.job_type,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            deadline=job.deadline,
            worker_id=worker_id,
            logger=job_logger(logging.getLogger(logger_name), **job_fields(job)),
            trace_context=job.trace_context,
            _cancel=cancel,
            _clients=clients,
            _loop=loop,
            _lease=LeaseRef(job_id=job.job_id, attempt=job.attempt, lease_token=job.lease_token),
            _parents=parents,
            _api_loop=_running_loop() if parents is not None else None,
        )

    @property
    def jobs(self) -> JobsApi:
        """A jobs-sdk client for enqueuing follow-up jobs as this job's tenant."""
        if self._client is None:
            if self._clients is None:
                _no_client(self.tenant)
            self._client = self._clients(self)
        return self._client

    @property
    def event_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop this attempt's clients run on: the handler's own, or for a sync handler's
        thread (which has none) the loop its `run_async` uses."""
        return _running_loop() or self._loop

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled: stop when convenient; the outcome will not count."""
        return self._cancel.is_set()

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    @property
    def deadline_passed(self) -> bool:
        return datetime.now(UTC) > self.deadline

    async def parent_results(self) -> dict[UUID, ParentResult]:
        """The job's parents (its depends_on), by id, with their states and results: a
        parent's `result` is what its handler returned (docs/workflows.md). Read from the
        server once per attempt; from a sync handler, `ctx.run_async(ctx.parent_results())`."""
        if self._parent_results is None:
            if self._parents is None:
                raise JobsWorkerError("this worker has no worker API to read parents from")
            read = self._parents
            loop = self._api_loop
            if loop is None or loop is _running_loop():
                parents = await read()
            else:  # a handler loop: the worker API's connections belong to the runtime's
                parents = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(read(), loop))
            self._parent_results = {p.id: p for p in parents}
        return dict(self._parent_results)

    async def wait_cancelled(self) -> None:
        """Return once the job is cancelled (e.g. race it against the work)."""
        await self._cancel.wait()

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled(f"job {self.job_id} was cancelled")

    def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """From a sync handler: run `coro` (e.g. `ctx.jobs.enqueue(...)`) on the worker's loop
        and wait for its result."""
        if self._loop is None:
            coro.close()
            raise JobsWorkerError("run_async needs the worker's event loop (sync handlers only)")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


def job_logger(base: logging.Logger, **fields: object) -> JobLogger:
    return JobLogger(base, {k: str(v) for k, v in fields.items()})


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class TenantClients:
    """A JobsClientProvider: one jobs-sdk client per tenant and event loop (a client's
    connections belong to the loop that opened them, and handlers run on handler loops), made
    on first use with the tenant's token, closed with its loop or the worker."""

    def __init__(self, base_url: str | None, tokens: Mapping[str, str]) -> None:
        self._base_url = base_url
        self._tokens = dict(tokens)
        self._clients: dict[tuple[str, asyncio.AbstractEventLoop | None], JobsClient] = {}

    def __call__(self, ctx: JobContext) -> JobsClient:
        tenant = ctx.tenant
        key = (tenant, ctx.event_loop)
        if key not in self._clients:
            token = self._tokens.get(tenant)
            if self._base_url is None or token is None:
                _no_client(tenant)
            from jobs_sdk import JobsClient  # only workers whose handlers enqueue need it

            self._clients[key] = JobsClient(self._base_url, token)
        return self._clients[key]

    async def aclose(self) -> None:
        """Close the clients of the running loop (and of no loop); those of other loops are
        closed on their own loops (a handler loop closes its clients before it stops)."""
        loop = _running_loop()
        for key in [k for k in self._clients if k[1] in (loop, None)]:
            await self._clients.pop(key).aclose()


class _Shared(httpx.AsyncBaseTransport):
    """One connection pool for every attempt's client; closing a client leaves it open."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        return None


class LeaseClients:
    """A JobsClientProvider that needs no tenant token: each attempt's client authenticates
    with the attempt's lease credential (`lease.<job id>.<attempt>.<lease token>`), which the
    server accepts for enqueues, as the job's tenant, only while the lease lives. The clients
    share one connection pool per event loop (connections belong to the loop that opened
    them, and handlers run on handler loops), closed with that loop or the worker."""

    def __init__(self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._base_url = base_url
        self._given = transport
        self._pools: dict[asyncio.AbstractEventLoop | None, httpx.AsyncBaseTransport] = {}

    def __call__(self, ctx: JobContext) -> JobsClient:
        if ctx._lease is None:
            _no_client(ctx.tenant)
        from jobs_sdk import JobsClient  # only workers whose handlers enqueue need it

        loop = ctx.event_loop
        if loop not in self._pools:
            self._pools[loop] = self._given or httpx.AsyncHTTPTransport()
        transport = _Shared(self._pools[loop])
        return JobsClient(self._base_url, ctx._lease.credential(), transport=transport)

    async def aclose(self) -> None:
        """Close the pool of the running loop (and of no loop); those of other loops are closed
        on their own loops, as TenantClients' are."""
        loop = _running_loop()
        for key in [k for k in self._pools if k in (loop, None)]:
            await self._pools.pop(key).aclose()
