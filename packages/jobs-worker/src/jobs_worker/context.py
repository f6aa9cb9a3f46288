"""JobContext: what a handler knows about the attempt it runs, and what it may do besides."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from uuid import UUID

from jobs_worker.errors import JobCancelled, JobsWorkerError

if TYPE_CHECKING:
    from jobs_sdk import JobsClient

__all__ = [
    "CancelSignal",
    "JobContext",
    "JobLogger",
    "JobsClientProvider",
    "TenantClients",
    "job_logger",
]

T = TypeVar("T")

# Gives the client that enqueues as the job's tenant (the server takes the tenant from the token).
JobsClientProvider = Callable[[str], "JobsClient"]


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds the job's fields to every record, keeping the caller's own `extra` too."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


class CancelSignal:
    """Set on the event loop when the server answers a heartbeat with `cancelled`; readable
    from a sync handler's thread as well."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._event = asyncio.Event()

    def set(self) -> None:
        self._flag.set()
        self._event.set()

    def is_set(self) -> bool:
        return self._flag.is_set()

    async def wait(self) -> None:
        await self._event.wait()


def _no_client(tenant: str) -> NoReturn:
    raise JobsWorkerError(
        f"no jobs client for tenant {tenant!r}: give the worker the tenant's token "
        "(JOBS_TENANTS or the [tenants] of JOBS_CONFIG_FILE) and JOBS_SERVER_URL"
    )


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

    @property
    def jobs(self) -> JobsClient:
        """A jobs-sdk client for enqueuing follow-up jobs as this job's tenant."""
        if self._clients is None:
            _no_client(self.tenant)
        if isinstance(self._clients, TenantClients):
            # a sync handler's thread has no loop: its client is used on `_loop` (run_async)
            return self._clients.client(self.tenant, loop=_running_loop() or self._loop)
        return self._clients(self.tenant)

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

    def __call__(self, tenant: str) -> JobsClient:
        return self.client(tenant, loop=_running_loop())

    def client(self, tenant: str, *, loop: asyncio.AbstractEventLoop | None) -> JobsClient:
        key = (tenant, loop)
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
        mine = [k for k in self._clients if k[1] in (loop, None)]
        for key in mine:
            await self._clients.pop(key).aclose()
