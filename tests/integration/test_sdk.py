"""jobs-sdk against a real jobs-server on loopback (httpx is never mocked here)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pytest

from jobs_schema import EnqueueRequest, ErrorCode, JobStatus
from jobs_sdk import (
    Conflict,
    Forbidden,
    IdempotencyMismatch,
    JobsClient,
    JobsTimeout,
    NotFound,
    QuotaExceeded,
    RetryPolicy,
    SyncJobsClient,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from tests.conftest import LiveServer, free_port
from tests.integration.proxy import start_database_proxy

EMAIL = ("notifications", "notifications.send_email")
FAST_RETRIES = RetryPolicy(attempts=50, base_delay=0.02, max_delay=0.1)


class RequestLog:
    """An httpx event hook that records each request the client sends."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)

    def hooks(self) -> dict[str, list[RequestLog]]:
        return {"request": [self]}


@pytest.fixture
async def acme(live_server: LiveServer) -> AsyncIterator[JobsClient]:
    async with JobsClient(live_server.url, live_server.tenant_token("acme")) as client:
        yield client


# -- the basics ------------------------------------------------------------------------------


async def test_enqueue_get_and_cancel(acme):
    created = await acme.enqueue(
        *EMAIL, {"to": "a@example.com"}, delay_tolerance=timedelta(seconds=30), priority=5
    )
    job = created.job
    assert not created.deduplicated
    assert (job.tenant, job.status, job.priority) == ("acme", JobStatus.PENDING, 5)
    assert job.deadline - job.run_at == timedelta(seconds=30)
    fetched = await acme.get(job.id)
    assert fetched.payload == {"to": "a@example.com"}
    assert fetched.history == []
    cancelled = await acme.cancel(str(job.id))
    assert cancelled.status is JobStatus.CANCELLED
    with pytest.raises(Conflict) as info:
        await acme.cancel(job.id)
    assert (info.value.status, info.value.code) == (409, ErrorCode.CONFLICT)
    assert info.value.details["status"] == "cancelled"


async def test_enqueue_takes_a_request_model_and_dedups(acme):
    request = EnqueueRequest(use_case="labeling", job_type="tag", dedup_key="img-1")
    first = await acme.enqueue(request)
    again = await acme.enqueue("labeling", "tag", {"other": True}, dedup_key="img-1")
    assert again.deduplicated
    assert again.job.id == first.job.id


async def test_the_flow_limit_keys_are_stored_and_shown(live_server, acme):
    created = await acme.enqueue(*EMAIL, concurrency_key="account-7", rate_key="smtp-eu")
    assert (created.job.concurrency_key, created.job.rate_key) == ("account-7", "smtp-eu")
    fetched = await acme.get(created.job.id)
    assert (fetched.concurrency_key, fetched.rate_key) == ("account-7", "smtp-eu")

    def sync_producer() -> dict[uuid.UUID, str | None]:
        with SyncJobsClient(live_server.url, live_server.tenant_token("acme")) as sync:
            plain = sync.enqueue(*EMAIL, rate_key="smtp-us")
            assert (plain.job.concurrency_key, plain.job.rate_key) == (None, "smtp-us")
            return {j.id: j.concurrency_key for j in sync.list(use_case=EMAIL[0])}

    listed = await asyncio.to_thread(sync_producer)
    assert listed[created.job.id] == "account-7"
    with pytest.raises(ValidationFailed) as info:
        await acme.enqueue(*EMAIL, concurrency_key="")
    assert "concurrency_key" in str(info.value)
    with pytest.raises(ValidationFailed) as info:
        await acme.enqueue(*EMAIL, rate_key="x" * 1000)
    assert "rate_key" in str(info.value)


async def test_list_follows_cursors_newest_first(live_server, acme):
    for i in range(25):
        await acme.enqueue("labeling", "page", {"i": i})
    await acme.enqueue(*EMAIL)
    log = RequestLog()
    token = live_server.tenant_token("acme")
    async with JobsClient(live_server.url, token, event_hooks=log.hooks()) as client:
        jobs = [job async for job in client.list(use_case="labeling", page_size=10)]
    assert len(jobs) == len({j.id for j in jobs}) == 25
    assert [j.payload["i"] for j in jobs] == list(range(24, -1, -1))
    assert log.paths == ["/v1/jobs"] * 3
    page = await acme.list_page(use_case="labeling", limit=10)
    assert [j.id for j in page.items] == [j.id for j in jobs[:10]]
    assert page.next_cursor is not None
    pending = [j async for j in acme.list(status=JobStatus.PENDING, job_type=EMAIL[1])]
    assert len(pending) == 1


async def test_sync_client_does_the_same(live_server):
    def producer() -> None:
        token = live_server.tenant_token("globex")
        with SyncJobsClient(live_server.url, token) as client:
            ids = []
            for i in range(5):
                ids.append(client.enqueue("labeling", "sync", {"i": i}).job.id)
                time.sleep(0.002)  # job ids order by the millisecond
            assert client.get(ids[0]).status is JobStatus.PENDING
            assert [j.id for j in client.list(page_size=2)] == ids[::-1]
            assert client.list_page(limit=2).next_cursor is not None
            assert client.cancel(ids[0]).status is JobStatus.CANCELLED
            with pytest.raises(Conflict):
                client.cancel(ids[0])
            assert client.wait(ids[0], timeout=1).status is JobStatus.CANCELLED
            with pytest.raises(JobsTimeout):
                client.wait(ids[1], timeout=0.2, poll_interval=0.05)
            batch = client.enqueue_batch([EnqueueRequest(use_case="labeling", job_type="b")] * 3)
            assert all(r.job is not None for r in batch.results)

    await asyncio.to_thread(producer)


async def test_wait_times_out_on_a_pending_job(acme):
    job = (await acme.enqueue(*EMAIL)).job
    with pytest.raises(JobsTimeout) as info:
        await acme.wait(job.id, timeout=0.3, poll_interval=0.05)
    assert isinstance(info.value, TimeoutError)
    assert info.value.details == {"job_id": str(job.id), "status": "pending"}
    await acme.cancel(job.id)
    assert (await acme.wait(job.id, timeout=5)).status is JobStatus.CANCELLED


# -- typed errors ----------------------------------------------------------------------------


async def test_errors_are_typed(live_server, acme):
    async with JobsClient(live_server.url, "wrong-token") as stranger:
        with pytest.raises(Unauthorized) as unauthorized:
            await stranger.enqueue(*EMAIL)
    assert (unauthorized.value.status, unauthorized.value.code) == (401, ErrorCode.UNAUTHORIZED)
    async with JobsClient(live_server.url, live_server.readonly_token) as reader:
        with pytest.raises(Forbidden):
            await reader.enqueue(*EMAIL)
    with pytest.raises(NotFound) as not_found:
        await acme.get(uuid.uuid4())
    assert not_found.value.status == 404
    with pytest.raises(ValidationFailed) as unknown:
        await acme.enqueue("no-such-use-case", "x")
    assert unknown.value.code is ErrorCode.UNKNOWN_USE_CASE
    assert unknown.value.details["use_case"] == "no-such-use-case"


async def test_local_validation_sends_nothing(live_server):
    log = RequestLog()
    token = live_server.tenant_token("acme")
    async with JobsClient(live_server.url, token, event_hooks=log.hooks()) as client:
        with pytest.raises(ValidationFailed) as info:
            await client.enqueue(*EMAIL, priority=5000)
        with pytest.raises(ValidationFailed):
            await client.get("not-a-uuid")
    assert info.value.status is None
    assert "priority" in info.value.message
    assert log.paths == []


async def test_idempotency_key_returns_the_same_job(acme, db):
    first = await acme.enqueue(*EMAIL, {"n": 1}, idempotency_key="order-7")
    again = await acme.enqueue(*EMAIL, {"n": 1}, idempotency_key="order-7")
    assert again.job.id == first.job.id
    with pytest.raises(IdempotencyMismatch) as info:
        await acme.enqueue(*EMAIL, {"n": 2}, idempotency_key="order-7")
    assert isinstance(info.value, Conflict)
    assert await db.fetchval("select count(*) from jobs") == 1


# -- coalescing ------------------------------------------------------------------------------


async def test_concurrent_enqueues_share_batch_requests(live_server, db):
    log = RequestLog()
    token = live_server.tenant_token("acme")
    async with JobsClient(live_server.url, token, event_hooks=log.hooks()) as client:
        results = await asyncio.gather(
            *(client.enqueue("labeling", "coalesce", {"i": i}) for i in range(200))
        )
    assert [r.job.payload["i"] for r in results] == list(range(200))
    assert len({r.job.id for r in results}) == 200
    assert len(log.paths) <= 5
    assert set(log.paths) == {"/v1/jobs/batch"}
    assert await db.fetchval("select count(*) from jobs") == 200


async def test_max_batch_bounds_each_request(live_server):
    log = RequestLog()
    token = live_server.tenant_token("acme")
    async with JobsClient(live_server.url, token, max_batch=50, event_hooks=log.hooks()) as client:
        await asyncio.gather(*(client.enqueue("labeling", "bound") for _ in range(120)))
    assert Counter(log.paths) == {"/v1/jobs/batch": 3}


async def test_quota_refusals_go_to_their_own_callers(live_server, db):
    async with JobsClient(live_server.url, live_server.tenant_token("tiny")) as client:
        outcomes = await asyncio.gather(
            *(client.enqueue("labeling", "q", {"i": i}) for i in range(30)),
            return_exceptions=True,
        )
    created = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(created) == 10
    assert len(refused) == 20
    assert all(isinstance(e, QuotaExceeded) and e.status == 429 for e in refused)
    assert len({id(e) for e in refused}) == 20
    assert await db.fetchval("select count(*) from jobs") == 10


async def test_an_invalid_item_fails_only_its_caller(live_server, db):
    log = RequestLog()
    token = live_server.tenant_token("acme")
    async with JobsClient(live_server.url, token, event_hooks=log.hooks()) as client:
        calls = [client.enqueue(*EMAIL, {"i": i}) for i in range(20)]
        calls.insert(7, client.enqueue("notifications", "notifications.send_fax"))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    bad = outcomes.pop(7)
    assert isinstance(bad, ValidationFailed)
    assert bad.code is ErrorCode.UNKNOWN_JOB_TYPE
    assert "index" not in bad.details
    assert [o.job.payload["i"] for o in outcomes] == list(range(20))
    # the refused batch, then the bad item alone and the others as one batch
    assert sorted(log.paths) == ["/v1/jobs", "/v1/jobs/batch", "/v1/jobs/batch"]
    assert await db.fetchval("select count(*) from jobs") == 20


async def test_everyones_error_reaches_everyone(live_server):
    async with JobsClient(live_server.url, "wrong-token") as client:
        outcomes = await asyncio.gather(
            *(client.enqueue(*EMAIL) for _ in range(5)), return_exceptions=True
        )
    assert all(isinstance(o, Unauthorized) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 5


async def test_idempotency_key_bypasses_coalescing(live_server):
    log = RequestLog()
    token = live_server.tenant_token("acme")
    async with JobsClient(live_server.url, token, event_hooks=log.hooks()) as client:
        await asyncio.gather(
            *(client.enqueue(*EMAIL, idempotency_key=f"k{i}") for i in range(3)),
            *(client.enqueue(*EMAIL) for _ in range(3)),
        )
    assert Counter(log.paths) == {"/v1/jobs": 3, "/v1/jobs/batch": 1}


async def test_close_sends_what_is_lingering(live_server, db):
    client = JobsClient(live_server.url, live_server.tenant_token("acme"), linger=10)
    pending = [asyncio.create_task(client.enqueue(*EMAIL)) for _ in range(3)]
    await asyncio.sleep(0)
    await client.aclose()
    assert len({(await p).job.id for p in pending}) == 3
    assert await db.fetchval("select count(*) from jobs") == 3


# -- retries never duplicate a job -----------------------------------------------------------


class FlakyProxy:
    """A loopback TCP proxy in front of the server. The n-th connection it accepts meets the
    n-th fault of `faults` (afterwards it just forwards):

    - "reset": closed at once, before the request is read;
    - "lose_reply": the request reaches the server, the server's answer is thrown away;
    - "503": answered with a 503 envelope without reaching the server.
    """

    def __init__(self, upstream_url: str, faults: list[str], port: int = 0) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults = list(faults)
        self.port = port
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        fault = self.faults.pop(0) if self.faults else "forward"
        try:
            if fault == "503":
                await _read_request(reader)
                writer.write(_UNAVAILABLE)
                await writer.drain()
            elif fault != "reset":
                await self._forward(reader, writer, lose_reply=fault == "lose_reply")
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, lose_reply: bool
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        pipes = [
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer, stop_at_first_byte=lose_reply)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            up_writer.close()


_ENVELOPE = b'{"error":{"code":"unavailable","message":"database down","details":{}}}'
_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 0\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(_ENVELOPE)).encode() + b"\r\n\r\n" + _ENVELOPE
)


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            await reader.readexactly(int(value))


async def _pipe(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, stop_at_first_byte: bool = False
) -> None:
    with contextlib.suppress(OSError):
        while data := await src.read(65536):
            if stop_at_first_byte:
                return
            dst.write(data)
            await dst.drain()


@pytest.fixture
async def flaky(start_server):
    proxies: list[FlakyProxy] = []

    async def make(faults: list[str], *, start: bool = True) -> tuple[FlakyProxy, LiveServer]:
        server = await start_server()
        proxy = FlakyProxy(server.url, faults, port=0 if start else free_port())
        proxies.append(proxy)
        if start:
            await proxy.start()
        return proxy, server

    yield make
    for proxy in proxies:
        await proxy.stop()


def proxied_client(proxy: FlakyProxy, server: LiveServer, **options) -> JobsClient:
    token = server.tenant_token("acme")
    return JobsClient(proxy.url, token, retries=FAST_RETRIES, **options)


@pytest.mark.parametrize("fault", ["lose_reply", "reset", "503"])
async def test_a_resent_enqueue_stores_one_job(flaky, db, fault):
    proxy, server = await flaky([fault, fault])
    async with proxied_client(proxy, server, coalesce=False) as client:
        created = await client.enqueue(*EMAIL, {"n": 1})
    assert proxy.connections == 3
    assert await db.fetchval("select count(*) from jobs") == 1
    assert await db.fetchval("select id from jobs") == created.job.id


async def test_a_resent_batch_stores_each_job_once(flaky, db):
    proxy, server = await flaky(["lose_reply"])
    async with proxied_client(proxy, server) as client:
        results = await asyncio.gather(*(client.enqueue(*EMAIL, {"i": i}) for i in range(20)))
    assert proxy.connections == 2
    assert len({r.job.id for r in results}) == 20
    assert await db.fetchval("select count(*) from jobs") == 20


async def test_a_resent_cancel_that_went_through_is_a_success(flaky, db):
    proxy, server = await flaky([])
    async with proxied_client(proxy, server) as client:
        job = (await client.enqueue(*EMAIL)).job
        proxy.faults = ["lose_reply"]
        await client.aclose()  # drop the kept-alive connection so the next request reconnects
    async with proxied_client(proxy, server) as client:
        cancelled = await client.cancel(job.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert await db.fetchval("select status from jobs") == "cancelled"


async def test_retries_until_the_server_is_reachable(flaky, db):
    proxy, server = await flaky([], start=False)
    async with proxied_client(proxy, server) as client:
        call = asyncio.create_task(client.enqueue(*EMAIL))
        await asyncio.sleep(0.3)  # connections are refused meanwhile
        await proxy.start()
        await call
    assert await db.fetchval("select count(*) from jobs") == 1


async def test_retries_while_the_database_is_down(start_server, database_url, db):
    db_proxy, proxied = await start_database_proxy(database_url)
    server = await start_server(database_url=proxied)
    log: list[int] = []

    async def status(response: httpx.Response) -> None:
        log.append(response.status_code)

    retries = RetryPolicy(attempts=30, base_delay=0.05, max_delay=0.1)
    token = server.tenant_token("acme")
    async with JobsClient(
        server.url, token, retries=retries, event_hooks={"response": [status]}
    ) as client:
        await db_proxy.stop()
        call = asyncio.create_task(client.enqueue(*EMAIL))
        await asyncio.sleep(0.5)
        await db_proxy.start()
        await call
    await db_proxy.stop()
    assert 503 in log and log[-1] == 201
    assert await db.fetchval("select count(*) from jobs") == 1


@pytest.mark.slow
async def test_default_retries_ride_out_a_15_s_database_outage(start_server, database_url, db):
    db_proxy, proxied = await start_database_proxy(database_url)
    server = await start_server(database_url=proxied)
    log: list[int] = []

    async def status(response: httpx.Response) -> None:
        log.append(response.status_code)

    token = server.tenant_token("acme")
    # the defaults: no retry option passed
    async with JobsClient(server.url, token, event_hooks={"response": [status]}) as client:
        await db_proxy.stop()
        single = asyncio.create_task(client.enqueue(*EMAIL, {"n": 0}))
        batch = asyncio.gather(*(client.enqueue(*EMAIL, {"n": i}) for i in range(1, 6)))
        await asyncio.sleep(15)
        assert not single.done()  # still retrying, past the four sends it used to stop at
        await db_proxy.start()
        results = [await single, *await batch]
    await db_proxy.stop()
    assert log.count(503) > 4 and log[-1] in (200, 201)
    stored = {r["id"] for r in await db.fetch("select id from jobs")}
    assert len(stored) == 6  # one job per call, none stored twice
    assert {r.job.id for r in results} == stored


async def test_gives_up_after_the_last_attempt():
    url = f"http://127.0.0.1:{free_port()}"
    retries = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.01)
    async with JobsClient(url, "t", retries=retries) as client:
        with pytest.raises(Unavailable) as info:
            await client.enqueue(*EMAIL)
        assert isinstance(info.value.__cause__, httpx.ConnectError)
        outcomes = await asyncio.gather(
            *(client.enqueue(*EMAIL) for _ in range(3)), return_exceptions=True
        )
    assert all(isinstance(o, Unavailable) for o in outcomes)
