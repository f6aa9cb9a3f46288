"""Running one handler on one payload: validation, the timeout, where the handler runs (async
ones on a handler loop, sync ones on a thread pool), and turning whatever happened into an
outcome. No I/O besides the handler's own."""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import functools
import logging
import traceback
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from pydantic import JsonValue
from pydantic_core import PydanticSerializationError, to_jsonable_python

from jobs_schema import FailureInfo
from jobs_worker.context import JobContext
from jobs_worker.errors import JobCancelled, PermanentFailure, Retry
from jobs_worker.loops import BLAME_AFTER, HandlerLoop, HandlerLoops
from jobs_worker.registry import Handler, InvalidPayload

__all__ = [
    "Failed",
    "Interrupted",
    "Outcome",
    "Succeeded",
    "execute",
    "failure",
    "failure_from",
    "timeout_failure",
]

logger = logging.getLogger(__name__)

_MAX_MESSAGE = 10_000
_MAX_TRACEBACK = 100_000


@dataclass(frozen=True, slots=True)
class Succeeded:
    result: JsonValue


@dataclass(frozen=True, slots=True)
class Failed:
    failure: FailureInfo


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The attempt was stopped through no fault of its own (another handler blocked the loop
    it shared): its lease is given back, and the attempt does not count."""

    reason: str


Outcome = Succeeded | Failed | Interrupted


async def execute(
    handler: Handler | None,
    payload: dict[str, Any],
    ctx: JobContext,
    *,
    timeout_seconds: float,
    executor: Executor | None = None,
    known: list[str] | None = None,
    loops: HandlerLoops | None = None,
) -> Outcome:
    """Validate, run under `timeout_seconds`, and report what happened. With `loops`, an async
    handler runs on a handler loop, so that its timeout fires even when it blocks that loop.
    Cancellation of the calling task (shutdown, lost lease) propagates."""
    if handler is None:
        return _unknown_job_type(ctx.job_type, known or [])
    try:
        model = handler.parse(payload)
    except InvalidPayload as exc:
        return Failed(_info("InvalidPayload", exc.message, retryable=False))
    where: list[HandlerLoop] = []
    try:
        async with asyncio.timeout(timeout_seconds) as scope:
            result = await _call(handler, model, ctx, executor, loops, where)
    except TimeoutError as exc:
        if not scope.expired():
            return Failed(failure_from(exc))
        return _timed_out(handler, timeout_seconds, ctx, loops, where)
    except (Exception, SystemExit) as exc:
        return Failed(failure_from(exc))
    return _succeeded(handler, result)


async def _call(
    handler: Handler,
    model: Any,
    ctx: JobContext,
    executor: Executor | None,
    loops: HandlerLoops | None,
    where: list[HandlerLoop],
) -> Any:
    args = handler.arguments(model, ctx)
    if handler.is_async:
        if loops is None:
            return await handler.func(*args)
        context = contextvars.copy_context()
        handler_loop, future = loops.submit(
            handler.func(*args), name=str(ctx.job_id), context=context
        )
        where.append(handler_loop)
        return await future
    loop = asyncio.get_running_loop()
    # copy_context: contextvars (e.g. tracing) reach the thread, as asyncio.to_thread does
    call = functools.partial(contextvars.copy_context().run, handler.func, *args)
    return await loop.run_in_executor(executor, call)


def failure_from(exc: BaseException) -> FailureInfo:
    """A raised exception as the server records it."""
    if isinstance(exc, Retry):
        return _info("Retry", exc.message, retryable=True, delay=exc.delay, exc=exc)
    retryable = not isinstance(exc, PermanentFailure | JobCancelled)
    return _info(_type_name(exc), str(exc) or type(exc).__name__, retryable=retryable, exc=exc)


def _info(
    type_: str,
    message: str,
    *,
    retryable: bool,
    delay: float | None = None,
    exc: BaseException | None = None,
) -> FailureInfo:
    tb = "".join(traceback.format_exception(exc)) if exc is not None else None
    return FailureInfo(
        type=type_[:200],
        message=message[:_MAX_MESSAGE],
        traceback=tb[-_MAX_TRACEBACK:] if tb else None,
        retryable=retryable,
        retry_delay_seconds=delay,
    )


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    if getattr(builtins, cls.__name__, None) is cls:
        return str(cls.__name__)
    return f"{cls.__module__}.{cls.__qualname__}"


def _unknown_job_type(job_type: str, known: list[str]) -> Failed:
    handled = ", ".join(repr(k) for k in known) or "none"
    return Failed(
        _info(
            "UnknownJobType",
            f"no handler for job type {job_type!r} in this worker (it handles: {handled})",
            retryable=False,
        )
    )


def _timed_out(
    handler: Handler,
    timeout: float,
    ctx: JobContext,
    loops: HandlerLoops | None,
    where: list[HandlerLoop],
) -> Outcome:
    if not handler.is_async:
        # a thread cannot be interrupted: it runs on, holding a pool thread, until it returns
        logger.warning(
            "sync handler timed out; its thread keeps running", extra={"job_type": handler.name}
        )
    blocked = loops.blocked(where[0], at_least=BLAME_AFTER) if loops is not None and where else None
    if blocked is not None and blocked.job not in (None, str(ctx.job_id)):
        return Interrupted(f"job {blocked.job} blocked the event loop this handler shared")
    note = " (and blocked its event loop)" if blocked is not None else ""
    return timeout_failure(handler.name, timeout, note=note)


def timeout_failure(job_type: str, timeout: float, *, note: str = "") -> Failed:
    return Failed(
        _info(
            "Timeout",
            f"handler {job_type!r} ran longer than the use case's timeout of {timeout:g} s{note}",
            retryable=True,
        )
    )


def failure(type_: str, message: str, *, retryable: bool = True) -> Failed:
    """A failure the runtime records itself (e.g. a crashed handler process)."""
    return Failed(_info(type_, message, retryable=retryable))


def _succeeded(handler: Handler, result: Any) -> Outcome:
    try:
        return Succeeded(to_jsonable_python(result))
    except PydanticSerializationError as exc:
        message = f"handler {handler.name!r} returned a result that is not JSON-serializable: {exc}"
        return Failed(_info("ResultNotSerializable", message, retryable=False))
