"""Registration checks and handler execution, without any I/O."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from pydantic import BaseModel

from jobs_worker import JobContext, PermanentFailure, RegistrationError, Registry, Retry
from jobs_worker.testing import Failed, Succeeded, make_context, run_handler


class Email(BaseModel):
    to: str
    subject: str = "hi"


def test_duplicate_name_is_refused_naming_both_functions():
    registry = Registry()

    @registry.handler("notifications.send_email")
    async def first(payload: Email, ctx: JobContext) -> None: ...

    with pytest.raises(RegistrationError) as err:

        @registry.handler("notifications.send_email")
        async def second(payload: Email, ctx: JobContext) -> None: ...

    message = str(err.value)
    assert "already has a handler" in message
    assert "first" in message and "second" in message


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (lambda: None, "takes 0 required parameters"),
        (lambda a, b, c: None, "takes 3 required parameters"),
    ],
)
def test_wrong_arity_is_refused(func: Any, expected: str):
    with pytest.raises(RegistrationError, match=expected):
        Registry().register("x.y", func)


def test_payload_must_be_a_pydantic_model():
    async def untyped(payload, ctx):  # type: ignore[no-untyped-def]
        return None

    def wrong(payload: dict[str, Any], ctx: JobContext) -> None: ...

    with pytest.raises(RegistrationError, match="annotate parameter 'payload' with a pydantic"):
        Registry().register("a.untyped", untyped)
    with pytest.raises(RegistrationError, match="not a pydantic BaseModel subclass"):
        Registry().register("a.wrong", wrong)


def test_second_parameter_must_take_the_context():
    def sync_wrong(payload: Email, ctx: int) -> None: ...

    with pytest.raises(RegistrationError, match="the runtime passes a JobContext there"):
        Registry().register("a.b", sync_wrong)


def test_required_keyword_only_and_generators_are_refused():
    async def kwonly(payload: Email, ctx: JobContext, *, retries: int) -> None: ...

    async def agen(payload: Email, ctx: JobContext):  # type: ignore[no-untyped-def]
        yield 1

    with pytest.raises(RegistrationError, match="keyword-only parameter 'retries'"):
        Registry().register("a.kw", kwonly)
    with pytest.raises(RegistrationError, match="is a generator"):
        Registry().register("a.gen", agen)


def test_unresolvable_annotation_is_refused():
    async def h(payload: Missing, ctx: JobContext) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(RegistrationError, match="cannot resolve its annotations"):
        Registry().register("a.b", h)


def test_decorator_returns_the_function_and_include_merges():
    a, b = Registry(), Registry()

    @a.handler("one")
    def one(payload: Email) -> str:
        return payload.to

    b.handler("two")(one)
    a.include(b)
    assert one(Email(to="x")) == "x"
    assert a.names == ["one", "two"]
    with pytest.raises(RegistrationError):
        a.include(b)


async def test_result_and_failures_as_the_server_records_them():
    registry = Registry()

    @registry.handler("ok")
    async def ok(payload: Email, ctx: JobContext) -> Email:
        return payload

    @registry.handler("later")
    async def later(payload: Email, ctx: JobContext) -> None:
        raise Retry("rate limited", delay=7)

    @registry.handler("never")
    def never(payload: Email, ctx: JobContext) -> None:
        raise PermanentFailure("mailbox does not exist")

    @registry.handler("boom")
    async def boom(payload: Email, ctx: JobContext) -> None:
        raise KeyError("k")

    assert await run_handler(registry, "ok", {"to": "a"}) == Succeeded({"to": "a", "subject": "hi"})
    retry = await run_handler(registry, "later", {"to": "a"})
    assert isinstance(retry, Failed) and retry.failure.retryable
    assert retry.failure.retry_delay_seconds == 7
    never_ = await run_handler(registry, "never", {"to": "a"})
    assert isinstance(never_, Failed) and not never_.failure.retryable
    assert never_.failure.type.endswith("PermanentFailure")
    boom_ = await run_handler(registry, "boom", {"to": "a"})
    assert isinstance(boom_, Failed) and boom_.failure.type == "KeyError"
    assert boom_.failure.retryable and "raise KeyError" in (boom_.failure.traceback or "")


async def test_invalid_payload_and_unknown_type_are_permanent_and_say_why():
    registry = Registry()

    @registry.handler("send")
    async def send(payload: Email, ctx: JobContext) -> None: ...

    bad = await run_handler(registry, "send", {"subject": 3})
    assert isinstance(bad, Failed) and not bad.failure.retryable
    assert bad.failure.type == "InvalidPayload"
    assert "to: Field required" in bad.failure.message
    assert "subject: Input should be a valid string" in bad.failure.message
    unknown = await run_handler(registry, "nope", {})
    assert isinstance(unknown, Failed) and not unknown.failure.retryable
    assert "no handler for job type 'nope'" in unknown.failure.message
    assert "'send'" in unknown.failure.message


async def test_timeout_is_a_retryable_failure():
    registry = Registry()

    @registry.handler("slow")
    async def slow(payload: Email, ctx: JobContext) -> None:
        await asyncio.sleep(5)

    out = await run_handler(registry, "slow", {"to": "a"}, timeout_seconds=0.05)
    assert isinstance(out, Failed) and out.failure.type == "Timeout" and out.failure.retryable


async def test_sync_handler_runs_in_a_thread_and_sees_cancellation():
    registry = Registry()
    seen: dict[str, object] = {}

    @registry.handler("sync")
    def sync(payload: Email, ctx: JobContext) -> bool:
        seen["thread"] = threading.current_thread().name
        return ctx.cancelled

    ctx = make_context("sync", cancelled=True)
    assert await run_handler(registry, "sync", {"to": "a"}, context=ctx) == Succeeded(True)
    assert seen["thread"] != threading.main_thread().name


async def test_result_that_is_not_json_is_a_permanent_failure():
    registry = Registry()

    @registry.handler("weird")
    async def weird(payload: Email, ctx: JobContext) -> object:
        return object()

    out = await run_handler(registry, "weird", {"to": "a"})
    assert isinstance(out, Failed) and out.failure.type == "ResultNotSerializable"
