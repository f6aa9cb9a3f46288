"""Sending one `Call` with the retry rules: the I/O of the clients (`AsyncSender` for the
producer's `JobsClient` and the worker's `WorkerApiClient`, `SyncSender` for `SyncJobsClient`);
the same loop twice, once awaiting and once blocking."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import httpx
from pydantic import BaseModel

from jobs_sdk import _http
from jobs_sdk._http import Call
from jobs_sdk._retry import RetryPolicy, retry_delay

__all__ = ["AnswerObserver", "AsyncSender", "Sent", "SyncSender"]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

# Called with every answer and the time.time() just before its request and after its answer.
AnswerObserver = Callable[[httpx.Response, float, float], None]


class Sent(NamedTuple):
    response: httpx.Response
    attempts: int


def log_retry(call: Call, outcome: httpx.Response | Exception, attempt: int, delay: float) -> None:
    reason = (
        f"HTTP {outcome.status_code}"
        if isinstance(outcome, httpx.Response)
        else type(outcome).__name__
    )
    logger.info(
        "retrying jobs API request",
        extra={
            "method": call.method,
            "path": call.path,
            "attempt": attempt,
            "reason": reason,
            "delay": round(delay, 3),
        },
    )


def final(outcome: httpx.Response | httpx.TransportError, attempts: int) -> Sent:
    if isinstance(outcome, httpx.TransportError):
        raise _http.transport_error(outcome) from outcome
    return Sent(outcome, attempts)


class AsyncSender:
    """Sends calls on `http`, resending by `retry`; `observe` sees every answer."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        retry: RetryPolicy,
        *,
        observe: AnswerObserver | None = None,
    ) -> None:
        self.http = http
        self.retry = retry
        self._observe = observe

    async def request(self, call: Call, model: type[M]) -> M:
        return _http.parse((await self.send(call)).response, model)

    async def send(self, call: Call) -> Sent:
        attempt, started = 1, time.monotonic()
        while True:
            outcome = await self._attempt(call)
            delay = retry_delay(
                self.retry,
                outcome,
                attempt=attempt,
                replayable=call.replayable,
                elapsed=time.monotonic() - started,
            )
            if delay is None:
                return final(outcome, attempt)
            log_retry(call, outcome, attempt, delay)
            await asyncio.sleep(delay)
            attempt += 1

    async def _attempt(self, call: Call) -> httpx.Response | httpx.TransportError:
        sent = time.time()
        try:
            response = await self.http.request(
                call.method,
                call.path,
                content=call.content,
                params=call.params,
                headers=call.headers(),
            )
        except httpx.TransportError as exc:
            return exc
        if self._observe is not None:
            self._observe(response, sent, time.time())
        return response


class SyncSender:
    """AsyncSender's twin for httpx.Client, blocking while it waits."""

    def __init__(self, http: httpx.Client, retry: RetryPolicy) -> None:
        self.http = http
        self.retry = retry

    def request(self, call: Call, model: type[M]) -> M:
        return _http.parse(self.send(call).response, model)

    def send(self, call: Call) -> Sent:
        attempt, started = 1, time.monotonic()
        while True:
            outcome = self._attempt(call)
            delay = retry_delay(
                self.retry,
                outcome,
                attempt=attempt,
                replayable=call.replayable,
                elapsed=time.monotonic() - started,
            )
            if delay is None:
                return final(outcome, attempt)
            log_retry(call, outcome, attempt, delay)
            time.sleep(delay)
            attempt += 1

    def _attempt(self, call: Call) -> httpx.Response | httpx.TransportError:
        try:
            return self.http.request(
                call.method,
                call.path,
                content=call.content,
                params=call.params,
                headers=call.headers(),
            )
        except httpx.TransportError as exc:
            return exc
