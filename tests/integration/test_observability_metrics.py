"""Metrics change as jobs flow: N jobs enqueued (one deduplicated duplicate, one refused by
quota), dispatched by the scheduler and run by a worker; then the server's and the worker's
GET /metrics, parsed with prometheus-client's own parser, read N (and 1) where they should."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from jobs_worker import JobContext, Registry
from jobs_worker.health import serve_health
from jobs_worker.metrics import WorkerMetrics
from tests.conftest import TENANTS, USE_CASES, LiveServer, free_port
from tests.integration import test_worker_harness as harness
from tests.integration.test_worker_harness import EMAIL, USE_CASE, MakeStack, Stack

make_stack = harness.make_stack  # the fixture

N = 5

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Email(BaseModel):
    to: str


def registry() -> Registry:
    reg = Registry()

    @reg.handler(EMAIL)
    async def send_email(payload: Email, ctx: JobContext) -> dict[str, str]:
        return {"sent_to": payload.to}

    return reg


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def names(samples: Samples) -> set[str]:
    return {n for n, _ in samples}


async def scrape(url: str, **headers: str) -> Samples:
    async with httpx.AsyncClient() as http:
        r = await http.get(url + "/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


async def until(read: Callable[[], Any], check: Callable[[Samples], bool]) -> Samples:
    deadline = time.monotonic() + 15
    while True:
        samples = await read()
        if check(samples):
            return samples
        assert time.monotonic() < deadline, f"metrics never got there: {samples}"
        await asyncio.sleep(0.1)


async def enqueue(stack: Stack, http: httpx.AsyncClient, n: int, **extra: Any) -> httpx.Response:
    body = {"use_case": USE_CASE, "job_type": EMAIL, "payload": {"to": f"{n}@x"}, **extra}
    return await http.post(f"{stack.server.url}/v1/jobs", json=body)


@pytest.fixture
async def stack(make_stack: MakeStack) -> Stack:
    acme = {**TENANTS["acme"], "max_active_jobs": N}  # N jobs fill the quota
    return await make_stack(
        server={
            "tenants": {**TENANTS, "acme": acme},
            "metrics_tenant_labels": ["acme"],
            "metrics_refresh_seconds": 0.1,
        },
        lease_seconds=30,  # dispatched jobs wait for the worker: no lease may expire meanwhile
    )


async def test_metrics_count_jobs_through_enqueue_dispatch_and_run(stack: Stack):
    headers = {"Authorization": f"Bearer {stack.server.tenant_token('acme')}"}
    async with httpx.AsyncClient(headers=headers) as http:
        codes = [(await enqueue(stack, http, 0, dedup_key="d")).status_code]
        # dispatched after its deadline: a deadline miss
        codes += [(await enqueue(stack, http, 1, delay_tolerance_seconds=0)).status_code]
        codes += [(await enqueue(stack, http, i)).status_code for i in range(2, N)]
        duplicate = await enqueue(stack, http, 0, dedup_key="d")
        refused = await enqueue(stack, http, N)
    assert codes == [201] * N
    assert duplicate.status_code == 200 and duplicate.json()["deduplicated"] is True
    assert refused.status_code == 429

    server = await until(
        lambda: scrape(stack.server.url),
        lambda s: total(s, "jobs_queue_depth", status="running") == N,
    )
    assert total(server, "jobs_queue_depth", status="running", tenant="acme") == N
    assert total(server, "jobs_queue_depth", status="pending") == 0
    assert total(server, "jobs_scheduler_leader") == 1

    worker = await stack.worker(registry(), metrics=WorkerMetrics())
    health = await serve_health(worker, host="127.0.0.1", port=0)
    worker_url = f"http://127.0.0.1:{health.sockets[0].getsockname()[1]}"
    try:
        stats = await asyncio.wait_for(worker.run(burst=True), 30)
        ran = await scrape(worker_url)
    finally:
        health.close()
        await health.wait_closed()
    assert stats.succeeded == N

    server = await until(
        lambda: scrape(stack.server.url),
        lambda s: (
            total(s, "jobs_outcomes_total") == N
            and total(s, "jobs_queue_depth", status="running") == 0
        ),
    )
    acme = {"use_case": USE_CASE, "tenant": "acme"}
    assert total(server, "jobs_enqueued_total", **acme) == N
    assert total(server, "jobs_deduplicated_total", **acme) == 1
    assert total(server, "jobs_quota_refused_total", **acme) == 1
    assert total(server, "jobs_dispatched_total", **acme) == N
    assert total(server, "jobs_deadline_misses_total", **acme) == 1
    assert total(server, "jobs_dispatch_lag_seconds_count", use_case=USE_CASE) == N
    assert total(server, "jobs_dispatch_lag_seconds_sum", use_case=USE_CASE) >= 0
    assert total(server, "jobs_outcomes_total", result="succeeded") == N
    assert total(server, "jobs_outcomes_total", result="stale") == 0
    assert total(server, "jobs_lease_expiries_total") == 0
    assert total(server, "jobs_sqs_errors_total") == 0
    assert total(server, "jobs_scheduler_pass_duration_seconds_count") >= 1
    assert total(server, "jobs_http_responses_total", code="201") == N
    assert total(server, "jobs_http_responses_total", code="429") == 1
    assert total(server, "jobs_queue_depth") == 0
    assert total(server, "jobs_oldest_due_job_age_seconds", use_case=USE_CASE) == 0
    # nothing about single jobs: no job ids, and the tenant only because it was listed
    assert all("job_id" not in dict(labels) for _, labels in server)

    job = {"use_case": USE_CASE, "job_type": EMAIL}
    assert total(ran, "jobs_worker_handler_outcomes_total", outcome="succeeded", **job) == N
    assert total(ran, "jobs_worker_handler_duration_seconds_count", **job) == N
    assert total(ran, "jobs_worker_start_lag_seconds_count", use_case=USE_CASE) == N
    assert total(ran, "jobs_worker_succeeded_total") == N
    assert total(ran, "jobs_worker_running") == 0


async def test_metrics_token_and_metrics_off(make_stack: MakeStack, start_server: Any):
    guarded = await make_stack(server={"metrics_token": "scrape-me"})
    async with httpx.AsyncClient() as http:
        assert (await http.get(guarded.server.url + "/metrics")).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert (await http.get(guarded.server.url + "/metrics", headers=bad)).status_code == 401
    samples = await scrape(guarded.server.url, Authorization="Bearer scrape-me")
    assert "jobs_scheduler_leader" in names(samples)

    off = await start_server(metrics_enabled=False)
    async with httpx.AsyncClient() as http:
        assert (await http.get(off.url + "/metrics")).status_code == 404


async def test_serve_with_workers_adds_up_every_process(database_url: str, tmp_path: Path):
    """`serve --workers 2`: whichever process answers GET /metrics, it counts all enqueues."""
    port = free_port()
    env = {
        **os.environ,
        "JOBS_DATABASE_URL": database_url,
        "JOBS_USE_CASES": json.dumps(USE_CASES),
        "JOBS_TENANTS": json.dumps(TENANTS),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
    }
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs_server", "serve", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_serving(url, proc)
        headers = {"Authorization": f"Bearer {LiveServer.tenant_token('acme')}"}
        for i in range(6):  # a connection each: the processes share the socket
            async with httpx.AsyncClient(headers=headers) as http:
                body = {"use_case": USE_CASE, "job_type": EMAIL, "payload": {"to": f"{i}@x"}}
                assert (await http.post(url + "/v1/jobs", json=body)).status_code == 201
        for _ in range(4):
            assert total(await scrape(url), "jobs_enqueued_total") == 6
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    lines = (tmp_path / "serve.log").read_text().splitlines()
    started = [json.loads(line) for line in lines if '"Application startup complete."' in line]
    assert len(started) == 2, lines  # JSON lines, one per process


async def wait_until_serving(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if (await http.get(url + "/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("jobs-server serve --workers 2 did not start")
