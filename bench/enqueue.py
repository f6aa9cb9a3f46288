"""Enqueue throughput against a live `jobs-server serve` on this machine.

    uv run python bench/enqueue.py            # JOBS_BENCH_DATABASE_URL, default local PostgreSQL

Prints jobs/s (median of 3 runs, with min and max) for:
  (a) POST /v1/jobs driven by aiohttp at concurrency 32 (no SDK),
  (b) the SDK's single `enqueue` from 32 concurrent tasks in one process (coalesced),
  (c) the SDK's `enqueue_batch` with batches of 500,
and (a) and (b) again with scheduler wake-ups (NOTIFY) off, to show what they cost.

    uv run python bench/enqueue.py --baseline REV   # this checkout against REV, in one run

With `--baseline`, a server of REV (a git worktree under ~/.cache/jobs-bench, synced from its
own lock, on a database migrated by its own migrations) runs beside ours, the runs alternate
(REV, ours, REV, ours, ...) and each figure is printed with its ratio ours / REV per pair of
runs: the machine's speed drifts, a ratio taken in the same run does not.

    uv run python bench/enqueue.py --feasibility    # the cost of the deadline estimate

(a) and (b) against a server with JOBS_FEASIBILITY=on (the default) and one with it off,
alternating in one run, with the ratio on/off per pair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx

from _common import baseline_python, bench_database, load_average, summary
from jobs_schema import EnqueueRequest
from jobs_sdk import JobsClient

TOKEN = "bench-token"
USE_CASES = {"bench": {"queue": "bench", "capacity": 100}}
TENANTS = {"acme": {"max_active_jobs": 100_000_000, "tokens": [TOKEN]}}
JOB = {"use_case": "bench", "job_type": "bench.noop", "payload": {"to": "a@example.com", "n": 1}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_server(
    database_url: str, *, wakeups: bool, python: str = sys.executable, feasibility: bool = True
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = os.environ | {
        "JOBS_FEASIBILITY": "on" if feasibility else "off",
        "JOBS_DATABASE_URL": database_url,
        "JOBS_USE_CASES": json.dumps(USE_CASES),
        "JOBS_TENANTS": json.dumps(TENANTS),
        "JOBS_ADMIN_TOKEN": "bench-admin",
        "JOBS_ENQUEUE_WAKEUPS": str(wakeups).lower(),
        "JOBS_DB_POOL_MAX": "20",
    }
    proc = subprocess.Popen(
        [
            python,
            "-m",
            "jobs_server",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                await client.get(url + "/openapi.json")
                return proc, url
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    proc.kill()
    raise RuntimeError("jobs-server did not start")


async def run_for(seconds: float, workers: int, step: Callable[[], Awaitable[int]]) -> float:
    """Run `step` in `workers` concurrent loops for `seconds`; jobs per second."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            n = await step()  # not `done += await ...`: that reads `done` before awaiting
            done += n

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(workers)))
    return done / (time.perf_counter() - started)


async def http_single(url: str, seconds: float) -> float:
    body = json.dumps(JOB).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    conn = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(url, connector=conn, headers=headers) as session:

        async def step() -> int:
            async with session.post("/v1/jobs", data=body) as resp:
                await resp.read()
                assert resp.status == 201, resp.status
                return 1

        return await run_for(seconds, 32, step)


async def sdk_single(url: str, seconds: float) -> float:
    async with JobsClient(url, TOKEN) as client:

        async def step() -> int:
            await client.enqueue(JOB["use_case"], JOB["job_type"], JOB["payload"])
            return 1

        return await run_for(seconds, 32, step)


async def sdk_batch(url: str, seconds: float, size: int = 500, workers: int = 4) -> float:
    batch = [EnqueueRequest.model_validate(JOB)] * size
    async with JobsClient(url, TOKEN, timeout=60) as client:

        async def step() -> int:
            resp = await client.enqueue_batch(batch)
            return sum(r.job is not None for r in resp.results)

        return await run_for(seconds, workers, step)


async def measure(name: str, fn: Callable[[], Awaitable[float]], runs: int) -> list[float]:
    rates = [await fn() for _ in range(runs)]
    print(f"{name:<58} {summary(rates)} jobs/s ({load_average()})", flush=True)
    return rates


FIGURES: dict[str, tuple[str, Callable[[str, float], Awaitable[float]]]] = {
    "a": ("(a) POST /v1/jobs, aiohttp, concurrency 32", http_single),
    "b": ("(b) SDK enqueue, 32 tasks, coalesced", sdk_single),
    "c": ("(c) SDK enqueue_batch, batches of 500", sdk_batch),
}


async def against_baseline(rev: str, seconds: float, runs: int) -> None:
    base_python = baseline_python(rev)
    async with (
        bench_database("enqueue_base", python=base_python) as base_db,
        bench_database("enqueue") as db,
    ):
        base, base_url = await start_server(base_db, wakeups=True, python=base_python)
        ours, url = await start_server(db, wakeups=True)
        try:
            for label, fn in FIGURES.values():
                theirs: list[float] = []
                mine: list[float] = []
                for _ in range(runs):
                    theirs.append(await fn(base_url, seconds))
                    mine.append(await fn(url, seconds))
                ratios = [m / t for m, t in zip(mine, theirs, strict=True)]
                print(
                    f"{label}\n    ours {summary(mine)} jobs/s; {rev} {summary(theirs)} jobs/s;"
                    f"\n    ratio ours/{rev} {summary(ratios)} ({load_average()})",
                    flush=True,
                )
        finally:
            for proc in (base, ours):
                proc.terminate()
                proc.wait(timeout=10)


async def feasibility_cost(seconds: float, runs: int) -> None:
    """(a) and (b) against a server with JOBS_FEASIBILITY=off (no estimate, and its sessions
    skip the summary's triggers) beside one with it on, runs alternating, ratio per pair."""
    async with bench_database("enqueue_feas") as db:
        on, on_url = await start_server(db, wakeups=True, feasibility=True)
        off, off_url = await start_server(db, wakeups=True, feasibility=False)
        try:
            for key in ("a", "b"):
                label, fn = FIGURES[key]
                with_it: list[float] = []
                without: list[float] = []
                for run in range(runs):
                    # which goes first alternates: the table grows under both
                    if run % 2:
                        with_it.append(await fn(on_url, seconds))
                        without.append(await fn(off_url, seconds))
                    else:
                        without.append(await fn(off_url, seconds))
                        with_it.append(await fn(on_url, seconds))
                ratios = [w / o for w, o in zip(with_it, without, strict=True)]
                print(
                    f"{label}\n    feasibility on {summary(with_it)} jobs/s; off "
                    f"{summary(without)} jobs/s;\n    ratio on/off {summary(ratios)} "
                    f"({load_average()})",
                    flush=True,
                )
        finally:
            for proc in (on, off):
                proc.terminate()
                proc.wait(timeout=10)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", metavar="REV", help="also run REV's server; print ratios")
    parser.add_argument(
        "--feasibility",
        action="store_true",
        help="(a) and (b) with JOBS_FEASIBILITY=on against off, in one run; print ratios",
    )
    args = parser.parse_args()
    s, runs = args.seconds, args.runs
    if args.feasibility:
        await feasibility_cost(s, runs)
        return
    if args.baseline:
        await against_baseline(args.baseline, s, runs)
        return
    medians: dict[str, float] = {}
    async with bench_database("enqueue") as db:
        for wakeups in (True, False):
            proc, url = await start_server(db, wakeups=wakeups)
            tag = "" if wakeups else ", wake-ups off"
            try:
                for key, (label, fn) in FIGURES.items():
                    if key == "c" and not wakeups:
                        continue
                    rates = await measure(label + tag, lambda fn=fn, url=url: fn(url, s), runs)
                    medians[key + tag] = sorted(rates)[len(rates) // 2]
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    for key in ("a", "b"):
        on, off = medians[key], medians[key + ", wake-ups off"]
        print(f"wake-ups cost on ({key}): {100 * (off - on) / off:+.1f}% of throughput (aim < 10%)")


if __name__ == "__main__":
    asyncio.run(main())
