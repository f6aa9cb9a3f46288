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
each on its own database, alternating in one run, with the ratio on/off per pair, and the CPU
per job of each server process and its database's PostgreSQL backends.
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
import asyncpg
import httpx

from _common import baseline_python, bench_database, load_average, summary
from jobs_schema import EnqueueRequest
from jobs_sdk import JobsClient
from procrastinate_e2e import own_cpu_seconds

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


Figure = Callable[[str, float], Awaitable[float]]
FIGURES: dict[str, tuple[str, Figure]] = {
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


async def backends(url: str) -> list[int]:
    """The PostgreSQL backends serving the database of `url` (but this query's own)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [r["pid"] for r in rows]
    finally:
        await conn.close()


async def cpu_per_job(
    server: subprocess.Popen[bytes], db: str, url: str, seconds: float, fn: Figure
) -> tuple[float, float]:
    """(jobs/s, ms of CPU per job of the server process and its database's backends)."""

    async def cpu() -> float:
        pids = [server.pid, *await backends(db)]
        return sum(own_cpu_seconds(pid) for pid in pids)

    before, started = await cpu(), time.perf_counter()
    rate = await fn(url, seconds)
    elapsed, used = time.perf_counter() - started, await cpu() - before
    return rate, 1000 * used / (rate * elapsed)


async def feasibility_cost(seconds: float, runs: int) -> None:
    """(a) and (b) against a server with JOBS_FEASIBILITY=off (no estimate, and its sessions
    skip the summary's triggers) beside one with it on, each on its own database, runs
    alternating, ratio per pair; with the CPU per job of each server and its backends (which
    the machine's noise moves much less than the throughput)."""
    async with bench_database("enqueue_on") as on_db, bench_database("enqueue_off") as off_db:
        on, on_url = await start_server(on_db, wakeups=True, feasibility=True)
        off, off_url = await start_server(off_db, wakeups=True, feasibility=False)
        try:
            for key in ("a", "b"):
                label, fn = FIGURES[key]
                got: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
                for run in range(runs):
                    # which goes first alternates: the tables grow under both
                    for side in (True, False) if run % 2 else (False, True):
                        proc, db, url = (on, on_db, on_url) if side else (off, off_db, off_url)
                        got[side].append(await cpu_per_job(proc, db, url, seconds, fn))
                rates = {side: [r for r, _ in v] for side, v in got.items()}
                cpus = {side: [c for _, c in v] for side, v in got.items()}
                ratios = [w / o for w, o in zip(rates[True], rates[False], strict=True)]
                cpu_ratios = [w / o for w, o in zip(cpus[True], cpus[False], strict=True)]
                print(
                    f"{label}\n    feasibility on {summary(rates[True])} jobs/s; off "
                    f"{summary(rates[False])} jobs/s;\n    ratio on/off {summary(ratios)}"
                    f"\n    CPU per job (server + its PostgreSQL backends), ms: on "
                    f"{summary(cpus[True])}; off {summary(cpus[False])};\n    CPU ratio "
                    f"on/off {summary(cpu_ratios)} ({load_average()})",
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
