"""Shared set-up of the worker tests (no tests here): a jobs-server with its scheduler on a
test database, this test's own SQS queues on the moto server, a tenant client, and workers
either in this process or as `jobs-worker run` subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from jobs_schema import FINISHED_STATUSES, Job, UseCaseConfig
from jobs_sdk import JobsClient
from jobs_server.publisher.base import QueueSpec
from jobs_server.publisher.sqs import SqsPublisher
from jobs_worker import HttpWorkerApi, Registry, SqsConsumer, Worker
from tests.conftest import LiveServer, StartServer

USE_CASE = "notifications"
EMAIL = "notifications.send_email"
PUSH = "notifications.send_push"
REPO = Path(__file__).resolve().parents[2]


def use_case_config(queue_prefix: str, name: str = USE_CASE, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "queue": f"{queue_prefix}-{name}",
        "capacity": 20,
        "default_delay_tolerance_seconds": 60,
        "max_attempts": 3,
        "timeout_seconds": 5,
        "lease_seconds": 4,
        "job_types": [EMAIL, PUSH],
        "backoff": {"kind": "constant", "base_seconds": 1, "cap_seconds": 1, "jitter": 0},
    }
    config.update(overrides)
    return config


@dataclass
class Stack:
    server: LiveServer
    sqs_endpoint: str
    use_cases: dict[str, UseCaseConfig]
    client: JobsClient
    exits: AsyncExitStack = field(default_factory=AsyncExitStack)

    @property
    def queue(self) -> str:
        return self.use_cases[USE_CASE].queue

    async def enqueue(self, payload: dict[str, Any], job_type: str = EMAIL, **options: Any) -> UUID:
        return (await self.client.enqueue(USE_CASE, job_type, payload, **options)).job.id

    async def wait_all(self, ids: list[UUID], timeout: float = 30.0) -> list[Job]:
        waits = (self.client.wait(i, timeout=timeout, poll_interval=0.1) for i in ids)
        return list(await asyncio.gather(*waits))

    async def dispatched(self, ids: list[UUID]) -> None:
        """Until the scheduler has handed every job to SQS (so a burst worker finds them)."""
        for job_id in ids:
            await self.wait_for(job_id, lambda j: j.status != "pending")

    async def wait_for(
        self, job_id: UUID, check: Callable[[Job], bool], timeout: float = 15.0
    ) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.client.get(job_id)
            if check(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} never got there: {job.status} {job.history}")
            await asyncio.sleep(0.05)

    async def worker(
        self, registry: Registry, *, api: HttpWorkerApi | None = None, **options: Any
    ) -> Worker:
        """A worker in this process, against the real server and SQS."""
        consumer = await SqsConsumer.connect(region="us-east-1", endpoint_url=self.sqs_endpoint)
        self.exits.push_async_callback(consumer.close)
        api = api or HttpWorkerApi(self.server.url, self.server.worker_token)
        self.exits.push_async_callback(api.close)
        defaults: dict[str, Any] = {
            "concurrency": 4,
            "poll_seconds": 1,
            "burst_idle_seconds": 0.5,
            "grace_seconds": 5,
        }
        return Worker(
            registry,
            consumer=consumer,
            api=api,
            use_cases=self.use_cases,
            **{**defaults, **options},
        )

    def worker_env(self, pythonpath: Path) -> dict[str, str]:
        config = {name: uc.model_dump(mode="json") for name, uc in self.use_cases.items()}
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")]),
            "JOBS_SERVER_URL": self.server.url,
            "JOBS_WORKER_TOKEN": self.server.worker_token,
            "JOBS_SQS_ENDPOINT_URL": self.sqs_endpoint,
            "JOBS_AWS_REGION": "us-east-1",
            "JOBS_USE_CASES": json.dumps(config),
            "JOBS_POLL_SECONDS": "1",
        }


MakeStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(
    start_server: StartServer, sqs_endpoint: str, queue_prefix: str
) -> AsyncIterator[MakeStack]:
    """Factory: server + scheduler + queues for a `notifications` use case with overrides."""
    stacks: list[Stack] = []

    async def make(
        server: dict[str, Any] | None = None,
        use_cases: dict[str, dict[str, Any]] | None = None,
        **overrides: Any,
    ) -> Stack:
        """`overrides` for the notifications use case, or `use_cases`: name -> overrides."""
        wanted = use_cases if use_cases is not None else {USE_CASE: overrides}
        raw = {name: use_case_config(queue_prefix, name, **o) for name, o in wanted.items()}
        use_cases = {k: UseCaseConfig.model_validate(v) for k, v in raw.items()}
        await create_queues(sqs_endpoint, use_cases)
        server = await start_server(
            use_cases=raw,
            run_scheduler=True,
            sqs_endpoint_url=sqs_endpoint,
            scheduler_tick_seconds=0.2,
            leader_ttl_seconds=3,
            **(server or {}),
        )
        client = JobsClient(server.url, server.tenant_token("acme"))
        stack = Stack(server=server, sqs_endpoint=sqs_endpoint, use_cases=use_cases, client=client)
        stack.exits.push_async_callback(client.aclose)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        await stack.exits.aclose()


async def create_queues(endpoint: str, use_cases: dict[str, UseCaseConfig]) -> None:
    """As `jobs-server queues create` does: visibility = the use case's lease."""
    publisher = await SqsPublisher.connect(region="us-east-1", endpoint_url=endpoint)
    try:
        await publisher.ensure_queues(
            [
                QueueSpec(uc.queue, visibility_timeout_seconds=uc.queue_visibility_seconds)
                for uc in use_cases.values()
            ]
        )
    finally:
        await publisher.close()


def finished(job: Job) -> bool:
    return job.status in FINISHED_STATUSES


class WorkerProcess:
    """`python -m jobs_worker run ...` as a child process, its output kept in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobs_worker", "run", *args],
            env=env,
            cwd=REPO,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"worker did not exit; its log:\n{self.output()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    async def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker never logged {text!r}; its log:\n{self.output()}")
            await asyncio.sleep(0.05)

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


@pytest.fixture
def worker_processes() -> Iterator[list[WorkerProcess]]:
    procs: list[WorkerProcess] = []
    yield procs
    for p in procs:
        p.close()


async def wait_for_file(path: Path, timeout: float = 20.0, count: int = 1) -> None:
    """Until `path` (a directory: `count` files in it) exists; handlers leave such marks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_dir() and len(list(path.iterdir())) >= count:
            return
        if not path.is_dir() and path.exists():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} did not appear")
