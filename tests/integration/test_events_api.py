"""The event streams over real HTTP against real PostgreSQL: a job's lifecycle in order, the end
at a terminal state, tenant isolation, filters, limits, hostile inputs, the LISTEN reconnect,
and the SDK's wait() following the stream (or polling where there is none).

Claims come from a scheduler of the test's own (its own pool and EventSender, as a separate
`jobs-server scheduler` process would be), so its NOTIFYs cross to the API server through
PostgreSQL; outcomes go through the worker API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from jobs_schema import JobMessage, JobStatus, jobs_in_body
from jobs_sdk import JobsClient, NotFound, SyncJobsClient
from jobs_server.app import create_app
from jobs_server.clock import ManualClock
from jobs_server.events import EventSender
from jobs_server.outcomes import OutcomeService
from jobs_server.publisher.base import InMemoryPublisher
from jobs_server.scheduler import Scheduler, SchedulerConfig
from jobs_server.serving import JobsUvicornServer
from jobs_server.store.postgres import PostgresJobStore
from jobs_server.wiring import build_scheduler
from tests.conftest import ADMIN_TOKEN, WORKER_TOKEN, LiveServer, free_port, make_settings
from tests.integration.scheduler_support import dispatch, lead

GUARD = 20.0  # the longest a test waits for what must come: a hang, not a measure
EMAIL = {"use_case": "notifications", "job_type": "notifications.send_email", "payload": {}}
LABEL = {"use_case": "labeling", "job_type": "labeling.tag", "payload": {}}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Sse:
    """One open event stream, read in the background: (event, data) pairs in order."""

    def __init__(self, http: httpx.AsyncClient, path: str, token: str, **params: Any) -> None:
        self._http, self._path, self._token, self._params = http, path, token, params
        self.items: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.response: httpx.Response | None = None
        self._stack = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Sse:
        self.response = await self._stack.enter_async_context(
            self._http.stream(
                "GET",
                self._path,
                headers=auth(self._token),
                params=self._params,
                timeout=httpx.Timeout(10, read=None),
            )
        )
        if self.response.is_success:
            self._task = asyncio.create_task(self._read(self.response))
        else:
            await self.response.aread()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await self._task
        await self._stack.aclose()

    async def _read(self, response: httpx.Response) -> None:
        kind, data = "", ""
        try:
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif not line and data:
                    await self.items.put((kind, json.loads(data)))
                    kind, data = "", ""
        finally:
            self.ended.set()

    async def next(self) -> tuple[str, dict[str, Any]]:
        return await asyncio.wait_for(self.items.get(), GUARD)

    async def job(self) -> dict[str, Any]:
        kind, data = await self.next()
        assert kind == "job", (kind, data)
        return data

    async def until_ended(self) -> None:
        await asyncio.wait_for(self.ended.wait(), GUARD)


class Rig:
    """The API server, a scheduler of the test's own, and an HTTP client."""

    def __init__(
        self, server: LiveServer, http: httpx.AsyncClient, sched: Scheduler, clock: ManualClock
    ) -> None:
        self.server, self.http, self.sched, self.clock = server, http, sched, clock
        self.publisher: InMemoryPublisher = sched.dispatcher._publisher  # type: ignore[attr-defined]

    async def enqueue(self, tenant: str = "acme", **fields: Any) -> str:
        r = await self.http.post(
            "/v1/jobs", json=EMAIL | fields, headers=auth(LiveServer.tenant_token(tenant))
        )
        assert r.status_code == 201, r.text
        return str(r.json()["job"]["id"])

    async def claim(self) -> list[JobMessage]:
        self.clock.advance(0.001)
        before = {q: len(m) for q, m in self.publisher.sent.items()}
        await dispatch(self.sched)
        return [
            msg
            for q, bodies in self.publisher.sent.items()
            for body in bodies[before.get(q, 0) :]
            for msg in jobs_in_body(body)
        ]

    async def report(self, msg: JobMessage, outcome: str = "succeeded", **extra: Any) -> None:
        report = {
            "job_id": str(msg.job_id),
            "attempt": msg.attempt,
            "lease_token": str(msg.lease_token),
            "outcome": outcome,
            "worker_id": "w1",
        } | extra
        r = await self.http.post(
            "/v1/worker/outcomes", json={"reports": [report]}, headers=auth(WORKER_TOKEN)
        )
        assert r.status_code == 200 and r.json()["acks"][0]["applied"], r.text

    def stream(self, path: str, who: str = "acme", **params: Any) -> Sse:
        token = ADMIN_TOKEN if who == "admin" else LiveServer.tenant_token(who)
        return Sse(self.http, path, token, **params)


@contextlib.asynccontextmanager
async def rig_for(server: LiveServer, clock: ManualClock) -> AsyncIterator[Rig]:
    store = await PostgresJobStore.connect(server.database_url, min_size=1, max_size=2, clock=clock)
    sender = EventSender(store)
    sched = build_scheduler(
        store,
        InMemoryPublisher(),
        server.settings.jobs_config().use_cases,
        outcomes=OutcomeService(store, clock=store.clock, on_changed=sender.changed),
        clock=store.clock,
        config=SchedulerConfig(leader_ttl_seconds=60),
        on_changed=sender.changed,
    )
    assert await lead(sched)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            yield Rig(server, http, sched, clock)
    finally:
        await sender.close()
        await store.close()


@pytest.fixture
async def rig(start_server: Any) -> AsyncIterator[Rig]:
    clock = ManualClock()
    async with rig_for(await start_server(clock=clock), clock) as r:
        yield r


# -- one job ----------------------------------------------------------------------------------


async def test_a_jobs_events_follow_its_lifecycle_and_end_at_the_last(rig: Rig) -> None:
    job_id = await rig.enqueue()
    async with rig.stream(f"/v1/jobs/{job_id}/events") as sse:
        assert sse.response is not None
        assert sse.response.headers["content-type"].startswith("text/event-stream")
        first = await sse.job()
        assert (first["id"], first["status"], first["attempts"]) == (job_id, "pending", 0)
        assert "payload" not in first
        [msg] = await rig.claim()
        running = await sse.job()
        assert (running["status"], running["attempts"]) == ("running", 1)
        await rig.report(msg, "failed", failure={"type": "Boom", "message": "again"})
        retry = await sse.job()
        assert (retry["status"], retry["attempts"]) == ("pending", 1)
        rig.clock.advance(2)  # past the retry's constant backoff of 1 s
        [msg] = await rig.claim()
        assert (await sse.job())["status"] == "running"
        await rig.report(msg, result={"ok": True})
        last = await sse.job()
        assert (last["status"], last["attempts"]) == ("succeeded", 2)
        assert last["finished_at"] is not None
        await sse.until_ended()
        assert sse.items.empty()


async def test_a_finished_jobs_stream_sends_its_state_and_ends(rig: Rig) -> None:
    job_id = await rig.enqueue()
    r = await rig.http.post(f"/v1/jobs/{job_id}/cancel", headers=auth("tok-acme"))
    assert r.status_code == 200
    async with rig.stream(f"/v1/jobs/{job_id}/events") as sse:
        assert (await sse.job())["status"] == "cancelled"
        await sse.until_ended()


async def test_another_tenants_job_is_not_found(rig: Rig) -> None:
    job_id = await rig.enqueue("globex")
    async with rig.stream(f"/v1/jobs/{job_id}/events", "acme") as sse:
        assert sse.response is not None and sse.response.status_code == 404
        assert sse.response.json()["error"]["code"] == "not_found"
    async with rig.stream(f"/v1/jobs/{uuid.uuid4()}/events") as sse:
        assert sse.response is not None and sse.response.status_code == 404
    async with rig.stream(f"/v1/jobs/{job_id}/events", "admin") as sse:
        assert (await sse.job())["tenant"] == "globex"


# -- a tenant's jobs --------------------------------------------------------------------------


async def test_tenant_streams_never_see_another_tenants_jobs(rig: Rig) -> None:
    async with rig.stream("/v1/events", "acme") as acme, rig.stream("/v1/events", "globex") as gx:
        theirs = await rig.enqueue("globex")
        mine = await rig.enqueue("acme")
        await rig.claim()  # both run
        # notified after the rest: once each stream has its marker, all the rest arrived too
        markers = {"acme": await rig.enqueue("acme"), "globex": await rig.enqueue("globex")}
        seen: dict[str, list[tuple[str, str]]] = {"acme": [], "globex": []}
        for tenant, sse in (("acme", acme), ("globex", gx)):
            while not seen[tenant] or seen[tenant][-1][0] != markers[tenant]:
                data = await sse.job()
                assert data["tenant"] == tenant
                seen[tenant].append((data["id"], data["status"]))
        assert {i for i, _ in seen["acme"]} == {mine, markers["acme"]}
        assert (mine, "running") in seen["acme"]
        assert {i for i, _ in seen["globex"]} == {theirs, markers["globex"]}
        assert (theirs, "running") in seen["globex"]


async def test_filters_select_use_case_job_type_and_statuses(rig: Rig) -> None:
    async with rig.stream(
        "/v1/events", use_case="labeling", status=["running", "succeeded"]
    ) as sse:
        await rig.enqueue()  # notifications: not this stream's
        label = await rig.enqueue(**LABEL)  # pending: not a status asked for
        msgs = {str(m.job_id): m for m in await rig.claim()}
        running = await sse.job()
        assert (running["id"], running["status"]) == (label, "running")
        await rig.report(msgs[label])
        assert (await sse.job())["status"] == "succeeded"
    async with rig.stream("/v1/events", job_type="notifications.send_push") as sse:
        await rig.enqueue()
        push = await rig.enqueue(job_type="notifications.send_push")
        assert (await sse.job())["id"] == push


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"status": "bogus"}, 422, "status"),
        ({"status": ["pending"] * 9}, 422, "status"),
        ({"use_case": "a\x00b"}, 422, "use_case"),
        ({"use_case": "x" * 201}, 422, "use_case"),
        ({"job_type": ""}, 422, "job_type"),
        ({"unknown": "1"}, 422, "unknown"),
        ({"tenant": "globex"}, 403, "own jobs"),
    ],
    ids=["bad-status", "too-many-statuses", "nul", "too-long", "empty", "unknown", "tenant"],
)
async def test_hostile_filters_are_refused_clearly(
    rig: Rig, params: dict[str, Any], status: int, says: str
) -> None:
    async with rig.stream("/v1/events", **params) as sse:
        assert sse.response is not None and sse.response.status_code == status
        body = sse.response.json()["error"]
        assert says in json.dumps(body)


async def test_hostile_paths_and_tokens(rig: Rig) -> None:
    r = await rig.http.get("/v1/jobs/not-a-uuid/events", headers=auth("tok-acme"))
    assert r.status_code == 422
    r = await rig.http.get("/v1/events")
    assert r.status_code == 401
    r = await rig.http.get("/v1/events", headers=auth(WORKER_TOKEN))
    assert r.status_code == 403


async def test_stream_limits_answer_429_and_503(start_server: Any) -> None:
    clock = ManualClock()
    server = await start_server(events_max_streams_per_tenant=1, events_max_streams=2, clock=clock)
    async with rig_for(server, clock) as rig:
        async with rig.stream("/v1/events") as first:
            assert first.response is not None and first.response.status_code == 200
            async with rig.stream("/v1/events") as second:
                assert second.response is not None and second.response.status_code == 429
                assert second.response.headers["Retry-After"] == "5"
                error = second.response.json()["error"]
                assert error["code"] == "too_many_streams"
                assert "JOBS_EVENTS_MAX_STREAMS_PER_TENANT" in error["message"]
            async with rig.stream("/v1/events", "globex") as other:
                assert other.response is not None and other.response.status_code == 200
                async with rig.stream("/v1/events", "admin") as third:
                    assert third.response is not None and third.response.status_code == 503
                    assert "JOBS_EVENTS_MAX_STREAMS" in third.response.json()["error"]["message"]
        # closed streams free their places
        async with rig.stream("/v1/events") as again:
            assert again.response is not None and again.response.status_code == 200


async def test_a_lost_listen_connection_is_reconnected(rig: Rig, db: asyncpg.Connection) -> None:
    async with rig.stream("/v1/events") as sse:
        first = await rig.enqueue()
        assert (await sse.job())["id"] == first
        killed = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
        )
        assert killed == 1
        kind, data = await sse.next()
        assert kind == "reconnected" and "re-read" in data["message"]
        later = await rig.enqueue()
        assert (await sse.job())["id"] == later


# -- the SDK ----------------------------------------------------------------------------------


class Requests:
    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)

    def sync(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)


async def test_wait_follows_the_stream_and_polls_nothing(rig: Rig) -> None:
    log = Requests()
    job_id = await rig.enqueue()
    async with JobsClient(rig.server.url, "tok-acme", event_hooks={"request": [log]}) as client:
        waiting = asyncio.create_task(client.wait(job_id, timeout=GUARD, poll_interval=0.05))
        while f"/v1/jobs/{job_id}/events" not in log.paths:
            await asyncio.sleep(0.01)
        [msg] = await rig.claim()
        await rig.report(msg, result={"n": 1})
        job = await waiting
    assert (job.status, job.result) == (JobStatus.SUCCEEDED, {"n": 1})
    # one stream, and one read of the finished job; no poll
    assert log.paths.count(f"/v1/jobs/{job_id}/events") == 1
    assert log.paths.count(f"/v1/jobs/{job_id}") == 1


async def test_sync_wait_follows_the_stream(rig: Rig) -> None:
    log = Requests()
    job_id = await rig.enqueue()
    [msg] = await rig.claim()

    def wait() -> Any:
        with SyncJobsClient(
            rig.server.url, "tok-acme", event_hooks={"request": [log.sync]}
        ) as client:
            return client.wait(job_id, timeout=GUARD, poll_interval=0.05)

    waiting = asyncio.create_task(asyncio.to_thread(wait))
    while f"/v1/jobs/{job_id}/events" not in log.paths:
        await asyncio.sleep(0.01)
    await rig.report(msg)
    job = await waiting
    assert job.status is JobStatus.SUCCEEDED
    assert log.paths.count(f"/v1/jobs/{job_id}") == 1


async def test_sdk_events_yield_the_tenants_changes(rig: Rig) -> None:
    async with JobsClient(rig.server.url, "tok-acme") as client:
        stream = client.events(status=["cancelled"])
        first = asyncio.ensure_future(anext(stream))
        cancelled: set[str] = set()
        # cancel jobs until the stream (opening meanwhile: nothing is replayed) sees one
        while not first.done():
            job_id = await rig.enqueue()
            await rig.enqueue(tenant="globex")
            await rig.http.post(f"/v1/jobs/{job_id}/cancel", headers=auth("tok-acme"))
            cancelled.add(job_id)
            await asyncio.sleep(0.05)
        event = first.result()
        assert event.job is not None and str(event.job.id) in cancelled
        assert (event.job.tenant, event.job.status) == ("acme", JobStatus.CANCELLED)
        await stream.aclose()


async def test_wait_polls_a_server_without_streams(database_url: str) -> None:
    """An older server: no /events routes (404). wait() polls, and still raises NotFound for
    a job that does not exist."""
    settings = make_settings(database_url)
    app = create_app(settings)
    port = free_port()
    server = JobsUvicornServer(
        uvicorn.Config(
            _without_streams(app), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        ),
        jobs=app.state.jobs,
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        url, log = f"http://127.0.0.1:{port}", Requests()
        live = LiveServer(url=url, database_url=database_url, settings=settings)
        async with (
            rig_for(live, ManualClock()) as rig,
            JobsClient(url, "tok-acme", event_hooks={"request": [log]}) as client,
        ):
            job_id = await rig.enqueue()
            [msg] = await rig.claim()
            waiting = asyncio.create_task(client.wait(job_id, timeout=GUARD, poll_interval=0.05))
            while log.paths.count(f"/v1/jobs/{job_id}") < 2:
                await asyncio.sleep(0.01)
            await rig.report(msg)
            job = await waiting
            assert job.status is JobStatus.SUCCEEDED
            assert log.paths.count(f"/v1/jobs/{job_id}/events") == 1
            with pytest.raises(NotFound):
                await client.wait(uuid.uuid4(), timeout=GUARD)
    finally:
        server.should_exit = True
        await task


def _without_streams(app: ASGIApp) -> ASGIApp:
    """`app` as a server from before the streams answers them: 404, our envelope."""

    async def older(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/events"):
            body = {"error": {"code": "not_found", "message": "Not Found", "details": {}}}
            await JSONResponse(body, status_code=404)(scope, receive, send)
            return
        await app(scope, receive, send)

    return older
