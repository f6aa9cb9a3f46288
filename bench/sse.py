"""The event streams: fan-out to 1,000 listeners, the server's memory with them, and the latency
of `wait()` from a job's end to its return.

    uv run python bench/sse.py                 # about a minute
    uv run python bench/sse.py --listeners 1000 --jobs 200 --waits 50 --runs 3

A `jobs-server serve` process (one API process, no scheduler) over a fresh database of
JOBS_BENCH_DATABASE_URL; the listeners are `GET /v1/events` streams of one tenant, opened by
one httpx client in this process. Each run:
- opens the listeners and reads the server's RSS (/proc) idle and with them;
- enqueues `--jobs` jobs in batches of 50 and cancels them (two events each, all tenants' jobs
  the listeners see) and counts events delivered (jobs x 2 x listeners) over the time from the
  first enqueue to the last event read: events per second fanned out;
- times `--waits` waits (`JobsClient.wait`, following the job's stream) from the answer of
  the cancel that ends the job to wait()'s return (cancel is the end a producer can cause
  without a worker; a success reaches the stream the same way).
The median of the runs is printed with min and max, and the load average with each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import bench_database, load_average, summary

from jobs_sdk import JobsClient

TOKEN = "tok-bench"
USE_CASES = {"bench": {"queue": "bench", "capacity": 10}}
TENANTS = {"bench": {"tokens": [TOKEN], "max_active_jobs": 1_000_000}}
JOB = {"use_case": "bench", "job_type": "bench.t", "payload": {}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _serve(url: str, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")} | {
        "JOBS_DATABASE_URL": url,
        "JOBS_USE_CASES": json.dumps(USE_CASES),
        "JOBS_TENANTS": json.dumps(TENANTS),
        "JOBS_METRICS_ENABLED": "false",
        "JOBS_EVENTS_QUEUE_SIZE": "4096",
        "JOBS_FEASIBILITY": "off",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
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
    for _ in range(300):
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        await asyncio.sleep(0.1)
    raise RuntimeError("jobs-server did not start")


async def _count(response: httpx.Response, want: int, done: list[float]) -> None:
    n = 0
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            n += 1
            if n == want:
                done.append(time.perf_counter())
                return


async def _fan_out(base: str, pid: int, listeners: int, jobs: int) -> tuple[float, float, float]:
    """(events per second, RSS idle MiB, RSS with the listeners MiB)."""
    idle = _rss_mib(pid)
    limits = httpx.Limits(max_connections=listeners + 20, max_keepalive_connections=20)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    timeout = httpx.Timeout(60, read=None)
    async with (
        httpx.AsyncClient(base_url=base, limits=limits, headers=headers, timeout=timeout) as http,
        contextlib.AsyncExitStack() as stack,
    ):
        streams: list[httpx.Response] = []
        for start in range(0, listeners, 100):
            streams += await asyncio.gather(
                *(
                    stack.enter_async_context(http.stream("GET", "/v1/events"))
                    for _ in range(min(100, listeners - start))
                )
            )
        with_listeners = _rss_mib(pid)
        done: list[float] = []
        readers = [asyncio.create_task(_count(r, 2 * jobs, done)) for r in streams]
        started = time.perf_counter()
        for start in range(0, jobs, 50):
            batch = [JOB] * min(50, jobs - start)
            r = await http.post("/v1/jobs/batch", json={"jobs": batch})
            ids = [item["job"]["id"] for item in r.json()["results"]]
            await asyncio.gather(*(http.post(f"/v1/jobs/{i}/cancel") for i in ids))
        await asyncio.wait_for(asyncio.gather(*readers), 300)
        elapsed = max(done) - started
    return 2 * jobs * listeners / elapsed, idle, with_listeners


async def _waits(base: str, n: int) -> list[float]:
    out = []
    async with JobsClient(base, TOKEN) as client, httpx.AsyncClient(base_url=base) as http:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for _ in range(n):
            job = (await client.enqueue("bench", "bench.t", {})).job
            waiting = asyncio.create_task(client.wait(job.id, timeout=30))
            await asyncio.sleep(0.05)  # the stream is open (not part of the figure)
            await http.post(f"/v1/jobs/{job.id}/cancel", headers=headers)
            ended = time.perf_counter()
            await waiting
            out.append((time.perf_counter() - ended) * 1000)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listeners", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--waits", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rates, idles, rsss, p50s, p99s = [], [], [], [], []
    for run in range(args.runs):
        async with bench_database("sse") as url:
            port = _free_port()
            proc = await _serve(url, port)
            base = f"http://127.0.0.1:{port}"
            try:
                rate, idle, rss = await _fan_out(base, proc.pid, args.listeners, args.jobs)
                waits = await _waits(base, args.waits)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
        rates.append(rate)
        idles.append(idle)
        rsss.append(rss)
        p50s.append(statistics.median(waits))
        p99s.append(_pct(waits, 0.99))
        print(
            f"run {run + 1}: {rate:,.0f} events/s to {args.listeners} listeners; RSS {idle:.0f} "
            f"MiB idle, {rss:.0f} MiB with them; wait() p50 {p50s[-1]:.1f} ms, p99 "
            f"{p99s[-1]:.1f} ms ({load_average()})"
        )
    print(f"fan-out events/s to {args.listeners} listeners: {summary(rates)} ({load_average()})")
    print(f"server RSS idle, MiB: {summary(idles)}; with the listeners: {summary(rsss)}")
    print(f"wait() end-to-return p50 ms: {summary(p50s)}; p99 ms: {summary(p99s)}")


if __name__ == "__main__":
    asyncio.run(main())
