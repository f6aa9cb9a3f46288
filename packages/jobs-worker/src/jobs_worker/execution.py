"""Running one handler on one payload: validation, the timeout, the thread pool for sync
handlers, and turning whatever happened into an outcome. No I/O besides the handler's own."""

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
from jobs_worker.registry import Handler, InvalidPayload

__all__ = ["Failed", "Outcome", "Succeeded", "execute", "failure_from"]

logger = logging.getLogger(__name__)

_MAX_MESSAGE = 10_000
_MAX_TRACEBACK = 100_000


@dataclass(frozen=True, slots=True)
class Succeeded:
    result: JsonValue


@dataclass(frozen=True, slots=True)
class Failed:
    failure: FailureInfo


Outcome = Succeeded | Failed


async def execute(
    handler: Handler | None,
    payload: dict[str, Any],
    ctx: JobContext,
    *,
    timeout_seconds: float,
    executor: Executor | None = None,
    known: list[str] | None = None,
) -> Outcome:
    """Validate, run under `timeout_seconds`, and report what happened. Cancellation of the calling
    task (shutdown, lost lease) propagates."""
    if handler is None:
        return _unknown_job_type(ctx.job_type, known or [])
    try:
        model = handler.parse(payload)
    except InvalidPayload as exc:
        return Failed(_info("InvalidPayload", exc.message, retryable=False))
    try:
        async with asyncio.timeout(timeout_seconds) as scope:
            result = await _call(handler, model, ctx, executor)
    except TimeoutError as exc:
        if not scope.expired():
            return Failed(failure_from(exc))
        return _timed_out(handler, timeout_seconds)
    except Exception as exc:
        return Failed(failure_from(exc))
    return _succeeded(handler, result)


async def _call(handler: Handler, model: Any, ctx: JobContext, executor: Executor | None) -> Any:
    args = handler.arguments(model, ctx)
    if handler.is_async:
        return await handler.func(*args)
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


def _timed_out(handler: Handler, timeout: float) -> Failed:
    if not handler.is_async:
        # a thread cannot be interrupted: it runs on, holding a pool thread, until it returns
        logger.warning(
            "sync handler timed out; its thread keeps running", extra={"job_type": handler.name}
        )
    return Failed(
        _info(
            "Timeout",
            f"handler {handler.name!r} ran longer than the use case's timeout of {timeout:g} s",
            retryable=True,
        )
    )


def _succeeded(handler: Handler, result: Any) -> Outcome:
    try:
        return Succeeded(to_jsonable_python(result))
    except PydanticSerializationError as exc:
        message = f"handler {handler.name!r} returned a result that is not JSON-serializable: {exc}"
        return Failed(_info("ResultNotSerializable", message, retryable=False))
