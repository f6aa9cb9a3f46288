"""The producers' test kit: the README's examples and examples/tests run as tests; the fake
client keeps the server's producer rules; its assertions pass and fail with useful messages;
InlineJobs runs chains of handlers."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from jobs_schema import BulkAction, EnqueueRequest, JobStatus, UseCaseConfig
from jobs_sdk import Conflict, IdempotencyMismatch, JobsTimeout, NotFound, Task, ValidationFailed
from jobs_sdk.testing import FakeJobsClient, FakeSyncJobsClient
from jobs_worker import JobContext, PermanentFailure, Registry
from jobs_worker.testing import InlineJobs, Succeeded, make_context, run_handler

ROOT = Path(__file__).resolve().parents[2]
SDK_README = ROOT / "packages" / "jobs-sdk" / "README.md"


class Email(BaseModel):
    to: str
    subject: str = "hi"


class Step(BaseModel):
    n: int


email = Task("notifications", "notifications.send_email", Email, delay_tolerance=30)
step = Task("chain", "chain.step", Step)
USE_CASES = {
    "notifications": UseCaseConfig(
        queue="q", default_delay_tolerance_seconds=90, max_attempts=7, job_types=[email.job_type]
    )
}


def _readme_examples() -> list[str]:
    text = SDK_README.read_text()
    section = text.split("## Testing producers", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_documented_examples_are_passing_tests(tmp_path: Path):
    blocks = _readme_examples()
    assert len(blocks) == 2
    for i, block in enumerate(blocks):
        (tmp_path / f"test_readme_{i}.py").write_text(block)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            ROOT / "pyproject.toml",
            "--rootdir",
            ROOT,
            tmp_path,
            ROOT / "examples" / "tests",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b11 passed\b", done.stdout), done.stdout


# -- the fake's rules ------------------------------------------------------------------------


async def test_defaults_deadlines_and_unknown_use_cases_follow_the_config():
    jobs = FakeJobsClient(use_cases=USE_CASES)
    plain = (await jobs.enqueue("notifications", email.job_type, {"to": "a"})).job
    assert (plain.deadline - plain.run_at, plain.max_attempts) == (timedelta(seconds=90), 7)
    typed = (await email.enqueue(jobs, Email(to="a"))).job
    assert typed.deadline - typed.run_at == timedelta(seconds=30)
    with pytest.raises(ValidationFailed, match="unknown use case 'billing'"):
        await jobs.enqueue("billing", "charge")
    with pytest.raises(ValidationFailed, match=r"has no job type 'notifications\.fax'"):
        await jobs.enqueue("notifications", "notifications.fax")
    batch = await jobs.enqueue_batch(
        [email.request(Email(to="b")), EnqueueRequest(use_case="billing", job_type="x")]
    )
    assert batch.results[0].job is not None and batch.results[1].error is not None
    assert len(jobs.jobs) == 3


async def test_dedup_and_idempotency_keys_behave_as_on_the_server():
    jobs = FakeJobsClient()
    first = await email.enqueue(jobs, Email(to="a"), dedup_key="k")
    again = await email.enqueue(jobs, Email(to="b"), dedup_key="k")
    assert again.deduplicated and again.job.id == first.job.id
    keyed = await email.enqueue(jobs, Email(to="c"), idempotency_key="ik")
    assert (await email.enqueue(jobs, Email(to="c"), idempotency_key="ik")) == keyed
    with pytest.raises(IdempotencyMismatch):
        await email.enqueue(jobs, Email(to="d"), idempotency_key="ik")
    assert [p.to for p in jobs.payloads(email)] == ["a", "c"]


async def test_cancel_retry_list_count_and_bulk_actions():
    jobs = FakeJobsClient()
    ids = [(await step.enqueue(jobs, Step(n=i))).job.id for i in range(5)]
    assert [j.id async for j in jobs.list()] == ids[::-1]
    page = await jobs.list_page(limit=2)
    assert [j.id for j in page.items] == ids[:2:-1] and page.next_cursor is not None
    assert (await jobs.cancel(ids[0])).status is JobStatus.CANCELLED
    with pytest.raises(Conflict, match="only pending or running"):
        await jobs.cancel(ids[0])
    with pytest.raises(Conflict, match="only dead, cancelled or expired"):
        await jobs.retry(ids[1])
    assert (await jobs.retry(ids[0])).status is JobStatus.PENDING
    counted = await jobs.count(job_type="chain.step")
    assert (counted.count, counted.max_id) == (5, ids[-1])
    later = (await step.enqueue(jobs, Step(n=9))).job.id
    cancelled = await jobs.cancel_where(job_type="chain.step", max_id=counted.max_id, limit=4)
    assert (cancelled.touched, cancelled.more) == (4, True)
    assert (await jobs.get(later)).status is JobStatus.PENDING
    assert (await jobs.count(action=BulkAction.RETRY)).count == 4
    assert (await jobs.retry_where(status="cancelled")).touched == 4
    with pytest.raises(NotFound):
        await jobs.get("00000000-0000-0000-0000-000000000000")
    with pytest.raises(ValidationFailed, match="not a cursor"):
        await jobs.list_page(cursor="abc")
    with pytest.raises(JobsTimeout, match="nothing runs jobs in a fake client"):
        await jobs.wait(later)


def test_the_sync_fake_has_the_same_rules():
    with FakeSyncJobsClient(tenant="acme") as jobs:
        job = email.enqueue_sync(jobs, Email(to="a")).job
        assert job.tenant == "acme"
        email.enqueue_many_sync(jobs, [Email(to="b"), Email(to="c")])
        assert [j.payload["to"] for j in jobs.list()] == ["c", "b", "a"]
        assert jobs.cancel(job.id).status is JobStatus.CANCELLED
        assert jobs.wait(job.id).status is JobStatus.CANCELLED
        jobs.assert_enqueued(email, payload=Email(to="a"), status=JobStatus.CANCELLED)


# -- assertions ------------------------------------------------------------------------------


async def test_assert_enqueued_matches_payload_models_mappings_fields_and_deadlines():
    jobs = FakeJobsClient()
    await email.enqueue(jobs, Email(to="a", subject="s"), priority=3)
    assert jobs.assert_enqueued(email).payload == {"to": "a", "subject": "s"}
    jobs.assert_enqueued(email, payload=Email(to="a", subject="s"), priority=3, within=30)
    jobs.assert_enqueued("notifications.send_email", payload={"subject": "s"}, count=1)
    jobs.assert_enqueued(email, within=timedelta(minutes=1))
    jobs.assert_not_enqueued(email, payload={"to": "b"})
    jobs.assert_not_enqueued(step)


async def test_failed_assertions_say_what_was_enqueued_and_why_it_differs():
    jobs = FakeJobsClient()
    await email.enqueue(jobs, Email(to="a"), priority=1)
    await step.enqueue(jobs, Step(n=1))
    with pytest.raises(AssertionError) as failed:
        jobs.assert_enqueued(email, payload=Email(to="b"), priority=2, within=10)
    message = str(failed.value)
    assert message.startswith(
        "expected a 'notifications.send_email' job with payload {'to': 'b', 'subject': 'hi'} "
        "priority=2 due within 10 s, but none of the 1 enqueued matches:"
    )
    assert "payload.to is 'a', expected 'b'" in message
    assert "priority is 1, expected 2" in message
    assert "due 30 s after enqueue, expected within 10 s" in message
    with pytest.raises(
        AssertionError, match=r"none was enqueued \(enqueued: 1 'chain.step', 1 'notif"
    ):
        jobs.assert_enqueued("notifications.send_push")
    with pytest.raises(AssertionError, match=r"expected 2 of a 'chain\.step' job, but 1 match"):
        jobs.assert_enqueued(step, count=2)
    with pytest.raises(AssertionError, match=r"expected no a 'chain.step' job.*1 enqueued"):
        jobs.assert_not_enqueued(step, payload={"n": 1})
    with pytest.raises(AssertionError, match="nothing was enqueued"):
        FakeJobsClient().assert_enqueued(step)
    with pytest.raises(TypeError, match="Job has no field 'priorty'"):
        jobs.assert_enqueued(email, priorty=1)


async def test_a_clock_sets_the_enqueue_time():
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    jobs = FakeJobsClient(clock=lambda: moment)
    job = (await email.enqueue(jobs, Email(to="a"))).job
    assert (job.created_at, job.deadline) == (moment, moment + timedelta(seconds=30))


# -- the worker's side -----------------------------------------------------------------------


async def test_make_context_gives_handlers_a_working_ctx_jobs():
    registry = Registry()

    @registry.task(email)
    async def send(payload: Email, ctx: JobContext) -> None:
        await step.enqueue(ctx.jobs, Step(n=1))

    ctx = make_context(email.job_type)
    assert await run_handler(registry, email.job_type, {"to": "a"}, context=ctx) == Succeeded(None)
    recorded = ctx.jobs
    assert isinstance(recorded, FakeJobsClient)
    recorded.assert_enqueued(step, payload=Step(n=1))
    own = FakeJobsClient(tenant="acme")
    assert make_context("x", jobs=own).jobs is own


def _chain(limit: int) -> Registry:
    registry = Registry()

    @registry.task(step)
    async def next_step(payload: Step, ctx: JobContext) -> int:
        if payload.n < limit:
            await step.enqueue(ctx.jobs, Step(n=payload.n + 1))
        return payload.n

    return registry


async def test_inline_jobs_run_a_chain_of_two_handlers():
    registry = Registry()
    seen: list[str] = []

    @registry.task(email)
    async def send(payload: Email, ctx: JobContext) -> str:
        seen.append(f"email {payload.to} as {ctx.tenant}")
        await step.enqueue(ctx.jobs, Step(n=len(payload.to)))
        return "sent"

    @registry.task(step)
    def record(payload: Step, ctx: JobContext) -> int:  # a sync handler, as in the worker
        seen.append(f"step {payload.n} after attempt {ctx.attempt}")
        return payload.n * 10

    jobs = InlineJobs(registry, tenant="acme")
    created = await email.enqueue(jobs, Email(to="abc"))
    assert created.job.status is JobStatus.PENDING  # the answer is the job as enqueued
    assert seen == ["email abc as acme", "step 3 after attempt 1"]
    assert (await jobs.get(created.job.id)).result == "sent"
    assert jobs.assert_enqueued(step, payload=Step(n=3), status=JobStatus.SUCCEEDED).result == 30


async def test_inline_jobs_retry_retryable_failures_up_to_the_attempts():
    registry = Registry()
    calls: list[int] = []

    @registry.task(step)
    def flaky(payload: Step, ctx: JobContext) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt < payload.n:
            raise RuntimeError(f"attempt {ctx.attempt} failed")
        if payload.n > 5:
            raise PermanentFailure("too big")
        return "ok"

    jobs = InlineJobs(registry)
    ok = (await step.enqueue(jobs, Step(n=3), max_attempts=3)).job
    assert (await jobs.get(ok.id)).status is JobStatus.SUCCEEDED and calls == [1, 2, 3]
    dead = await jobs.get((await step.enqueue(jobs, Step(n=4), max_attempts=2)).job.id)
    assert (dead.status, dead.attempts, dead.last_error) == (
        JobStatus.DEAD,
        2,
        "RuntimeError: attempt 2 failed",
    )
    assert [f.message for f in jobs.failures[dead.id]] == ["attempt 1 failed", "attempt 2 failed"]
    again = await jobs.retry(dead.id)  # a retry runs it again: one more attempt
    assert again.id == dead.id and (await jobs.get(dead.id)).status is JobStatus.DEAD


async def test_inline_jobs_stop_a_chain_that_never_ends():
    jobs = InlineJobs(_chain(limit=1000), max_depth=5)
    await step.enqueue(jobs, Step(n=0))
    chain = jobs.jobs_of(step)
    assert [j.status for j in chain] == [JobStatus.SUCCEEDED] * 4 + [JobStatus.DEAD]
    assert (chain[-1].attempts, chain[-1].payload) == (1, {"n": 4})
    assert "refused an enqueue nested 5 handlers deep" in (chain[-1].last_error or "")
    short = InlineJobs(_chain(limit=3))
    await step.enqueue(short, Step(n=0))
    assert [j.result for j in short.jobs_of(step)] == [0, 1, 2, 3]


async def test_inline_jobs_leave_a_job_without_handler_pending():
    jobs = InlineJobs(Registry())
    job = (await email.enqueue(jobs, Email(to="a"))).job
    assert (await jobs.get(job.id)).status is JobStatus.PENDING
