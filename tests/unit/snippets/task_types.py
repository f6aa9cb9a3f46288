"""Checked by tests/unit/test_tasks.py with mypy: the lines marked with an error comment must fail
type-checking with that message, every other line must pass."""

from __future__ import annotations

from pydantic import BaseModel

from jobs_sdk import JobsApi, JobsClient, SyncJobsClient, Task
from jobs_worker import JobContext, Registry


class SendEmail(BaseModel):
    to: str


class SendPush(BaseModel):
    device: str


send_email = Task("notifications", "notifications.send_email", SendEmail, delay_tolerance=30)
registry = Registry()


@registry.task(send_email)
async def handle_email(payload: SendEmail, ctx: JobContext) -> None: ...


@registry.task(send_email)  # error: SendPush
async def handle_wrong(payload: SendPush, ctx: JobContext) -> None: ...


async def produce(jobs: JobsClient, sync_jobs: SyncJobsClient) -> None:
    await send_email.enqueue(jobs, SendEmail(to="a@b.c"), priority=3)
    await send_email.enqueue_many(jobs, [SendEmail(to="a@b.c")])
    send_email.enqueue_sync(sync_jobs, SendEmail(to="a@b.c"))
    await send_email.enqueue(jobs, SendPush(device="d"))  # error: SendPush
    await send_email.enqueue(jobs, {"too": 1})  # error: dict
    send_email.enqueue_sync(sync_jobs, SendEmail(to="a@b.c"), priorty=1)  # error: priorty


def the_client_is_a_jobs_api(jobs: JobsClient) -> JobsApi:
    return jobs
