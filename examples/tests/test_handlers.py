"""Testing handlers with jobs_worker.testing: run one handler (`run_handler`, `make_context`)
or a whole chain of them in-process (`InlineJobs`): a handler's follow-up jobs run too.
Run with `uv run python -m pytest examples/tests`."""

from __future__ import annotations

from examples import tasks
from examples.handlers import registry
from examples.tasks import AnalyseConversation, LabelMessage

from jobs_schema import JobStatus
from jobs_sdk.testing import FakeJobsClient
from jobs_worker.testing import InlineJobs, Succeeded, make_context, run_handler


async def test_one_handler_and_the_jobs_it_enqueues() -> None:
    ctx = make_context(tasks.analyse_conversation.job_type, tenant="acme")
    payload = {"conversation_id": "c1", "messages": ["refund please", "thanks"], "label_each": True}
    outcome = await run_handler(registry, "messages.analyse_conversation", payload, context=ctx)
    assert outcome == Succeeded({"conversation_id": "c1", "messages": 2, "words": 3})
    fake = ctx.jobs
    assert isinstance(fake, FakeJobsClient)  # make_context's default: it records, runs nothing
    fake.assert_enqueued(tasks.label_message, payload={"text": "refund please"}, count=1)
    assert fake.payloads(tasks.label_message)[1] == LabelMessage(message_id="c1:1", text="thanks")


async def test_a_chain_of_handlers_runs_inline() -> None:
    jobs = InlineJobs(registry, tenant="acme")
    conversation = AnalyseConversation(
        conversation_id="c1", messages=["the app is broken", "refund please"], label_each=True
    )
    created = await tasks.analyse_conversation.enqueue(jobs, conversation)
    parent = await jobs.get(created.job.id)
    assert (parent.status, parent.result) == (
        JobStatus.SUCCEEDED,
        {"conversation_id": "c1", "messages": 2, "words": 6},
    )
    labels = [j.result for j in jobs.jobs_of(tasks.label_message)]
    assert labels == [
        {"message_id": "c1:0", "labels": ["bug"]},
        {"message_id": "c1:1", "labels": ["billing"]},
    ]
    jobs.assert_enqueued(tasks.label_message, count=2, status=JobStatus.SUCCEEDED)


async def test_a_permanent_failure_ends_the_job_dead() -> None:
    jobs = InlineJobs(registry)
    created = await jobs.enqueue(
        "notifications", "notifications.send_push", {"device_token": "revoked-123", "title": "x"}
    )
    job = await jobs.get(created.job.id)
    assert job.status is JobStatus.DEAD and job.attempts == 1
    assert "device token was revoked" in (job.last_error or "")
