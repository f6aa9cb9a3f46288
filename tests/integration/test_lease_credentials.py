"""Lease credentials: a running attempt enqueues follow-up jobs as its job's tenant with
`lease.<job id>.<attempt>.<lease token>`, only while its lease lives, and may do nothing else.
A real server, PostgreSQL and SQS; a real worker with no tenant token."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from pydantic import BaseModel

from jobs_schema import JobMessage, JobStatus, LeaseRef
from jobs_sdk import JobsClient, Task, Unauthorized
from jobs_worker import JobContext, LeaseClients, Registry
from tests.conftest import LiveServer, StartServer
from tests.integration import test_worker_harness as harness
from tests.integration.requests import ACME, WORKER
from tests.integration.scheduler_support import Rig, dispatch, lead, make_rig, use_case
from tests.integration.sqs import sqs_probe
from tests.integration.test_worker_harness import EMAIL, PUSH, USE_CASE, MakeStack

make_stack = harness.make_stack  # the fixture

FOLLOW_UP = {"use_case": "leased", "job_type": "follow_up", "payload": {"n": 1}}


@pytest.fixture
async def rig(database_url, sqs_endpoint, queue_prefix) -> AsyncIterator[Rig]:
    use_cases = {"leased": use_case(f"{queue_prefix}-leased")}
    async with sqs_probe(sqs_endpoint) as probe:
        async for r in make_rig(database_url, sqs_endpoint, probe, use_cases):
            yield r


@dataclass
class Running:
    """A job the scheduler dispatched (running under a 30 s lease), and the API on its DB."""

    server: LiveServer
    message: JobMessage
    http: httpx.AsyncClient

    @property
    def lease(self) -> LeaseRef:
        m = self.message
        return LeaseRef(job_id=m.job_id, attempt=m.attempt, lease_token=m.lease_token)

    def auth(self, credential: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {credential or self.lease.credential()}"}

    async def enqueue(self, credential: str | None = None) -> httpx.Response:
        return await self.http.post("/v1/jobs", json=FOLLOW_UP, headers=self.auth(credential))


@pytest.fixture
async def running(rig: Rig, start_server: StartServer) -> AsyncIterator[Running]:
    config = {name: uc.model_dump(mode="json") for name, uc in rig.use_cases.items()}
    server = await start_server(use_cases=config)
    await rig.enqueue("acme", "leased")
    scheduler = rig.scheduler()
    assert await lead(scheduler)
    assert await dispatch(scheduler) == 1
    (message,) = await rig.probe.drain(rig.use_cases["leased"].queue)
    async with httpx.AsyncClient(base_url=server.url) as http:
        yield Running(server, message, http)


async def _stored(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM jobs WHERE job_type = 'follow_up'"))


async def test_a_live_lease_enqueues_as_the_jobs_tenant(running: Running):
    answer = await running.enqueue()
    assert answer.status_code == 201, answer.text
    assert answer.json()["job"]["tenant"] == "acme"
    batch = await running.http.post(
        "/v1/jobs/batch", json={"jobs": [FOLLOW_UP, FOLLOW_UP]}, headers=running.auth()
    )
    assert [r["job"]["tenant"] for r in batch.json()["results"]] == ["acme", "acme"]
    async with JobsClient(running.server.url, running.lease.credential()) as sdk:
        created = await sdk.enqueue("leased", "follow_up", {"n": 2}, idempotency_key="k-1")
    assert created.job.tenant == "acme"
    listed = await running.http.get("/v1/jobs", params={"job_type": "follow_up"}, headers=ACME)
    assert len(listed.json()["items"]) == 4


async def test_a_lease_credential_may_do_nothing_but_enqueue(running: Running):
    job_id = running.message.job_id
    refused = [
        await running.http.get(f"/v1/jobs/{job_id}", headers=running.auth()),
        await running.http.get("/v1/jobs", headers=running.auth()),
        await running.http.get("/v1/jobs/count", headers=running.auth()),
        await running.http.post(f"/v1/jobs/{job_id}/cancel", headers=running.auth()),
        await running.http.post("/v1/jobs/cancel", json={}, headers=running.auth()),
        await running.http.post(
            "/v1/worker/heartbeats", json={"worker_id": "w", "items": []}, headers=running.auth()
        ),
    ]
    assert [r.status_code for r in refused] == [403] * 6
    assert "may only enqueue" in refused[0].json()["error"]["message"]
    job = await running.http.get(f"/v1/jobs/{job_id}", headers=ACME)
    assert (job.json()["status"], job.json()["cancel_requested"]) == ("running", False)


async def test_a_wrong_or_malformed_credential_is_unauthorized(running: Running, db):
    lease = running.lease
    wrong_token = lease.model_copy(update={"lease_token": uuid.uuid4()}).credential()
    wrong_attempt = lease.model_copy(update={"attempt": 2}).credential()
    other_job = lease.model_copy(update={"job_id": uuid.uuid4()}).credential()
    answers = [await running.enqueue(c) for c in (wrong_token, wrong_attempt, other_job)]
    assert [a.status_code for a in answers] == [401] * 3
    assert "no longer holds the job's lease" in answers[0].json()["error"]["message"]
    huge = lease.credential().replace(".1.", f".{10**30}.")
    for bad in ("lease.not-a-lease", huge, "lease." + "x" * 5000):
        malformed = await running.enqueue(bad)
        assert malformed.status_code == 401, malformed.text
        assert "malformed lease credential" in malformed.json()["error"]["message"]
    assert await _stored(db) == 0


async def test_a_finished_attempts_credential_is_refused(running: Running, rig: Rig, db):
    assert (await running.enqueue()).status_code == 201
    assert await rig.complete([running.message]) == 1
    assert (await running.enqueue()).status_code == 401
    assert await _stored(db) == 1


async def test_an_expired_lease_is_refused_while_the_job_still_runs(running: Running, db):
    # the reaper has not run (no scheduler loop here): only the expiry refuses it
    await db.execute(
        "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        running.message.job_id,
    )
    assert (await running.enqueue()).status_code == 401
    status = await db.fetchval("SELECT status FROM jobs WHERE id = $1", running.message.job_id)
    assert status == "running"
    assert await _stored(db) == 0


async def test_a_cancelled_jobs_credential_is_refused(running: Running, db):
    cancel = await running.http.post(f"/v1/jobs/{running.message.job_id}/cancel", headers=ACME)
    assert cancel.json()["cancel_requested"] is True
    assert (await running.enqueue()).status_code == 401
    assert await _stored(db) == 0


async def test_the_worker_token_is_not_a_lease(running: Running):
    answer = await running.http.post("/v1/jobs", json=FOLLOW_UP, headers=WORKER)
    assert answer.status_code == 403


# -- a worker without tenant tokens ----------------------------------------------------------


class Email(BaseModel):
    to: str


class Push(BaseModel):
    device: str


send_email = Task(USE_CASE, EMAIL, Email)
send_push = Task(USE_CASE, PUSH, Push)


async def test_a_handler_enqueues_a_follow_up_with_no_tenant_token(make_stack: MakeStack):
    stack = await make_stack()
    registry = Registry()
    credentials: list[str] = []

    @registry.task(send_email)
    async def email(payload: Email, ctx: JobContext) -> str:
        follow_up = await send_push.enqueue(ctx.jobs, Push(device=payload.to))
        credentials.append(ctx.jobs._http.headers["authorization"])  # type: ignore[attr-defined]
        return str(follow_up.job.id)

    @registry.task(send_push)
    async def push(payload: Push) -> str:
        return f"pushed to {payload.device}"

    clients = LeaseClients(stack.server.url)  # the worker holds no tenant's token
    stack.exits.push_async_callback(clients.aclose)
    worker = await stack.worker(registry, clients=clients)
    run = asyncio.create_task(worker.run())
    job_id = (await send_email.enqueue(stack.client, Email(to="phone-1"))).job.id
    [done] = await stack.wait_all([job_id])
    assert done.status is JobStatus.SUCCEEDED, done.last_error
    [follow_up] = await stack.wait_all([uuid.UUID(str(done.result))])
    worker.stop()
    await run
    assert (follow_up.tenant, follow_up.result) == ("acme", "pushed to phone-1")
    assert credentials == [f"Bearer lease.{job_id}.1.{credentials[0].rsplit('.', 1)[1]}"]
    with pytest.raises(Unauthorized):  # the attempt is over: its credential is dead
        async with JobsClient(stack.server.url, credentials[0].split(" ", 1)[1]) as late:
            await send_push.enqueue(late, Push(device="late"), idempotency_key="late")
