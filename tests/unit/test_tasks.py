"""Typed tasks: mypy refuses a wrong payload, and so does the task at run time, before any
request; defaults and registration against the same declaration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel

from jobs_schema import BackoffPolicy
from jobs_sdk import JobsClient, SyncJobsClient, Task, ValidationFailed
from jobs_worker import JobContext, RegistrationError, Registry
from jobs_worker.testing import Succeeded, run_handler

SNIPPET = Path(__file__).parent / "snippets" / "task_types.py"


class SendEmail(BaseModel):
    to: str
    subject: str = "hi"


class SendPush(BaseModel):
    device: str


send_email = Task(
    "notifications",
    "notifications.send_email",
    SendEmail,
    delay_tolerance=30,
    priority=5,
    max_attempts=4,
)


def _no_request(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"nothing may be sent, but {request.url} was")


def test_mypy_refuses_wrong_payloads_and_options(tmp_path: Path):
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\nplugins = pydantic.mypy\n")
    env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), str(SNIPPET)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    errors = {
        int(m.group(1)): m.group(2)
        for m in re.finditer(rf"{re.escape(str(SNIPPET))}:(\d+): error: (.*)", done.stdout)
    }
    expected = {
        n: line.split("# error: ")[1].strip()
        for n, line in enumerate(SNIPPET.read_text().splitlines(), start=1)
        if "# error: " in line
    }
    assert sorted(errors) == sorted(expected), done.stdout
    for n, word in expected.items():
        assert word in errors[n], (n, errors[n])
    enqueue_line = next(n for n, e in errors.items() if 'to "enqueue" of "Task"' in e)
    assert 'incompatible type "SendPush"; expected "SendEmail"' in errors[enqueue_line]


async def test_a_wrong_payload_is_refused_before_any_request():
    async with JobsClient("http://jobs", "tok", transport=httpx.MockTransport(_no_request)) as jobs:
        with pytest.raises(ValidationFailed, match="takes a SendEmail payload, not dict"):
            await send_email.enqueue(jobs, {"too": 1})  # type: ignore[arg-type]
        with pytest.raises(ValidationFailed, match="not SendPush"):
            await send_email.enqueue(jobs, SendPush(device="d"))  # type: ignore[arg-type]
        with pytest.raises(ValidationFailed, match="to: Field required"):
            await send_email.enqueue(jobs, SendEmail.model_construct(subject="no recipient"))
        with pytest.raises(ValidationFailed, match="to: Input should be a valid string"):
            bad = SendEmail.model_construct(to=3)
            await send_email.enqueue_many(jobs, [SendEmail(to="a@b.c"), bad])


def test_sync_variant_refuses_the_same():
    transport = httpx.MockTransport(_no_request)
    with (
        SyncJobsClient("http://jobs", "tok", transport=transport) as jobs,
        pytest.raises(ValidationFailed, match="takes a SendEmail payload"),
    ):
        send_email.enqueue_sync(jobs, {"to": "a@b.c"})  # type: ignore[arg-type]


def test_defaults_apply_unless_the_call_overrides_them():
    request = send_email.request(SendEmail(to="a@b.c"))
    assert (request.use_case, request.job_type) == ("notifications", "notifications.send_email")
    assert request.payload == {"to": "a@b.c", "subject": "hi"}
    assert (request.delay_tolerance_seconds, request.priority, request.max_attempts) == (30, 5, 4)
    custom = send_email.request(
        SendEmail(to="a@b.c"), priority=-1, delay_tolerance=timedelta(minutes=2), dedup_key="k"
    )
    assert (custom.delay_tolerance_seconds, custom.priority, custom.dedup_key) == (120, -1, "k")
    keyed = send_email.request(SendEmail(to="a@b.c"), concurrency_key="acct-1", rate_key="smtp")
    assert (keyed.concurrency_key, keyed.rate_key) == ("acct-1", "smtp")
    deadline = datetime(2030, 1, 1, tzinfo=UTC)
    absolute = send_email.request(SendEmail(to="a@b.c"), deadline=deadline)
    assert (absolute.deadline, absolute.delay_tolerance_seconds) == (deadline, None)


def test_a_bad_declaration_fails_where_it_is_written():
    with pytest.raises(ValidationFailed, match="priority"):
        Task("notifications", "x", SendEmail, priority=5000)
    with pytest.raises(ValidationFailed, match="job_type"):
        Task("notifications", "", SendEmail)
    with pytest.raises(TypeError, match="pydantic BaseModel subclass"):
        Task("notifications", "x", dict)  # type: ignore[type-var]
    backoff = BackoffPolicy(base_seconds=2)
    assert Task("n", "x", SendEmail, backoff=backoff).request(SendEmail(to="a")).backoff == backoff


def test_parse_reads_a_stored_payload_back_as_the_model():
    assert send_email.parse({"to": "a@b.c"}) == SendEmail(to="a@b.c")
    with pytest.raises(ValidationFailed, match="to: Field required"):
        send_email.parse({})


async def test_registry_registers_a_handler_against_the_task():
    registry = Registry()

    @registry.task(send_email)
    async def handle(payload: SendEmail, ctx: JobContext) -> str:
        return payload.to

    handler = registry.get("notifications.send_email")
    assert handler is not None and handler.task is send_email
    assert await run_handler(registry, send_email.job_type, {"to": "x@y.z"}) == Succeeded("x@y.z")
    copy = Registry()
    copy.include(registry)
    assert copy.get(send_email.job_type).task is send_email  # type: ignore[union-attr]


def test_registry_refuses_a_handler_of_another_model():
    def wrong(payload: SendPush) -> None: ...

    with pytest.raises(RegistrationError, match="annotate the payload as SendEmail"):
        Registry().register(send_email, wrong)
