"""Handler loops, the watchdog, the server clock and the isolation settings, without services.
The same behaviours against PostgreSQL and SQS are in tests/integration/test_worker_isolation.py."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pydantic import BaseModel

from jobs_schema import SERVER_TIME_HEADER, JobStatus, LeaseRef, LeaseState, UseCaseConfig
from jobs_schema.config import HandlerIsolation
from jobs_worker import InMemoryConsumer, JobContext, JobsWorkerError, Registry, Worker
from jobs_worker.execution import Failed, Interrupted, execute
from jobs_worker.heartbeats import Heartbeater, HeldLease
from jobs_worker.loops import HandlerExit, HandlerLoops
from jobs_worker.processes import describe_exit
from jobs_worker.reporter import ServerClock
from jobs_worker.settings import WorkerSettings
from jobs_worker.testing import InMemoryWorkerApi, make_context


class Item(BaseModel):
    sleep: float = 0.0


@pytest.fixture
def loops():
    loops = HandlerLoops(block_warn_seconds=0.3)
    yield loops
    loops.close()


@pytest.fixture
def spare_loops():
    loops = HandlerLoops(block_warn_seconds=0.3, spares=True)
    yield loops
    loops.close()


async def test_without_spares_new_handlers_wait_for_the_blocked_home_loop(
    loops: HandlerLoops, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="jobs_worker.loops")
    release = threading.Event()
    ran_on: list[asyncio.AbstractEventLoop] = []

    async def hog() -> None:
        release.wait(10)

    async def quick() -> str:
        ran_on.append(asyncio.get_running_loop())
        return "ran"

    home = loops.current
    _, blocker = loops.submit(hog(), name="job-1", context=contextvars.copy_context())
    try:
        deadline = time.monotonic() + 10
        while not loops.check() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        # the worker is told to take no new work, and nothing moves off the home loop
        assert loops.stalled and loops.current is home and loops.loops == [home]
        _, other = loops.submit(quick(), name="job-2", context=contextvars.copy_context())
        await asyncio.sleep(0.3)
        assert not other.done()  # it waits for the home loop, where its clients belong
    finally:
        release.set()
    assert await asyncio.wait_for(other, 5) == "ran"
    await blocker
    assert ran_on == [home.loop]
    deadline = time.monotonic() + 5
    while loops.stalled and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        loops.check()
    assert not loops.stalled
    [warned] = [r for r in caplog.records if r.getMessage().startswith("handler is blocking")]
    assert "no new work" in warned.meanwhile  # type: ignore[attr-defined]


async def test_with_spares_a_blocked_loop_is_named_by_its_job_and_new_handlers_go_elsewhere(
    spare_loops: HandlerLoops, caplog: pytest.LogCaptureFixture
):
    loops = spare_loops
    caplog.set_level(logging.INFO, logger="jobs_worker.loops")
    release = threading.Event()

    async def hog() -> None:
        release.wait(10)  # blocks its loop, as a careless handler would

    first = loops.current
    _, future = loops.submit(hog(), name="job-1", context=contextvars.copy_context())
    try:
        found = []
        deadline = time.monotonic() + 10
        while not found and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            found = loops.check()
        [blocked] = found
        assert blocked.job == "job-1" and blocked.seconds >= 0.3
        assert loops.current is not first  # the next handler does not queue behind it

        async def quick() -> str:
            return "ran"

        _, other = loops.submit(quick(), name="job-2", context=contextvars.copy_context())
        assert await other == "ran"
    finally:
        release.set()
    await future
    deadline = time.monotonic() + 5
    while first.warned is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        loops.check()  # once the loop ticks again, the block's end and length are logged
    # and new handlers go home again, where module-level clients they made first belong
    assert loops.current is first
    assert loops.loops == [first], "the idle spare is stopped"
    [warned] = [r for r in caplog.records if r.getMessage().startswith("handler is blocking")]
    [ended] = [r for r in caplog.records if r.getMessage() == "handler event loop runs again"]
    assert warned.levelno == logging.WARNING and ended.job_id == "job-1"  # type: ignore[attr-defined]
    assert ended.blocked_seconds >= warned.blocked_seconds  # type: ignore[attr-defined]


async def test_timeout_fires_on_a_blocking_async_handler_and_spares_the_bystander(loops):
    registry = Registry()
    release = threading.Event()

    @registry.handler("block")
    async def block(payload: Item, ctx: JobContext) -> None:
        release.wait(10)

    @registry.handler("wait")
    async def wait(payload: Item, ctx: JobContext) -> None:
        await asyncio.sleep(payload.sleep)

    def run(job_type: str, sleep: float, timeout: float) -> asyncio.Task[object]:
        ctx = make_context(job_type)
        return asyncio.create_task(
            execute(
                registry.get(job_type), {"sleep": sleep}, ctx, timeout_seconds=timeout, loops=loops
            )
        )

    try:
        bystander = run("wait", 0.5, 1.5)  # starts first, then cannot resume
        await asyncio.sleep(0.2)
        blocker = run("block", 0, 1.0)
        timed_out = await asyncio.wait_for(blocker, 5)
        interrupted = await asyncio.wait_for(bystander, 5)
    finally:
        release.set()
    assert isinstance(timed_out, Failed) and timed_out.failure.type == "Timeout"
    assert "blocked its event loop" in timed_out.failure.message
    assert isinstance(interrupted, Interrupted)


async def test_system_exit_in_a_handler_is_its_failure_not_the_loops_end(loops):
    registry = Registry()

    @registry.handler("exit")
    async def leave(payload: Item) -> None:
        raise SystemExit(3)

    outcome = await execute(
        registry.get("exit"), {}, make_context("exit"), timeout_seconds=5, loops=loops
    )
    assert isinstance(outcome, Failed)
    assert outcome.failure.type == f"{HandlerExit.__module__}.HandlerExit"
    assert "SystemExit(3)" in outcome.failure.message
    assert loops.current._thread.is_alive()  # the loop still takes handlers


def test_server_clock_follows_the_date_header():
    clock = ServerClock()
    now = time.time()
    ahead = datetime.now(UTC) + timedelta(minutes=10)
    clock.observe({"date": format_datetime(ahead, usegmt=True)}, sent=now, received=now)
    assert clock.known
    skew = (clock.now() - datetime.now(UTC)).total_seconds()
    assert 598 <= skew <= 602
    assert clock.uncertainty >= 1.5  # whole seconds
    clock.observe({"date": "not a date"}, sent=now, received=now)  # ignored
    assert 598 <= (clock.now() - datetime.now(UTC)).total_seconds() <= 602


def test_server_clock_prefers_the_server_time_header():
    clock = ServerClock()
    sent = time.time()
    received = sent + 0.2
    server = (sent + received) / 2 - 42.125  # the server is 42.125 s behind this host
    behind = datetime.now(UTC) - timedelta(minutes=10)  # a Date header that disagrees
    clock.observe(
        {SERVER_TIME_HEADER: f"{server:.3f}", "date": format_datetime(behind, usegmt=True)},
        sent=sent,
        received=received,
    )
    skew = (clock.now() - datetime.now(UTC)).total_seconds()
    assert -42.2 <= skew <= -42.0
    assert clock.uncertainty == pytest.approx(0.11)  # half the round trip, plus rounding
    for bad in ("nan", "inf", "soon", ""):
        clock.observe({SERVER_TIME_HEADER: bad}, sent=sent, received=received)  # ignored
        assert -42.2 <= (clock.now() - datetime.now(UTC)).total_seconds() <= -42.0


@pytest.mark.parametrize(
    ("exitcode", "text"),
    [
        (-9, "handler process exited with signal 9 (SIGKILL)"),
        (-11, "handler process exited with signal 11 (SIGSEGV)"),
        (3, "handler process exited with code 3"),
    ],
)
def test_exit_descriptions(exitcode: int, text: str):
    assert describe_exit(exitcode) == text


def test_process_isolation_without_a_pool_is_refused():
    consumer = InMemoryConsumer()
    uc = UseCaseConfig(queue="q", isolation=HandlerIsolation.PROCESS)
    with pytest.raises(JobsWorkerError, match="runs handlers in processes"):
        Worker(Registry(), consumer=consumer, api=InMemoryWorkerApi(consumer), use_cases={"x": uc})


def test_isolation_setting_overrides_every_use_case(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("JOBS_USE_CASES", '{"a": {"queue": "qa"}, "b": {"queue": "qb"}}')
    monkeypatch.setenv("JOBS_ISOLATION", "process")
    chosen = WorkerSettings().select_use_cases(["a", "b"])
    assert {uc.isolation for uc in chosen.values()} == {HandlerIsolation.PROCESS}
    monkeypatch.delenv("JOBS_ISOLATION")
    chosen = WorkerSettings().select_use_cases(["a"])
    assert chosen["a"].isolation is HandlerIsolation.THREAD


@pytest.mark.parametrize(("finishing", "level"), [(True, logging.DEBUG), (False, logging.WARNING)])
async def test_lease_lost_is_a_warning_unless_the_attempts_own_report_raced_it(
    caplog: pytest.LogCaptureFixture, finishing: bool, level: int
):
    consumer = InMemoryConsumer()
    api = InMemoryWorkerApi(consumer)
    job = api.dispatch("q", "t", {})
    [received] = await consumer.receive("q", max_messages=1, wait_seconds=0)
    api.jobs[job.job_id].status = JobStatus.SUCCEEDED  # the report landed before the beat
    ref = LeaseRef(job_id=job.job_id, attempt=job.attempt, lease_token=job.lease_token)
    lease = HeldLease(ref=ref, message=received, seconds=30, finishing=finishing)
    caplog.set_level(logging.DEBUG, logger="jobs_worker.heartbeats")
    await Heartbeater(api, consumer, worker_id="w").beat([lease])
    assert lease.state is LeaseState.LOST
    [record] = [r for r in caplog.records if r.getMessage() == "lease lost"]
    assert record.levelno == level


async def test_a_stuck_sync_handler_does_not_hold_back_the_next_one():
    registry = Registry()
    release = threading.Event()

    @registry.handler("stuck")
    def stuck(payload: Item) -> None:
        release.wait(10)  # past its timeout: its thread cannot be stopped

    @registry.handler("quick")
    def quick(payload: Item) -> str:
        return "done"

    consumer = InMemoryConsumer()
    api = InMemoryWorkerApi(consumer)
    uc = UseCaseConfig(queue="q", timeout_seconds=0.5)
    worker = Worker(
        registry,
        consumer=consumer,
        api=api,
        use_cases={"test": uc},
        concurrency=1,
        poll_seconds=0.05,
        burst_idle_seconds=0.1,
    )
    first = api.dispatch("q", "stuck", {})
    second = api.dispatch("q", "quick", {})
    try:
        await asyncio.wait_for(worker.run(burst=True), 10)
        still_stuck = not release.is_set()
    finally:
        release.set()
    assert still_stuck
    [timed_out] = api.jobs[first.job_id].reports
    assert timed_out.failure is not None and timed_out.failure.type == "Timeout"
    [done] = api.jobs[second.job_id].reports
    assert done.result == "done"  # on a fresh pool thread, not queued behind the stuck one
