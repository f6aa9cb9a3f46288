"""A producer service: a small FastAPI app whose endpoints enqueue jobs with jobs-sdk,
through the typed tasks of examples/tasks.py (the worker's handlers implement the same ones).

    JOBS_URL=http://127.0.0.1:8000 JOBS_TOKEN=<a tenant token> \
        uvicorn examples.producer_app:app --port 8080

    curl -X POST localhost:8080/signups -H 'Content-Type: application/json' \
        -d '{"email": "ada@example.com"}'
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated
from uuid import UUID

from examples import tasks
from examples.tasks import AnalyseConversation, LabelMessage, SendEmail
from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from jobs_sdk import JobsApi, JobsClient, NotFound, QuotaExceeded

__all__ = ["app", "create_app"]


class Signup(BaseModel):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")


class Conversation(BaseModel):
    messages: list[str] = Field(min_length=1)


class Accepted(BaseModel):
    job_id: UUID
    status: str
    deduplicated: bool = False


def _jobs(request: Request) -> JobsApi:
    client: JobsApi = request.app.state.jobs
    return client


# JobsApi, not JobsClient: the tests (examples/tests) hand the app a FakeJobsClient
Jobs = Annotated[JobsApi, Depends(_jobs)]


def create_app(client: JobsApi | None = None) -> FastAPI:
    """`client` for tests (the caller closes it); by default one from JOBS_URL and
    JOBS_TOKEN, for the app's lifetime."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if client is not None:
            app.state.jobs = client
            yield
            return
        # one client for the app's lifetime: it pools connections and batches enqueues
        async with JobsClient.from_env() as jobs:
            app.state.jobs = jobs
            yield

    app = FastAPI(title="example producer", lifespan=lifespan)
    app.post("/signups", status_code=202)(welcome_email)
    app.post("/messages", status_code=202)(label_message)
    app.post("/conversations/{conversation_id}/analysis", status_code=202)(analyse)
    app.get("/jobs/{job_id}")(job_status)
    return app


async def welcome_email(body: Signup, jobs: Jobs) -> Accepted:
    try:
        result = await tasks.send_email.enqueue(
            jobs,
            SendEmail(to=body.email, subject="Welcome!"),
            dedup_key=f"welcome:{body.email}",  # a double-clicked signup sends one email
        )
    except QuotaExceeded as exc:
        raise HTTPException(429, "too many jobs pending; try again later") from exc
    return Accepted(
        job_id=result.job.id, status=result.job.status, deduplicated=result.deduplicated
    )


async def label_message(body: LabelMessage, jobs: Jobs) -> Accepted:
    # the request body is the task's payload model itself
    result = await tasks.label_message.enqueue(jobs, body)
    return Accepted(job_id=result.job.id, status=result.job.status)


async def analyse(conversation_id: str, body: Conversation, jobs: Jobs) -> Accepted:
    payload = AnalyseConversation(conversation_id=conversation_id, messages=body.messages)
    result = await tasks.analyse_conversation.enqueue(jobs, payload)
    return Accepted(job_id=result.job.id, status=result.job.status)


async def job_status(job_id: UUID, jobs: Jobs) -> dict[str, object]:
    try:
        job = await jobs.get(job_id)
    except NotFound as exc:
        raise HTTPException(404, "no such job") from exc
    return {"status": job.status, "result": job.result, "attempts": job.attempts}


app = create_app()
