"""End to end: enqueue -> PostgreSQL -> scheduler -> SQS (LocalStack) -> worker -> outcome, with
real processes, against Procrastinate on the same PostgreSQL.

    infra/localstack/start.sh            # SQS on 127.0.0.1:4566
    uv run python bench/e2e.py           # JOBS_BENCH_DATABASE_URL, JOBS_BENCH_SQS_ENDPOINT_URL

A fresh database and a fresh queue per run; `jobs-server serve`, `jobs-server scheduler` and
`jobs-worker run e2e_handlers:registry -u bench` as processes of their own. The handler
(bench/e2e_handlers.py) is a no-op whose first line reads the clock and returns the reading as
the job's result. Then:

  throughput: `--jobs` jobs enqueued with `enqueue_batch` (batches of `--batch`), clock from
              the first enqueue call to the last job's finished_at;
  latency:    `--rate` single `enqueue` calls a second for `--seconds` (an absolute schedule),
              latency = the handler's first line - the enqueue call's return (p50, p99), with
              where the time goes (enqueue commit -> claim -> handler start);
  CPU per job of each process over each phase (utime + stime from /proc: server, scheduler,
              worker, PostgreSQL's backends of this database and its WAL writer,
              checkpointer and background writer, LocalStack, this client, and the machine
              as a whole, so that other load on the machine shows);
  memory:     VmRSS of server, scheduler and worker every second: start, end, peak (VmHWM).

Procrastinate's figures come from bench/procrastinate_e2e.py, run in an ephemeral environment
(`uv run --no-project --with procrastinate==3.10.0 ...`), and are printed beside ours.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from _common import SQS_URL, bench_database, load_average
from jobs_schema import EnqueueRequest
from jobs_sdk import JobsClient
from jobs_server.publisher.base import QueueSpec
from jobs_server.publisher.sqs import SqsPublisher
from procrastinate_e2e import (
    MACHINE,
    PG_PIDS_SQL,
    POSTGRES,
    STATS_SETTLE,
    XACTS_SQL,
    CpuMeter,
    MemorySampler,
    latency_summary,
    listener_pid,
    paced,
    url_port,
)
from raw_http import RawEnqueuer

HERE = Path(__file__).resolve().parent
_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")
TOKEN = "bench-e2e-token"
WORKER_TOKEN = "bench-e2e-worker-token"
USE_CASE = "bench"
JOB_TYPE = "bench.noop"
PROCRASTINATE = "procrastinate==3.10.0"
# the performance issue's aims: throughput against Procrastinate in the same run, pickup at
# 200 jobs/s, our processes' CPU per job at full speed and at that rate, memory per process
AIM_RATIO, AIM_P50, AIM_P99, AIM_RSS = 2.0, 10.0, 30.0, 150.0
AIM_CPU, AIM_CPU_AT_RATE = 0.6, 1.5  # ms per job; times the full-speed figure
GROWTH_MB = 10.0  # RSS growth from start to end above this is flagged
OTHER_LOAD_WARN = 0.25  # cores of other load on the machine that make a run suspect


# -- processes -----------------------------------------------------------------------------------


class Processes:
    """Our processes, their logs, and stopping them (worker first, then scheduler, server)."""

    def __init__(self, log_dir: Path, *, python: str = sys.executable) -> None:
        self.log_dir = log_dir
        self.python = python  # another checkout's interpreter runs that checkout's code
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([self.python, *args], env=env, stdout=log, stderr=log)
        log.close()
        self.procs[name] = proc
        return proc

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        order = sorted(self.procs, key=lambda n: (not n.startswith("worker"), n != "scheduler"))
        for name in order:
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def warnings(self) -> list[str]:
        """Log lines at WARNING or above, text or JSON, counted by process and message (a
        healthy run has none)."""
        counts: dict[str, int] = {}
        for name in self.procs:
            for line in (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines():
                if not _PROBLEM.search(line):
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if isinstance(record, dict):
                    what = f"{record.get('level')} {record.get('logger')}: {record.get('message')}"
                else:
                    what = line.split(" ", 2)[-1][:160]  # text: drop the timestamp
                key = f"{name}: {what}"
                counts[key] = counts.get(key, 0) + 1
        return [f"{n:6,} x {key}" for key, n in sorted(counts.items(), key=lambda kv: -kv[1])]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(args: argparse.Namespace, db: str, queue: str, server: str) -> dict[str, str]:
    # a deadline far out: a backlog of --jobs must not count as missed deadlines
    use_case = {
        "queue": queue,
        "capacity": args.capacity,
        "timeout_seconds": 30,
        "default_delay_tolerance_seconds": 3600,
    }
    if args.pack_max_jobs is not None:  # else the use case's default (a baseline may not know it)
        use_case["pack_max_jobs"] = args.pack_max_jobs
    # --receive-loops > 1 (a diagnosis, not the default): more use cases on the same queue, so
    # that one worker runs that many receive loops on it
    use_cases = {USE_CASE: use_case} | {
        f"{USE_CASE}_rx{i}": use_case for i in range(2, args.receive_loops + 1)
    }
    tenants = {"acme": {"max_active_jobs": 100_000_000, "tokens": [TOKEN]}}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JOBS_", "OTEL_")) and k != "PYTHONPATH"
    }
    return env | {
        "PYTHONPATH": str(HERE),
        "JOBS_DATABASE_URL": db,
        "JOBS_USE_CASES": json.dumps(use_cases),
        "JOBS_TENANTS": json.dumps(tenants),
        "JOBS_ADMIN_TOKEN": "bench-e2e-admin",
        "JOBS_WORKER_TOKEN": WORKER_TOKEN,
        "JOBS_SQS_ENDPOINT_URL": SQS_URL,
        "JOBS_AWS_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "JOBS_DB_POOL_MAX": str(args.db_pool),
        "JOBS_CLAIM_BATCH": str(args.claim_batch),
        "JOBS_SCHEDULER_TICK_SECONDS": str(args.tick),
        "JOBS_PUBLISH_IN_FLIGHT": str(args.publish_in_flight),
        "JOBS_SERVER_URL": server,
        # metrics and JSON logs as in production, tracing off (issue 5's comparison)
        "JOBS_METRICS_ENABLED": "true" if args.observability == "on" else "false",
        "JOBS_LOG_FORMAT": "json" if args.observability == "on" else "text",
        "JOBS_OTEL_ENABLED": "false",
        "JOBS_CONCURRENCY": str(args.concurrency),
        **({"JOBS_PROCESSES": str(args.processes)} if args.processes else {}),
        "JOBS_REPORT_BATCH": str(args.report_batch),
        "JOBS_REPORT_LINGER_SECONDS": str(args.report_linger),
    }


async def wait_for_server(url: str, procs: Processes) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            procs.check()
            with contextlib.suppress(httpx.TransportError):
                await client.get(url + "/openapi.json")
                return
            await asyncio.sleep(0.05)
    raise RuntimeError("jobs-server did not start")


async def transactions(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(XACTS_SQL))


async def succeeded(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'"))


async def wait_succeeded(
    conn: asyncpg.Connection, total: int, procs: Processes, timeout: float
) -> None:
    give_up = time.monotonic() + timeout
    while (done := await succeeded(conn)) < total:
        procs.check()
        if time.monotonic() > give_up:
            counts = await conn.fetch("SELECT status, count(*) FROM jobs GROUP BY status")
            raise RuntimeError(
                f"{done} of {total} jobs succeeded after {timeout} s: "
                + ", ".join(f"{r['status']} {r['count']}" for r in counts)
                + "\n"
                + "\n".join(f"--- {n}\n{procs.tail(n)}" for n in procs.procs)
            )
        await asyncio.sleep(0.2)


# -- the phases ----------------------------------------------------------------------------------


async def throughput(
    client: JobsClient, conn: asyncpg.Connection, procs: Processes, args: argparse.Namespace
) -> dict[str, Any]:
    before = await succeeded(conn)
    batch = [EnqueueRequest(use_case=USE_CASE, job_type=JOB_TYPE, payload={"n": 1})] * args.batch
    started = time.time()
    for start in range(0, args.jobs, args.batch):
        n = min(args.batch, args.jobs - start)
        resp = await client.enqueue_batch(batch[:n])
        refused = [r.error for r in resp.results if r.job is None]
        if refused:
            raise RuntimeError(f"enqueue_batch refused {len(refused)}: {refused[0]}")
    enqueued = time.time()
    await wait_succeeded(conn, before + args.jobs, procs, timeout=600)
    last = float(
        await conn.fetchval(
            "SELECT extract(epoch FROM max(finished_at)) FROM jobs WHERE status = 'succeeded'"
        )
    )
    return {
        "jobs": args.jobs,
        "throughput": args.jobs / (last - started),
        "elapsed_seconds": last - started,
        "enqueue_seconds": enqueued - started,
    }


async def latency(
    client: JobsClient,
    conn: asyncpg.Connection,
    procs: Processes,
    args: argparse.Namespace,
    server: str,
) -> dict[str, Any]:
    before = await succeeded(conn)
    call_ms: list[float] = []
    body = {"use_case": USE_CASE, "job_type": JOB_TYPE, "payload": {"n": 1}}

    async with RawEnqueuer(server, TOKEN, body) as raw:

        async def enqueue_one() -> str:
            t = time.perf_counter()
            if args.client == "raw":
                job_id = await raw.enqueue()
            else:
                job_id = str((await client.enqueue(USE_CASE, JOB_TYPE, {"n": 1})).job.id)
            call_ms.append((time.perf_counter() - t) * 1000)
            return job_id

        returned, late_p99 = await paced(args.rate, args.seconds, enqueue_one)
    await wait_succeeded(conn, before + len(returned), procs, timeout=120)
    rows = await conn.fetch(
        """
        SELECT j.id::text AS id, (j.result->>'started')::float8 AS started,
               extract(epoch FROM j.created_at) AS created,
               extract(epoch FROM a.dispatched_at) AS dispatched,
               extract(epoch FROM j.finished_at) AS finished
        FROM jobs j JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempts
        WHERE j.id = ANY($1::uuid[])
        """,
        list(returned),
    )
    seg: dict[str, list[float]] = {
        "total": [],
        "commit_to_claim": [],
        "claim_to_start": [],
        "start_to_finished": [],
    }
    for r in rows:
        started = r["started"]
        seg["total"].append((started - returned[r["id"]]) * 1000)
        seg["commit_to_claim"].append(float(r["dispatched"] - r["created"]) * 1000)
        seg["claim_to_start"].append((started - float(r["dispatched"])) * 1000)
        seg["start_to_finished"].append((float(r["finished"]) - started) * 1000)
    return {
        "rate": args.rate,
        "seconds": args.seconds,
        "sent": len(returned),
        "measured": len(rows),
        "client_late_p99_ms": late_p99,
        "enqueue_call_ms": latency_summary(call_ms),
        "ms": latency_summary(seg["total"]),
        "segments": {k: latency_summary(v) for k, v in seg.items() if k != "total"},
    }


async def run_ours(args: argparse.Namespace, *, python: str | None = None) -> dict[str, Any]:
    """One run of both phases. `python`: another checkout's interpreter (bench/_common.py
    `baseline_python`), whose server, scheduler and worker then run, on a database migrated by
    that checkout's own migrations."""
    queue = f"bench-e2e-{uuid.uuid4().hex[:6]}"
    port = free_port()
    publisher = await SqsPublisher.connect(region="us-east-1", endpoint_url=SQS_URL)
    log_dir = Path(tempfile.mkdtemp(prefix="jobs-e2e-"))
    procs = Processes(log_dir, python=python or sys.executable)
    try:
        await publisher.ensure_queues([QueueSpec(queue, visibility_timeout_seconds=60)])
        async with bench_database("e2e", python=python) as db:
            try:
                return await _start_and_measure(args, db, queue, port, procs)
            finally:
                procs.stop()  # before the database is dropped
    finally:
        procs.stop()
        warnings = procs.warnings()
        if warnings:
            print("warnings and errors in our processes' logs (count x process: message):")
            print("\n".join(warnings[:10]))
        with contextlib.suppress(Exception):
            for q in (queue, queue + "-dlq"):
                await publisher._client.delete_queue(QueueUrl=await publisher.queue_url(q))
        await publisher.close()
        if args.keep_logs:
            print(f"logs of our processes: {log_dir}")
        else:
            for path in log_dir.iterdir():
                path.unlink()
            log_dir.rmdir()


async def _start_and_measure(
    args: argparse.Namespace, db: str, queue: str, port: int, procs: Processes
) -> dict[str, Any]:
    server = await start_ours(args, db, queue, port, procs)
    return await _measure(args, db, server, procs)


async def start_ours(
    args: argparse.Namespace, db: str, queue: str, port: int, procs: Processes
) -> str:
    """Server, scheduler and worker(s) on `db` and `queue`, up; answers the server's URL."""
    server = f"http://127.0.0.1:{port}"
    env = environment(args, db, queue, server)
    level = ["--log-level", "warning"]
    procs.start("server", ["-m", "jobs_server", "serve", "--port", str(port), *level], env)
    procs.start("scheduler", ["-m", "jobs_server", "scheduler", *level], env)
    await wait_for_server(server, procs)
    use_cases = [USE_CASE] + [f"{USE_CASE}_rx{i}" for i in range(2, args.receive_loops + 1)]
    for i in range(args.workers):
        procs.start(
            "worker" if args.workers == 1 else f"worker {i + 1}",
            [
                "-m",
                "jobs_worker",
                "run",
                "e2e_handlers:registry",
                *[a for u in use_cases for a in ("-u", u)],
                "--concurrency",
                str(args.concurrency),
                # only when asked: a revision from before isolation has no such option
                *(["--isolation", args.isolation] if args.isolation != "thread" else []),
                *level,
            ],
            env,
        )
    return server


async def _measure(
    args: argparse.Namespace, db: str, server: str, procs: Processes
) -> dict[str, Any]:
    conn = await asyncpg.connect(db)
    try:
        async with JobsClient(server, TOKEN, timeout=60) as client:
            # warm-up: every process connected, the first requests' costs paid
            warm = [EnqueueRequest(use_case=USE_CASE, job_type=JOB_TYPE, payload={"n": 1})] * 200
            await client.enqueue_batch(warm)
            await wait_succeeded(conn, 200, procs, timeout=120)

            ours = {name: proc.pid for name, proc in procs.procs.items()}
            trees = dict(ours)
            sqs_port = url_port(SQS_URL, 4566)
            sqs = listener_pid(sqs_port) if sqs_port else None
            if sqs is not None:
                trees["LocalStack (SQS)"] = sqs
            local_pg = url_port(db, 5432) is not None

            async def pg_pids() -> dict[str, list[int]]:
                if not local_pg:
                    return {}
                return {POSTGRES: [r["pid"] for r in await conn.fetch(PG_PIDS_SQL)]}

            memory = MemorySampler(ours)
            memory.start()
            memory.mark("start")

            meter = CpuMeter(trees, own={"bench client": os.getpid()})
            xacts = await transactions(conn)
            meter.start(await pg_pids())
            result = await throughput(client, conn, procs, args)
            result["cpu_seconds"] = meter.stop(await pg_pids())
            result["wall_seconds"] = meter.wall
            result["pg_backends_missed"] = meter.missed.get(POSTGRES, 0)
            memory.mark("after throughput")
            await asyncio.sleep(STATS_SETTLE)
            result["pg_transactions"] = await transactions(conn) - xacts

            meter = CpuMeter(trees, own={"bench client": os.getpid()})
            xacts = await transactions(conn)
            meter.start(await pg_pids())
            result["latency"] = await latency(client, conn, procs, args, server)
            result["latency"]["cpu_seconds"] = meter.stop(await pg_pids())
            result["latency"]["wall_seconds"] = meter.wall
            await asyncio.sleep(STATS_SETTLE)
            result["latency"]["pg_transactions"] = await transactions(conn) - xacts
            result["memory_mb"] = await memory.stop()
            result["memory_marks"] = memory.marks
            result["jobs_run"] = await succeeded(conn)
            return result
    finally:
        await conn.close()


def run_procrastinate(args: argparse.Namespace) -> dict[str, Any]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT")
    }
    cmd = [
        "uv",
        "run",
        "--no-project",
        "--with",
        PROCRASTINATE,
        "--with",
        "psycopg[binary,pool]",
        "python",
        str(HERE / "procrastinate_e2e.py"),
        "--json",
        "--jobs",
        str(args.jobs),
        "--batch",
        str(args.batch),
        "--rate",
        str(args.rate),
        "--seconds",
        str(args.seconds),
    ]
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, check=True)
    return dict(json.loads(out.stdout.decode().strip().splitlines()[-1]))


# -- printing ------------------------------------------------------------------------------------


def phase_figures(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per phase: CPU ms/job of the measured processes and of PostgreSQL alone, PostgreSQL
    transactions per job, and the rest of the machine's load in cores."""
    out = {}
    for phase, part, jobs in (
        ("throughput", result, result["jobs"]),
        ("latency", result["latency"], result["latency"]["measured"]),
    ):
        cpu = part["cpu_seconds"]
        measured = sum(v for k, v in cpu.items() if k != MACHINE)
        out[phase] = {
            "cpu": 1000 * measured / jobs,
            "pg_cpu": 1000 * cpu.get(POSTGRES, 0.0) / jobs,
            "xacts": part["pg_transactions"] / jobs,
            "other": (cpu[MACHINE] - measured) / part["wall_seconds"],
        }
    return out


OUR_PROCESSES = ("server", "scheduler", "worker")  # "worker" also names "worker 2", ...


def our_cpu(cpu: dict[str, float]) -> float:
    """CPU seconds of our own processes (server, scheduler, workers) in a phase's reading."""
    return sum(v for k, v in cpu.items() if k.startswith(OUR_PROCESSES))


def run_figures(ours: dict[str, Any], theirs: dict[str, Any] | None) -> dict[str, float]:
    """One run's headline figures, for its aims and for the summary over runs."""
    lat = ours["latency"]
    n, ln = ours["jobs"], lat["measured"]
    ph = phase_figures(ours)
    out = {
        "throughput": ours["throughput"],
        "p50": lat["ms"]["p50"],
        "p99": lat["ms"]["p99"],
        "ours_cpu": 1000 * our_cpu(ours["cpu_seconds"]) / n,
        "ours_cpu_latency": 1000 * our_cpu(lat["cpu_seconds"]) / ln,
        "all_cpu": ph["throughput"]["cpu"],
        "all_cpu_latency": ph["latency"]["cpu"],
        "pg_cpu": ph["throughput"]["pg_cpu"],
        "pg_cpu_latency": ph["latency"]["pg_cpu"],
        "xacts": ph["throughput"]["xacts"],
        "xacts_latency": ph["latency"]["xacts"],
        "busy_throughput": ours["cpu_seconds"][MACHINE] / ours["wall_seconds"],
        "busy_latency": lat["cpu_seconds"][MACHINE] / lat["wall_seconds"],
        "rss_peak": max(m["peak"] for m in ours["memory_mb"].values()),
    }
    out["cpu_at_rate_ratio"] = out["ours_cpu_latency"] / out["ours_cpu"]
    if theirs:
        out["theirs"] = theirs["throughput"]
        out["ratio"] = ours["throughput"] / theirs["throughput"]
        out["theirs_p50"] = theirs["latency"]["ms"]["p50"]
        out["theirs_p99"] = theirs["latency"]["ms"]["p99"]
    return out


SUMMARY = (
    ("throughput", "throughput, jobs/s", ",.0f"),
    ("theirs", "Procrastinate's throughput, jobs/s", ",.0f"),
    ("ratio", "ours / Procrastinate's, same run", ".2f"),
    ("p50", "enqueue -> handler start p50, ms", ".1f"),
    ("p99", "enqueue -> handler start p99, ms", ".1f"),
    ("theirs_p50", "Procrastinate's p50, ms", ".1f"),
    ("theirs_p99", "Procrastinate's p99, ms", ".1f"),
    ("busy_latency", "machine busy in the latency phase, cores", ".2f"),
    ("busy_throughput", "machine busy in the throughput phase, cores", ".2f"),
    ("ours_cpu", "our CPU/job at full speed, ms", ".3f"),
    ("ours_cpu_latency", "our CPU/job in the latency phase, ms", ".3f"),
    ("cpu_at_rate_ratio", "  latency phase / full speed", ".1f"),
    ("all_cpu", "all measured processes' CPU/job at full speed, ms", ".3f"),
    ("all_cpu_latency", "all measured processes' CPU/job in the latency phase, ms", ".3f"),
    ("pg_cpu", "PostgreSQL CPU/job at full speed, ms", ".3f"),
    ("pg_cpu_latency", "PostgreSQL CPU/job in the latency phase, ms", ".3f"),
    ("xacts", "PostgreSQL transactions/job at full speed", ".2f"),
    ("xacts_latency", "PostgreSQL transactions/job in the latency phase", ".2f"),
    ("rss_peak", "peak RSS of our largest process, MB", ".0f"),
)


def print_summary(args: argparse.Namespace, runs: list[dict[str, float]], loads: list[str]) -> None:
    print()
    print(
        f"== summary of {len(runs)} runs: median (min-max); {args.jobs:,} jobs at full speed, "
        f"{args.rate:g} jobs/s for {args.seconds:g} s =="
    )
    for key, label, fmt in SUMMARY:
        values = [r[key] for r in runs if key in r]
        if not values:
            continue
        med = statistics.median(values)
        print(
            f"  {label:<58}{format(med, fmt):>9} ({format(min(values), fmt)}-"
            f"{format(max(values), fmt)})"
        )
    for i, load in enumerate(loads, 1):
        print(f"  run {i}: {load}")


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(args: argparse.Namespace, ours: dict[str, Any], theirs: dict[str, Any] | None) -> None:
    lat = ours["latency"]
    ms = lat["ms"]
    print()
    print(
        f"== end to end, {ours['jobs']:,} no-op jobs: enqueue_batch of {args.batch} -> "
        f"PostgreSQL -> scheduler -> LocalStack SQS -> {args.workers} worker process(es) =="
    )
    print(
        f"settings: worker --concurrency {args.concurrency} --isolation {args.isolation}"
        + (f" (JOBS_PROCESSES {args.processes})" if args.processes else "")
        + f", JOBS_CLAIM_BATCH {args.claim_batch}, "
        f"JOBS_SCHEDULER_TICK_SECONDS {args.tick}, capacity {args.capacity}, "
        f"pack_max_jobs {args.pack_max_jobs or 'default'}, "
        f"JOBS_REPORT_BATCH {args.report_batch}, JOBS_REPORT_LINGER_SECONDS {args.report_linger}, "
        f"JOBS_PUBLISH_IN_FLIGHT {args.publish_in_flight}, JOBS_DB_POOL_MAX {args.db_pool}"
        + (f", receive loops {args.receive_loops}" if args.receive_loops > 1 else "")
    )
    print(
        f"throughput: {ours['jobs']:,} jobs in {ours['elapsed_seconds']:.2f} s = "
        f"{ours['throughput']:,.0f} jobs/s (the enqueues took {ours['enqueue_seconds']:.2f} s)"
    )
    print(
        f"latency at {lat['rate']:g} jobs/s for {lat['seconds']:g} s ({lat['measured']} jobs; "
        f"client started calls late by <= {lat['client_late_p99_ms']:.1f} ms at p99): "
        f"enqueue return -> handler start p50 {ms['p50']:.1f} ms, p90 {ms['p90']:.1f} ms, "
        f"p99 {ms['p99']:.1f} ms, max {ms['max']:.1f} ms; machine busy "
        f"{lat['cpu_seconds'][MACHINE] / lat['wall_seconds']:.2f} of {os.cpu_count()} cores"
    )
    call = lat["enqueue_call_ms"]
    print(f"  the enqueue call itself: p50 {call['p50']:.1f} ms, p99 {call['p99']:.1f} ms")
    names = {
        "commit_to_claim": "enqueue commit -> claimed (scheduler)",
        "claim_to_start": "claimed -> handler start (SQS, worker)",
        "start_to_finished": "handler start -> outcome stored",
    }
    for key, label in names.items():
        s = lat["segments"][key]
        print(f"  {label:<42} p50 {s['p50']:6.1f} ms, p99 {s['p99']:6.1f} ms")

    n = ours["jobs"]
    cpu = ours["cpu_seconds"]
    lat_cpu = lat["cpu_seconds"]
    print()
    print(
        f"CPU per job (utime + stime), throughput phase ({n:,} jobs) and latency phase "
        f"({lat['measured']:,} jobs at {lat['rate']:g}/s):"
    )
    print(f"  {'process':<26}{'throughput':>12}{'latency':>12}")
    measured = 0.0
    lat_measured = 0.0
    first = ["server", "scheduler"]
    last = [POSTGRES, "LocalStack (SQS)", "bench client"]
    order = [k for k in first if k in cpu]
    order += [k for k in cpu if k not in first + last + [MACHINE]]
    order += [k for k in last if k in cpu]
    for name in order:
        measured += cpu[name]
        lat_measured += lat_cpu[name]
        print(
            f"  {name:<26}{1000 * cpu[name] / n:>9.3f} ms"
            f"{1000 * lat_cpu[name] / lat['measured']:>9.3f} ms"
        )
    print(
        f"  {'sum of the above':<26}{1000 * measured / n:>9.3f} ms"
        f"{1000 * lat_measured / lat['measured']:>9.3f} ms"
    )
    print(
        f"  {'other processes':<26}{1000 * (cpu[MACHINE] - measured) / n:>9.3f} ms"
        f"{1000 * (lat_cpu[MACHINE] - lat_measured) / lat['measured']:>9.3f} ms"
        "   (machine total minus the above: other load on this machine)"
    )
    print(
        f"  {'PostgreSQL transactions/job':<26}{ours['pg_transactions'] / n:>12.2f}"
        f"{lat['pg_transactions'] / lat['measured']:>12.2f}   (pg_stat_database, approximate)"
    )
    if ours.get("pg_backends_missed"):
        missed = ours["pg_backends_missed"]
        print(f"  ({missed} PostgreSQL backends exited during the phase: their CPU is missed)")
    cores = os.cpu_count()
    for label, c, used, wall in (
        ("throughput", cpu, measured, ours["wall_seconds"]),
        ("latency", lat_cpu, lat_measured, lat["wall_seconds"]),
    ):
        print(
            f"  {label} phase: machine busy {c[MACHINE] / wall:.2f} of {cores} cores, "
            f"ours {used / wall:.2f}, other load {(c[MACHINE] - used) / wall:.2f}"
        )

    print()
    print("memory (VmRSS, MB) of our processes: start of measurement, after throughput, end, peak")
    rss_ok = True
    flat_ok = True
    marks = ours["memory_marks"]
    for name, m in ours["memory_mb"].items():
        growth = m["end"] - m["start"]
        flat = growth <= GROWTH_MB
        rss_ok &= m["peak"] < AIM_RSS
        flat_ok &= flat
        mid = marks.get("after throughput", {}).get(name, float("nan"))
        print(
            f"  {name:<10} start {m['start']:6.1f}  after throughput {mid:6.1f}  "
            f"end {m['end']:6.1f}  peak {m['peak']:6.1f}   growth {growth:+.1f} MB"
            + ("" if flat else "   GROWS")
        )
    print(f"  jobs run by the worker(s) in all: {ours['jobs_run']:,}")

    print()
    print("== ours vs Procrastinate " + (theirs["version"] if theirs else "(skipped)") + " ==")
    if theirs:
        print(f"procrastinate: {theirs['setting']}")
    t_lat = theirs["latency"]["ms"] if theirs else None
    ratio = ours["throughput"] / theirs["throughput"] if theirs else None
    rows: list[tuple[str, float, float | None, str]] = [
        ("throughput, jobs/s", ours["throughput"], theirs and theirs["throughput"], ",.0f"),
    ]
    for q in ("p50", "p99"):
        label = f"latency {q} at {args.rate:g}/s, ms"
        rows.append((label, ms[q], t_lat and t_lat[q], ".1f"))
    ph = {"ours": phase_figures(ours), "theirs": phase_figures(theirs) if theirs else None}
    for key, label in (
        ("cpu", "CPU ms/job, measured processes"),
        ("pg_cpu", "  of which PostgreSQL"),
        ("xacts", "PostgreSQL transactions/job"),
        ("other", "other load on the machine, cores"),
    ):
        for phase in ("throughput", "latency"):
            theirs_value = ph["theirs"][phase][key] if ph["theirs"] else None
            rows.append((f"{label} ({phase})", ph["ours"][phase][key], theirs_value, ".3f"))
    print(f"  {'':<50}{'ours':>10}{'procrastinate':>15}{'ours/theirs':>12}")
    for label, mine, other, fmt in rows:
        line = f"  {label:<50}{format(mine, fmt):>10}"
        if other is not None:
            line += f"{format(other, fmt):>15}"
            if other:
                line += f"{mine / other:>11.2f}x"
        print(line)
    if theirs:
        tcpu, tn = theirs["cpu_seconds"], theirs["jobs"]
        per = ", ".join(
            f"{name} {1000 * v / tn:.3f}" for name, v in tcpu.items() if name != MACHINE
        )
        print(f"  procrastinate CPU ms/job by process (throughput phase): {per}")
        for name, m in theirs["memory_mb"].items():
            print(
                f"  procrastinate {name} RSS: start {m['start']:.0f} MB, end {m['end']:.0f} MB, "
                f"peak {m['peak']:.0f} MB"
            )

    print()
    print("aims:")
    if theirs:
        print(
            f"  throughput >= {AIM_RATIO:g}x Procrastinate's:      {ratio:.2f}x   "
            f"{_verdict(ratio is not None and ratio >= AIM_RATIO)}"
        )
    else:
        print(f"  throughput >= {AIM_RATIO:g}x Procrastinate's:      not measured")
    fig = run_figures(ours, theirs)
    print(
        f"  p50 <= {AIM_P50:g} ms at {args.rate:g}/s:              {ms['p50']:.1f} ms   "
        f"{_verdict(ms['p50'] <= AIM_P50)}   (machine busy {fig['busy_latency']:.2f} cores)"
    )
    print(
        f"  p99 <= {AIM_P99:g} ms at {args.rate:g}/s:              {ms['p99']:.1f} ms   "
        f"{_verdict(ms['p99'] <= AIM_P99)}"
    )
    print(
        f"  our CPU/job at full speed <= {AIM_CPU:g} ms:   {fig['ours_cpu']:.3f} ms   "
        f"{_verdict(fig['ours_cpu'] <= AIM_CPU)}   (server, scheduler, worker)"
    )
    print(
        f"  our CPU/job at {args.rate:g}/s <= {AIM_CPU_AT_RATE:g}x full speed: "
        f"{fig['ours_cpu_latency']:.3f} ms = {fig['cpu_at_rate_ratio']:.1f}x   "
        f"{_verdict(fig['cpu_at_rate_ratio'] <= AIM_CPU_AT_RATE)}"
    )
    print(f"  peak RSS < {AIM_RSS:g} MB per process:         {_verdict(rss_ok)}")
    print(f"  RSS flat (growth <= {GROWTH_MB:g} MB start to end): {_verdict(flat_ok)}")
    loads = [f["other"] for r in (ours, theirs) if r for f in phase_figures(r).values()]
    if max(loads) > OTHER_LOAD_WARN:
        print(
            f"NOTE: other processes kept up to {max(loads):.2f} cores of this machine busy during "
            "a phase: the figures above are perturbed by that load"
        )


def build_parser(description: str | None = __doc__) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="throughput phase")
    parser.add_argument("--batch", type=int, default=500, help="enqueue_batch size")
    parser.add_argument("--rate", type=float, default=200.0, help="latency phase, jobs/s")
    parser.add_argument("--seconds", type=float, default=15.0, help="latency phase length")
    parser.add_argument("--skip-procrastinate", action="store_true")
    parser.add_argument(
        "--runs", type=int, default=1, help="runs of both systems; a summary of medians follows"
    )
    parser.add_argument(
        "--client",
        choices=("raw", "sdk"),
        default="raw",
        help="latency phase's enqueue client: raw, the SDK's request as bytes on kept-alive "
        "connections (bench/raw_http.py, tens of microseconds a call); sdk, JobsClient.enqueue "
        "(about a millisecond a call: the client then loads the machine it measures)",
    )
    g = parser.add_argument_group("settings of our processes")
    g.add_argument("--concurrency", type=int, default=100, help="worker --concurrency")
    g.add_argument("--workers", type=int, default=1, help="worker processes")
    g.add_argument(
        "--isolation",
        choices=["thread", "process"],
        default="thread",
        help="worker --isolation: handlers in the worker (thread) or in child processes; the "
        "worker's CPU and memory figures do not include its children",
    )
    g.add_argument(
        "--processes", type=int, default=None, help="JOBS_PROCESSES under --isolation process"
    )
    g.add_argument("--claim-batch", type=int, default=500, help="JOBS_CLAIM_BATCH")
    g.add_argument("--tick", type=float, default=1.0, help="JOBS_SCHEDULER_TICK_SECONDS")
    g.add_argument("--capacity", type=int, default=1000, help="the use case's capacity")
    g.add_argument(
        "--pack-max-jobs",
        type=int,
        default=None,
        help="the use case's pack_max_jobs (1-100; default: the use case's default, 10)",
    )
    g.add_argument("--report-batch", type=int, default=100, help="JOBS_REPORT_BATCH")
    g.add_argument("--report-linger", type=float, default=0.02, help="JOBS_REPORT_LINGER_SECONDS")
    g.add_argument("--publish-in-flight", type=int, default=8, help="JOBS_PUBLISH_IN_FLIGHT")
    g.add_argument("--db-pool", type=int, default=20, help="JOBS_DB_POOL_MAX of the server")
    g.add_argument(
        "--receive-loops",
        type=int,
        default=1,
        help="diagnosis: N use cases on the one queue, so the worker runs N receive loops",
    )
    g.add_argument("--keep-logs", action="store_true", help="keep our processes' logs")
    g.add_argument(
        "--observability",
        choices=("on", "off"),
        default="on",
        help="on: metrics and JSON logs (tracing off); off: neither",
    )
    return parser


async def main() -> None:
    args = build_parser().parse_args()
    runs: list[dict[str, float]] = []
    loads: list[str] = []
    for run in range(args.runs):
        if args.runs > 1:
            print(f"\n######## run {run + 1} of {args.runs} ########")
        before = load_average()
        ours = await run_ours(args)
        theirs = None if args.skip_procrastinate else run_procrastinate(args)
        report(args, ours, theirs)
        runs.append(run_figures(ours, theirs))
        loads.append(f"{before} at its start, {load_average()} at its end")
    if args.runs > 1:
        print_summary(args, runs, loads)


if __name__ == "__main__":
    asyncio.run(main())
