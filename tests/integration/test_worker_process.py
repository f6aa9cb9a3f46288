"""`jobs-worker run` as a real subprocess: killed with SIGKILL mid-handler, stopped with SIGTERM
with handlers in flight, and refusing to start on bad registrations or settings."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from jobs_schema import AttemptOutcome, JobStatus
from jobs_worker import JobContext, Registry
from tests.conftest import free_port
from tests.integration import test_worker_harness as harness
from tests.integration.test_worker_harness import (
    EMAIL,
    REPO,
    USE_CASE,
    MakeStack,
    WorkerProcess,
    wait_for_file,
)

make_stack = harness.make_stack  # the fixtures
worker_processes = harness.worker_processes

pytestmark = pytest.mark.slow

HANDLERS = """
import asyncio
import os
from pathlib import Path

from pydantic import BaseModel

from jobs_worker import JobContext, Registry

registry = Registry()
MARKS = Path(os.environ["TEST_MARKS"])


class Email(BaseModel):
    to: str
    sleep: float = 0.0


@registry.handler("notifications.send_email")
async def send_email(payload: Email, ctx: JobContext) -> dict[str, object]:
    (MARKS / f"{ctx.job_id}-{ctx.attempt}").touch()
    await asyncio.sleep(payload.sleep)
    return {"to": payload.to, "pid": os.getpid()}
"""


class Email(BaseModel):
    to: str
    sleep: float = 0.0


def quick_registry() -> Registry:
    """The second worker's handlers: the same job type, no waiting."""
    registry = Registry()

    @registry.handler(EMAIL)
    async def send_email(payload: Email, ctx: JobContext) -> dict[str, object]:
        return {"to": payload.to, "pid": os.getpid()}

    return registry


def handler_module(tmp_path: Path) -> tuple[Path, Path]:
    code = tmp_path / "code"
    code.mkdir()
    (code / "test_handlers.py").write_text(HANDLERS)
    marks = tmp_path / "marks"
    marks.mkdir()
    return code, marks


def start_worker(
    stack: harness.Stack,
    tmp_path: Path,
    procs: list[WorkerProcess],
    *extra: str,
    health_port: int | None = None,
) -> WorkerProcess:
    code, marks = tmp_path / "code", tmp_path / "marks"
    env = {**stack.worker_env(code), "TEST_MARKS": str(marks)}
    if health_port is not None:
        env["JOBS_HEALTH_PORT"] = str(health_port)
    args = ["test_handlers:registry", "--use-case", USE_CASE, "--concurrency", "4", *extra]
    proc = WorkerProcess(args, env, tmp_path / f"worker-{len(procs)}.log")
    procs.append(proc)
    return proc


async def test_sigkill_mid_handler_jobs_retry_after_lease_on_another_worker(
    make_stack: MakeStack, tmp_path: Path, worker_processes: list[WorkerProcess]
):
    stack = await make_stack(lease_seconds=2, timeout_seconds=10)
    _, marks = handler_module(tmp_path)
    first = start_worker(stack, tmp_path, worker_processes)
    await first.wait_for_output("worker started")  # its start-up is not part of the race
    ids = [await stack.enqueue({"to": f"u{i}", "sleep": 60}) for i in range(4)]
    await wait_for_file(marks, count=4)  # every handler is mid-sleep
    await asyncio.sleep(1.0)  # past the first heartbeat, which names the worker
    first.signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    killed = dict(mark.name.rsplit("-", 1) for mark in marks.iterdir())  # job id -> attempt

    second = await stack.worker(quick_registry())
    run = asyncio.create_task(second.run())
    jobs = await stack.wait_all(ids, timeout=30)
    second.stop()
    await run
    for job in jobs:
        assert job.status is JobStatus.SUCCEEDED
        assert job.result == {"to": job.payload["to"], "pid": os.getpid()}
        # normally attempt 1; on a loaded machine the first worker may have started later
        attempt = int(killed[str(job.id)])
        *expired, last = job.history or []
        assert [a.outcome for a in expired] == [AttemptOutcome.LEASE_EXPIRED] * attempt
        # the killed attempt names its worker: learnt from the heartbeat before it died
        assert expired[-1].worker_id is not None
        assert expired[-1].worker_id != second.worker_id
        assert last.outcome is AttemptOutcome.SUCCEEDED
        assert last.attempt == attempt + 1 and last.worker_id == second.worker_id


async def test_sigterm_lets_handlers_finish_releases_the_rest_and_exits_zero(
    make_stack: MakeStack, tmp_path: Path, worker_processes: list[WorkerProcess]
):
    stack = await make_stack(lease_seconds=30, timeout_seconds=60)
    _, marks = handler_module(tmp_path)
    quick = [await stack.enqueue({"to": f"quick{i}", "sleep": 1}) for i in range(2)]
    slow = [await stack.enqueue({"to": f"slow{i}", "sleep": 60}) for i in range(2)]
    health_port = free_port()
    proc = start_worker(
        stack, tmp_path, worker_processes, "--grace-seconds", "2", health_port=health_port
    )
    await proc.wait_for_output("worker started")
    await wait_for_file(marks, count=4)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{health_port}") as health:
        alive = await health.get("/healthz")
        assert alive.status_code == 200 and alive.json()["ok"] is True
        families = text_string_to_metric_families((await health.get("/metrics")).text)
        running = [s.value for f in families for s in f.samples if s.name == "jobs_worker_running"]
        assert running == [4]
    proc.signal(signal.SIGTERM)
    assert await proc.wait(timeout=15) == 0, proc.output()
    assert "leases released" in proc.output()

    for job in [await stack.client.get(i) for i in quick]:
        assert job.status is JobStatus.SUCCEEDED, job
        assert job.result["pid"] != os.getpid()  # type: ignore[index,call-overload]
    # released, not left to expire: with a 30 s lease they run again right away
    second = await stack.worker(quick_registry())
    run = asyncio.create_task(second.run())
    jobs = await stack.wait_all(slow, timeout=15)
    second.stop()
    await run
    for job in jobs:
        assert job.status is JobStatus.SUCCEEDED
        history = job.history or []
        assert len(history) == 1 and history[0].worker_id == second.worker_id  # attempt given back


BAD_REGISTRY = """
from pydantic import BaseModel
from jobs_worker import JobContext, Registry

registry = Registry()

class Email(BaseModel):
    to: str

@registry.handler("notifications.send_email")
async def first(payload: Email, ctx: JobContext) -> None: ...

@registry.handler("notifications.send_email")
def second(payload: Email, ctx: JobContext) -> None: ...
"""

OK_REGISTRY = "from jobs_worker import Registry\nregistry = Registry()\n"

WRONG_SIGNATURE = """
from jobs_worker import Registry

registry = Registry()

@registry.handler("notifications.send_email")
def send(to: str, ctx) -> None: ...
"""


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (BAD_REGISTRY, "job type 'notifications.send_email' already has a handler"),
        (WRONG_SIGNATURE, "parameter 'to' is annotated <class 'str'>, which is not a pydantic"),
    ],
)
def test_bad_registrations_fail_at_start_up(tmp_path: Path, source: str, expected: str):
    (tmp_path / "bad_handlers.py").write_text(textwrap.dedent(source))
    env = {"JOBS_USE_CASES": '{"notifications": {"queue": "q"}}'}
    for command in (["check"], ["run", "--use-case", "notifications"]):
        result = run_cli(tmp_path, [*command, "bad_handlers:registry"], env)
        assert result.returncode == 2
        assert expected in result.stderr


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({}, ["--use-case", "notifications"], "JOBS_SERVER_URL is not set"),
        (
            {"JOBS_SERVER_URL": "http://127.0.0.1:9"},
            ["--use-case", "notifications"],
            "JOBS_WORKER_TOKEN is not set",
        ),
        (
            {"JOBS_SERVER_URL": "x", "JOBS_WORKER_TOKEN": "t"},
            ["--use-case", "nope"],
            "unknown use case 'nope'",
        ),
        ({"JOBS_USE_CASES": "{not json"}, ["--use-case", "notifications"], "bad settings"),
    ],
)
def test_missing_or_bad_settings_fail_fast_naming_them(
    tmp_path: Path, env: dict[str, str], args: list[str], expected: str
):
    (tmp_path / "ok_handlers.py").write_text(
        "from jobs_worker import Registry\nregistry = Registry()\n"
    )
    base = {"JOBS_USE_CASES": '{"notifications": {"queue": "q"}}'}
    result = run_cli(tmp_path, ["run", "ok_handlers:registry", *args], {**base, **env})
    assert result.returncode == 2
    assert expected in result.stderr, result.stderr


async def test_unreachable_server_is_waited_for_and_a_stop_still_works(
    tmp_path: Path, worker_processes: list[WorkerProcess]
):
    (tmp_path / "ok_handlers.py").write_text(
        "from jobs_worker import Registry\nregistry = Registry()\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")}
    env = {
        **clean,
        "PYTHONPATH": str(tmp_path),
        "JOBS_USE_CASES": '{"notifications": {"queue": "q"}}',
        "JOBS_SERVER_URL": "http://127.0.0.1:9",
        "JOBS_WORKER_TOKEN": "t",
    }
    proc = WorkerProcess(
        ["ok_handlers:registry", "-u", "notifications"], env, tmp_path / "worker.log"
    )
    worker_processes.append(proc)
    await proc.wait_for_output("waiting for a dependency before starting")
    assert "cannot reach the jobs server" in proc.output()
    proc.signal(signal.SIGTERM)
    assert await proc.wait() == 0, proc.output()


def run_cli(
    pythonpath: Path, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")}
    return subprocess.run(
        [sys.executable, "-m", "jobs_worker", *args],
        env={**clean, "PYTHONPATH": str(pythonpath), **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
