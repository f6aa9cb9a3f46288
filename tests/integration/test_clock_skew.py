"""An API host whose wall clock is 30 s off decides no time: jobs it takes are neither late nor
missed. The API runs as a process under libfaketime (`faketime`), the scheduler and a worker on
this host's clock; every time a rule reads comes from the database's clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg
import httpx
import pytest
from pydantic import BaseModel

from jobs_sdk import JobsClient
from jobs_worker import HttpWorkerApi, JobContext, Registry, SqsConsumer, Worker
from tests.conftest import ADMIN_TOKEN, TENANTS, WORKER_TOKEN, LiveServer, free_port
from tests.integration.scheduler_support import Rig, make_rig, use_case
from tests.integration.sqs import sqs_probe

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("faketime") is None, reason="needs faketime (libfaketime)"),
]

USE_CASE = "clocked"
TOLERANCE = 10
SERVE = ("serve", "--log-level", "warning")


class Tick(BaseModel):
    n: int


def registry() -> Registry:
    reg = Registry()

    @reg.handler("clocked.tick")
    async def tick(payload: Tick, ctx: JobContext) -> dict[str, object]:
        return {"n": payload.n}

    return reg


@pytest.fixture
async def rig(database_url, sqs_endpoint, queue_prefix) -> AsyncIterator[Rig]:
    use_cases = {USE_CASE: use_case(f"{queue_prefix}-clocked")}
    async with sqs_probe(sqs_endpoint) as probe:
        async for r in make_rig(database_url, sqs_endpoint, probe, use_cases):
            yield r


@pytest.fixture
def skewed_api(
    rig: Rig, database_url: str, tmp_path: Path
) -> Iterator[Callable[[str], _SkewedApi]]:
    """Factory: the API as a process whose wall clock is off by `skew` (faketime's -f)."""
    apis: list[_SkewedApi] = []
    yield lambda skew: _start_api(rig, database_url, skew, tmp_path, apis)
    for proc in apis:
        proc.stop()
        assert not proc.still_listening(), "the API process outlived faketime"


class _SkewedApi:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def stop(self) -> None:
        # faketime runs the API as its child: signal the whole group, or the API outlives it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def still_listening(self) -> bool:
        """Whether anything still answers on the API's port, for up to 10 s after stop()."""
        where = urlsplit(self.url)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((where.hostname, where.port), timeout=1).close()
            except OSError:
                return False
            time.sleep(0.05)  # a process ending after its signal
        return True


def _start_api(
    rig: Rig, database_url: str, skew: str, tmp_path: Path, apis: list[_SkewedApi]
) -> _SkewedApi:
    port = free_port()
    env = os.environ | {
        "JOBS_DATABASE_URL": database_url,
        "JOBS_USE_CASES": json.dumps(
            {k: v.model_dump(mode="json") for k, v in rig.use_cases.items()}
        ),
        "JOBS_TENANTS": json.dumps(TENANTS),
        "JOBS_ADMIN_TOKEN": ADMIN_TOKEN,
        "JOBS_WORKER_TOKEN": WORKER_TOKEN,
        "JOBS_HOST": "127.0.0.1",
        "JOBS_PORT": str(port),
        "JOBS_RUN_SCHEDULER": "false",
        # the wall clock is off; intervals measured on the monotonic clock stay true
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    log = tmp_path / f"api{skew}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["faketime", "-f", skew, sys.executable, "-m", "jobs_server", *SERVE],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own, for stop() to end with faketime's child
        )
    api = _SkewedApi(proc, f"http://127.0.0.1:{port}", log)
    apis.append(api)
    return api


async def _ready(api: _SkewedApi) -> datetime:
    """Until the API answers /readyz; returns the Date it answered with (its host's clock)."""
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as c:
        while time.monotonic() < deadline:
            if api.proc.poll() is not None:
                raise AssertionError(f"the API exited; its log:\n{api.log.read_text()}")
            try:
                r = await c.get(api.url + "/readyz")
                if r.status_code == 200:
                    return parsedate_to_datetime(r.headers["date"])
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)  # a real process starting up
    raise AssertionError(f"the API never got ready; its log:\n{api.log.read_text()}")


async def _db_now(db: asyncpg.Connection) -> datetime:
    now: datetime = await db.fetchval("SELECT clock_timestamp()")
    return now


async def _dispatched(client: JobsClient, ids: list[UUID]) -> None:
    deadline = time.monotonic() + 30
    for job_id in ids:
        while (await client.get(job_id)).status == "pending":
            assert time.monotonic() < deadline, f"job {job_id} was never dispatched"
            await asyncio.sleep(0.05)  # the scheduler's loop must act


@pytest.mark.parametrize("skew", ["+30s", "-30s"])
async def test_a_skewed_api_host_makes_jobs_neither_late_nor_missed(
    rig, db, skewed_api, sqs_endpoint, skew
):
    api = skewed_api(skew)
    said = await _ready(api)
    offset = (said - datetime.now(UTC)).total_seconds()
    assert abs(offset - int(skew.removesuffix("s"))) < 3, "faketime did not skew the API host"

    sched = rig.scheduler(tick_seconds=0.2)
    stop = asyncio.Event()
    loop = asyncio.create_task(sched.run_forever(stop))
    consumer = await SqsConsumer.connect(region="us-east-1", endpoint_url=sqs_endpoint)
    worker_api = HttpWorkerApi(api.url, WORKER_TOKEN)
    try:
        async with JobsClient(api.url, LiveServer.tenant_token("acme")) as client:
            before = await _db_now(db)
            ids = [
                (
                    await client.enqueue(
                        USE_CASE, "clocked.tick", {"n": n}, delay_tolerance=TOLERANCE
                    )
                ).job.id
                for n in range(3)
            ]
            after = await _db_now(db)
            await _dispatched(client, ids)
            worker = Worker(
                registry(),
                consumer=consumer,
                api=worker_api,
                use_cases=rig.use_cases,
                concurrency=3,
                poll_seconds=1,
                burst_idle_seconds=0.5,
                grace_seconds=5,
            )
            await asyncio.wait_for(worker.run(burst=True), 30)
    finally:
        stop.set()
        await loop
        await worker_api.close()
        await consumer.close()

    rows = await db.fetch(
        "SELECT j.status, j.deadline_missed, j.created_at, j.run_at, j.deadline, j.finished_at, "
        "a.dispatched_at FROM jobs j JOIN job_attempts a ON a.job_id = j.id ORDER BY j.id"
    )
    assert len(rows) == 3
    slack = timedelta(seconds=1)
    for r in rows:
        assert r["status"] == "succeeded"
        assert not r["deadline_missed"]
        # stamped by the database's clock, not the API host's (30 s off)
        assert before - slack <= r["created_at"] <= after + slack
        assert abs(r["run_at"] - r["created_at"]) < slack
        assert r["deadline"] - r["run_at"] == timedelta(seconds=TOLERANCE)
        assert r["run_at"] <= r["dispatched_at"] < r["deadline"]
        assert r["dispatched_at"] <= r["finished_at"]
