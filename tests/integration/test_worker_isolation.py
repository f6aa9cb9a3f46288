"""Hostile handlers and outages against a real jobs-server (PostgreSQL, scheduler) and SQS (moto):
an async handler that blocks its loop, handler processes that crash or hang, deliveries whose
lease is already gone, a server that is down when a redelivery arrives."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from pydantic import BaseModel

from jobs_schema import AttemptOutcome, JobMessage, JobStatus
from jobs_worker import HttpWorkerApi, JobContext, Registry
from jobs_worker.context import CancelSignal
from jobs_worker.execution import Succeeded
from jobs_worker.health import serve_health
from jobs_worker.processes import ChildSetup, ProcessPool
from jobs_worker.registry import load_registry
from tests.conftest import free_port
from tests.integration import test_worker_harness as harness
from tests.integration.proxy import TcpProxy
from tests.integration.sqs import sqs_probe
from tests.integration.test_worker_harness import EMAIL, MakeStack, WorkerProcess
from tests.integration.test_worker_process import handler_module, start_worker

make_stack = harness.make_stack  # the fixtures
worker_processes = harness.worker_processes


class Email(BaseModel):
    to: str
    sleep: float = 0.0


async def test_with_spare_loops_a_blocking_handler_is_timed_out_and_the_others_finish(
    make_stack: MakeStack, caplog: pytest.LogCaptureFixture
):
    stack = await make_stack(timeout_seconds=4, lease_seconds=15, max_attempts=1)
    registry = Registry()
    started = {"early": threading.Event(), "block": threading.Event()}
    unblocked = threading.Event()

    @registry.handler(EMAIL)
    async def send(payload: Email, ctx: JobContext) -> str:
        if payload.to in started:
            started[payload.to].set()
        if payload.to == "block":
            time.sleep(payload.sleep)  # the hostile handler under test
            unblocked.set()
        else:
            await asyncio.sleep(payload.sleep)
        return payload.to

    worker = await stack.worker(registry, block_warn_seconds=0.5, spare_loops=True)
    port = free_port()
    health = await serve_health(worker, host="127.0.0.1", port=port)
    stack.exits.callback(health.close)
    caplog.set_level(logging.WARNING, logger="jobs_worker.loops")
    run = asyncio.create_task(worker.run())
    # on the loop before the block: it cannot resume while the block lasts, and is given back
    early = await stack.enqueue({"to": "early", "sleep": 3})
    assert await asyncio.to_thread(started["early"].wait, 15)
    blocker = await stack.enqueue({"to": "block", "sleep": 20})
    assert await asyncio.to_thread(started["block"].wait, 15)
    others = [await stack.enqueue({"to": f"other{i}", "sleep": 0.2}) for i in range(3)]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        answer = await client.get("/healthz")  # while the handler still blocks its loop
    assert answer.status_code == 200 and answer.json()["ok"] is True
    jobs = await stack.wait_all([blocker, early, *others], timeout=30)
    during_the_block = not unblocked.is_set()
    worker.stop()
    await run

    blocked_job, early_job, *done = jobs
    assert during_the_block  # the timeout and the other jobs did not wait for the sleep
    assert blocked_job.status is JobStatus.DEAD
    [attempt] = blocked_job.history or []
    assert attempt.error_type == "Timeout"
    assert attempt.error_message is not None and "timeout of 4 s" in attempt.error_message
    # released, not charged: with max_attempts 1 a counted attempt would have left it dead
    assert early_job.status is JobStatus.SUCCEEDED and early_job.attempts == 1
    assert [a.outcome for a in early_job.history or []] == [AttemptOutcome.SUCCEEDED]
    assert worker.stats.interrupted >= 1
    for job in done:
        assert job.status is JobStatus.SUCCEEDED and job.attempts == 1, job.history
    warned = [r for r in caplog.records if r.getMessage().startswith("handler is blocking")]
    assert warned and warned[0].job_id == str(blocker)  # type: ignore[attr-defined]
    assert warned[0].blocked_seconds >= 0.5  # type: ignore[attr-defined]
    assert "time.sleep" in warned[0].where  # type: ignore[attr-defined]


async def test_a_blocking_handler_leaves_its_neighbours_module_global_pool_working(
    make_stack: MakeStack, caplog: pytest.LogCaptureFixture
):
    """The careless pattern: an asyncpg pool in a module global, made by the first handler.
    While one handler blocks the loop, the others wait for it (the worker takes no new work)
    and then run on the loop their pool belongs to: none fails, none is charged. On a spare
    loop they would take the pool's connections across loops and break it for good."""
    stack = await make_stack(timeout_seconds=15, lease_seconds=20, max_attempts=1)
    registry = Registry()
    pools: dict[str, asyncpg.Pool] = {}
    unblocked = threading.Event()
    started = threading.Event()
    runs: list[tuple[str, asyncio.AbstractEventLoop, bool]] = []

    async def pool() -> asyncpg.Pool:
        if "db" not in pools:
            pools["db"] = await asyncpg.create_pool(
                os.environ["JOBS_TEST_DATABASE_URL"], min_size=1, max_size=2
            )
        return pools["db"]

    @registry.handler(EMAIL)
    async def send(payload: Email, ctx: JobContext) -> int:
        if payload.to == "close":  # on the loop the pool was made on, as its owner would
            await pools.pop("db").close()
            return 0
        runs.append((payload.to, asyncio.get_running_loop(), unblocked.is_set()))
        n = int(await (await pool()).fetchval("SELECT 1"))
        if payload.to == "block":
            started.set()
            time.sleep(payload.sleep)  # the hostile neighbour
            unblocked.set()
        return n

    worker = await stack.worker(registry, block_warn_seconds=0.5)
    caplog.set_level(logging.WARNING, logger="jobs_worker.loops")
    run = asyncio.create_task(worker.run())
    [warm] = await stack.wait_all([await stack.enqueue({"to": "warm"})])
    blocker = await stack.enqueue({"to": "block", "sleep": 3})
    assert await asyncio.to_thread(started.wait, 15)
    await asyncio.sleep(1.0)  # past block_warn_seconds: the block is seen
    others = [await stack.enqueue({"to": f"other{i}"}) for i in range(4)]
    jobs = await stack.wait_all([blocker, *others], timeout=30)
    await stack.wait_all([await stack.enqueue({"to": "close"})])
    worker.stop()
    await run

    assert warm.status is JobStatus.SUCCEEDED
    for job in jobs:
        assert job.status is JobStatus.SUCCEEDED and job.attempts == 1, job.history
    home = runs[0][1]
    assert all(loop is home for _, loop, _ in runs), "every handler ran on the home loop"
    assert all(after for to, _, after in runs if to.startswith("other")), "after the block"
    warned = [r for r in caplog.records if r.getMessage().startswith("handler is blocking")]
    assert warned and warned[0].job_id == str(blocker)  # type: ignore[attr-defined]


CRASHING_HANDLERS = """
import os
import signal
import time

from pydantic import BaseModel

from jobs_worker import JobContext, Registry

registry = Registry()


class Email(BaseModel):
    to: str
    sleep: float = 0.0


@registry.handler("notifications.send_email")
def send(payload: Email, ctx: JobContext) -> dict[str, object]:
    if payload.to == "crash":
        if ctx.attempt == 1:
            os._exit(3)
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(payload.sleep)
    return {"to": payload.to, "pid": os.getpid()}
"""


@pytest.fixture
def crashing_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "crashing_handlers.py").write_text(CRASHING_HANDLERS)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned children get the parent's sys.path
    return "crashing_handlers:registry"


@pytest.mark.slow
async def test_handler_process_crash_costs_only_its_own_attempt(
    make_stack: MakeStack, crashing_registry: str
):
    stack = await make_stack(
        timeout_seconds=3, lease_seconds=15, max_attempts=2, isolation="process"
    )
    pool = ProcessPool(ChildSetup(registry=crashing_registry), size=4)
    worker = await stack.worker(load_registry(crashing_registry), processes=pool)
    run = asyncio.create_task(worker.run())
    beside = [await stack.enqueue({"to": f"beside{i}", "sleep": 2}) for i in range(2)]
    crash = await stack.enqueue({"to": "crash"})
    hang = await stack.enqueue({"to": "hang", "sleep": 60})
    crash_job, hang_job, *beside_jobs = await stack.wait_all([crash, hang, *beside], timeout=60)
    worker.stop()
    await run

    assert crash_job.status is JobStatus.DEAD
    first, second = crash_job.history or []
    assert first.error_type == second.error_type == "WorkerCrashed"
    assert first.error_message == "handler process exited with code 3"
    assert second.error_message == "handler process exited with signal 9 (SIGKILL)"
    assert hang_job.status is JobStatus.DEAD
    assert [a.error_type for a in hang_job.history or []] == ["Timeout", "Timeout"]
    assert "its process was killed" in (hang_job.last_error or "")
    for job in beside_jobs:  # ran beside the crashes, in processes of their own
        assert job.status is JobStatus.SUCCEEDED, job.history
        assert job.attempts == 1
        assert [a.outcome for a in job.history or []] == [AttemptOutcome.SUCCEEDED]
        assert job.result["pid"] != os.getpid()  # type: ignore[index,call-overload]
    assert worker.stats.crashed == 2


async def test_delivery_whose_lease_already_expired_does_not_run(make_stack: MakeStack):
    stack = await make_stack(lease_seconds=2, max_attempts=5)
    job_id = await stack.enqueue({"to": "a@example.com"})
    await stack.dispatched([job_id])
    async with sqs_probe(stack.sqs_endpoint) as probe:
        url = await probe.url(stack.queue)
        [old] = await probe.receive(stack.queue, wait=5)  # held back, as a paused SQS would
        await probe.client.delete_message(QueueUrl=url, ReceiptHandle=old["ReceiptHandle"])
        # the reaper closes attempt 1 (lease expired) and the retry is dispatched
        await stack.wait_for(job_id, lambda j: j.attempts == 2 and j.status == "running")
        await probe.client.send_message(QueueUrl=url, MessageBody=old["Body"])  # late copy
    calls: list[int] = []
    registry = Registry()

    @registry.handler(EMAIL)
    async def send(payload: Email, ctx: JobContext) -> str:
        calls.append(ctx.attempt)
        return "sent"

    worker = await stack.worker(registry)
    stats = await asyncio.wait_for(worker.run(burst=True), 30)
    job = await stack.client.get(job_id)
    assert job.status is JobStatus.SUCCEEDED
    # the first attempt's copy arrived first-time and was not run; on a slow machine the
    # retry's lease may run out before the worker is up too: that copy is not run either
    assert calls == [job.attempts] and job.attempts >= 2
    assert stats.skipped == job.attempts - 1


async def test_redelivery_waits_while_the_server_is_unreachable(make_stack: MakeStack):
    stack = await make_stack(lease_seconds=30)
    job_id = await stack.enqueue({"to": "a@example.com"})
    await stack.dispatched([job_id])
    async with sqs_probe(stack.sqs_endpoint) as probe:
        [message] = await probe.receive(stack.queue, wait=5)
        await probe.client.change_message_visibility(  # back at once: a redelivery
            QueueUrl=await probe.url(stack.queue),
            ReceiptHandle=message["ReceiptHandle"],
            VisibilityTimeout=0,
        )
    proxy = TcpProxy("127.0.0.1", urlsplit(stack.server.url).port or 80)
    await proxy.start()
    await proxy.stop()  # the worker's server is down from the start
    calls: list[int] = []
    registry = Registry()

    @registry.handler(EMAIL)
    async def send(payload: Email, ctx: JobContext) -> str:
        calls.append(ctx.attempt)
        return "sent"

    api = HttpWorkerApi(f"http://127.0.0.1:{proxy.port}", stack.server.worker_token, attempts=1)
    worker = await stack.worker(registry, api=api)
    run = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 15
    while not any(w.startswith("server") for w in worker.health().waiting_for):
        assert time.monotonic() < deadline, "the worker never waited for the server"
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.5)  # a retry or two of the lease check
    assert calls == []
    assert worker.health().ready is False
    await proxy.start()
    [job] = await stack.wait_all([job_id])
    worker.stop()
    await run
    await proxy.stop()
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 1
    assert calls == [1]


@pytest.mark.slow
async def test_worker_started_before_its_queue_exists_starts_once_it_is_created(
    make_stack: MakeStack, tmp_path: Path, worker_processes: list[WorkerProcess]
):
    stack = await make_stack()
    async with sqs_probe(stack.sqs_endpoint) as probe:
        await probe.client.delete_queue(QueueUrl=await probe.url(stack.queue))
    handler_module(tmp_path)
    port = free_port()
    proc = start_worker(stack, tmp_path, worker_processes, health_port=port)
    await proc.wait_for_output("waiting for a dependency before starting")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as health:
        ready = await health.get("/readyz")
        assert ready.status_code == 503
        assert any(w.startswith(f"queue {stack.queue}") for w in ready.json()["waiting_for"])
        assert (await health.get("/healthz")).status_code == 200  # alive, only not ready
        await harness.create_queues(stack.sqs_endpoint, stack.use_cases)
        job_id = await stack.enqueue({"to": "a@example.com"})
        [job] = await stack.wait_all([job_id], timeout=60)
        assert (await health.get("/readyz")).status_code == 200
    assert job.status is JobStatus.SUCCEEDED
    assert job.result["pid"] == proc.proc.pid  # type: ignore[index,call-overload]
    proc.signal(signal.SIGTERM)
    assert await proc.wait() == 0, proc.output()


@pytest.mark.slow
async def test_cli_runs_handlers_in_child_processes_with_isolation_process(
    make_stack: MakeStack, tmp_path: Path, worker_processes: list[WorkerProcess]
):
    stack = await make_stack()
    handler_module(tmp_path)
    proc = start_worker(stack, tmp_path, worker_processes, "--isolation", "process")
    ids = [await stack.enqueue({"to": f"u{i}"}) for i in range(3)]
    jobs = await stack.wait_all(ids, timeout=60)
    proc.signal(signal.SIGTERM)
    assert await proc.wait() == 0, proc.output()
    pids = {job.result["pid"] for job in jobs}  # type: ignore[index,call-overload]
    assert all(job.status is JobStatus.SUCCEEDED for job in jobs)
    assert proc.proc.pid not in pids and os.getpid() not in pids
    assert "handler process started" in proc.output()


def job_message(**overrides: object) -> JobMessage:
    now = datetime.now(UTC)
    fields: dict[str, object] = {
        "job_id": uuid.uuid4(),
        "lease_token": uuid.uuid4(),
        "attempt": 1,
        "tenant": "acme",
        "use_case": "notifications",
        "job_type": EMAIL,
        "payload": None,
        "deadline": now + timedelta(minutes=1),
        "lease_expires_at": now + timedelta(minutes=1),
        "max_attempts": 3,
    }
    return JobMessage.model_validate({**fields, **overrides})


@pytest.mark.slow
async def test_a_handler_process_that_died_while_idle_is_replaced_before_the_next_attempt(
    crashing_registry: str,
):
    pool = ProcessPool(ChildSetup(registry=crashing_registry), size=1)
    try:
        run = partial(pool.run, worker_id="w", timeout_seconds=30, cancel=CancelSignal())
        first = await run(job_message(), {"to": "a"})
        assert isinstance(first, Succeeded)
        os.kill(first.result["pid"], signal.SIGKILL)  # type: ignore[index,call-overload,arg-type]
        second = await run(job_message(), {"to": "b"})
    finally:
        await pool.close()
    assert isinstance(second, Succeeded)  # not a crash of its own: it never reached the dead one
    assert second.result["pid"] != first.result["pid"]  # type: ignore[index,call-overload]
