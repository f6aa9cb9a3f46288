"""Chaos soak: the whole stack as processes, faults on a timeline, then invariants by SQL.

    uv run python bench/chaos.py                   # about 2 minutes of load, then the drain
    uv run python bench/chaos.py --duration 900 --rate 40 --seed 7

It starts its own PostgreSQL cluster (initdb + pg_ctl, on a free loopback port, in a temporary
directory: it restarts it) and its own moto SQS server (it pauses it and restarts it empty),
then `jobs-server serve`, two `jobs-server scheduler`s and two `jobs-worker run`s running
bench/chaos_handlers.py, each restarted by the soak when it exits, as a supervisor would.
A producer enqueues through the SDK (defaults: coalescing, retries bounded by time) at
`--rate` jobs a second. On a timeline across the run it injects:

  SIGKILL of a worker, of the leader scheduler, of the API; pg_terminate_backend of every
  backend; a PostgreSQL restart (down `--pg-down` s); the SQS endpoint paused (SIGSTOP) and,
  later, restarted empty (the soak recreates the queue); a handler that blocks its event loop
  (time.sleep); a handler that ends its worker process (os._exit).

Then it stops producing, waits for every job to finish, and checks by SQL: every id returned
to the producer is stored once; nothing is left pending or running; attempts are contiguous;
at most one success per job, each matched by a run in the handlers' side table; the tenant
quota counter equals a COUNT; the queues are empty. It prints per fault the time until the
next job completed and until throughput was back to half its level before, the throughput
around it, the duplicate handler runs by cause, and the invariants; it exits 1 when one fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import pwd
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from chaos_handlers import SIDE_TABLE
from jobs_sdk import JobsClient, JobsError
from jobs_server.publisher.base import QueueSpec
from jobs_server.publisher.sqs import SqsPublisher
from jobs_server.store.migrations import migrate

HERE = Path(__file__).resolve().parent
TOKEN = "chaos-token"
WORKER_TOKEN = "chaos-worker-token"
TENANT = "acme"
USE_CASE = "chaos"
QUEUE = "chaos"
USE_CASE_CONFIG: dict[str, Any] = {
    "queue": QUEUE,
    "capacity": 40,
    "default_delay_tolerance_seconds": 600,
    # room for faults to stack on one job (a PostgreSQL restart, killed connections, a worker
    # crash, a blocked loop each can cost an attempt) without ending it
    "max_attempts": 10,
    "timeout_seconds": 5,
    "lease_seconds": 8,
    "backoff": {"kind": "constant", "base_seconds": 0.5, "cap_seconds": 0.5, "jitter": 0},
}
LEADER_TTL = 3.0
WINDOW = 10.0  # seconds of throughput compared before and after a fault

for _name, _value in (
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
):
    os.environ.setdefault(_name, _value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


# -- the services the soak owns ------------------------------------------------------------------


class Cluster:
    """A PostgreSQL cluster of the soak's own (run as the postgres user when we are root)."""

    def __init__(self, root: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
        if not found:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(found[-1])
        self.data = root / "pg"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=self._user)

    def init(self) -> None:
        self.data.mkdir()
        if self._user is not None:
            pw = pwd.getpwnam(self._user)
            os.chown(self.data.parent, pw.pw_uid, pw.pw_gid)
            os.chown(self.data, pw.pw_uid, pw.pw_gid)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=off "
            "-c synchronous_commit=off -c max_connections=200 -c full_page_writes=off"
        )
        log = str(self.data / "server.log")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log,
                  "-w", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")


class Moto:
    """A moto SQS server of the soak's own, on a fixed loopback port across restarts."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await wait_for_port(self.port)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def ensure_queue(moto: Moto) -> None:
    publisher = await SqsPublisher.connect(region="us-east-1", endpoint_url=moto.url)
    try:
        await publisher.ensure_queues([QueueSpec(QUEUE, visibility_timeout_seconds=12)])
    finally:
        await publisher.close()


async def queue_counts(moto: Moto) -> dict[str, int]:
    publisher = await SqsPublisher.connect(region="us-east-1", endpoint_url=moto.url)
    counts: dict[str, int] = {}
    try:
        for name in (QUEUE, QUEUE + "-dlq"):
            url = await publisher.queue_url(name)
            attrs = await publisher._client.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
            counts[name] = sum(int(v) for v in attrs["Attributes"].values())
    finally:
        await publisher.close()
    return counts


@dataclass
class Supervisor:
    """Our processes by name; any that exits is started again after a second."""

    log_dir: Path
    env: dict[str, str]
    commands: dict[str, list[str]] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    watching: bool = True

    def start(self, name: str, args: list[str]) -> None:
        self.commands[name] = args
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(
            [sys.executable, *args], env=self.env, stdout=log, stderr=log
        )
        log.close()

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)

    def pid_of(self, pid: int) -> str | None:
        return next((n for n, p in self.procs.items() if p.pid == pid), None)

    async def watch(self) -> None:
        while self.watching:
            for name, proc in list(self.procs.items()):
                if proc.poll() is not None and self.watching:
                    await asyncio.sleep(1.0)
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    self.start(name, self.commands[name])
            await asyncio.sleep(0.2)

    def count_in_logs(self, text: str) -> dict[str, int]:
        """How many lines of each process's log hold `text` (restarts append to the log)."""
        counts = {}
        for name in self.procs:
            log = (self.log_dir / f"{name}.log").read_text(errors="replace")
            counts[name] = sum(text in line for line in log.splitlines())
        return {n: c for n, c in counts.items() if c}

    def stop(self) -> None:
        self.watching = False
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def environment(db: str, sqs: str, server: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JOBS_", "OTEL_")) and k != "PYTHONPATH"
    }
    return env | {
        "PYTHONPATH": str(HERE),
        "CHAOS_DATABASE_URL": db,
        "JOBS_DATABASE_URL": db,
        "JOBS_USE_CASES": json.dumps({USE_CASE: USE_CASE_CONFIG}),
        "JOBS_TENANTS": json.dumps({TENANT: {"max_active_jobs": 1_000_000, "tokens": [TOKEN]}}),
        "JOBS_ADMIN_TOKEN": "chaos-admin-token",
        "JOBS_WORKER_TOKEN": WORKER_TOKEN,
        "JOBS_SQS_ENDPOINT_URL": sqs,
        "JOBS_AWS_REGION": "us-east-1",
        "JOBS_SERVER_URL": server,
        "JOBS_LEADER_TTL_SECONDS": str(LEADER_TTL),
        "JOBS_SCHEDULER_TICK_SECONDS": "0.5",
        "JOBS_POLL_SECONDS": "1",
        "JOBS_LOG_FORMAT": "text",
        "JOBS_METRICS_ENABLED": "false",
        "JOBS_OTEL_ENABLED": "false",
    }


# -- load ----------------------------------------------------------------------------------------


@dataclass
class Producer:
    """Enqueues at `rate` a second on an absolute schedule, each call a task of its own, so
    that calls held up by an outage do not slow the next ones."""

    client: JobsClient
    rate: float
    returned: dict[int, str] = field(default_factory=dict)
    raised: list[str] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    sent: int = 0

    async def run(self, seconds: float) -> None:
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            self.spawn("chaos.work")
            await asyncio.sleep(max(0.0, (self.sent / self.rate) - elapsed))

    def spawn(self, job_type: str) -> None:
        self.sent += 1
        task = asyncio.create_task(self._one(self.sent, job_type))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _one(self, n: int, job_type: str) -> None:
        try:
            response = await self.client.enqueue(USE_CASE, job_type, {"n": n})
        except JobsError as exc:
            self.raised.append(f"{type(exc).__name__}: {exc}")
            return
        self.returned[n] = str(response.job.id)

    async def settle(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks))


# -- faults --------------------------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    started: float = 0.0
    lifted: float = 0.0


@dataclass
class Soak:
    args: argparse.Namespace
    cluster: Cluster
    moto: Moto
    supervisor: Supervisor
    producer: Producer
    api_port: int
    faults: list[Fault] = field(default_factory=list)

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.cluster.url, timeout=5)

    async def run_fault(self, name: str, action: Callable[[], Awaitable[None]]) -> None:
        fault = Fault(name, started=time.time())
        self.faults.append(fault)
        try:
            await action()
        except Exception as exc:  # a fault that could not be injected is reported, not fatal
            fault.name += f" (failed: {type(exc).__name__}: {exc})"
        fault.lifted = time.time()

    async def kill_worker(self) -> None:
        self.supervisor.kill("worker-1")
        await self._restarted("worker-1")

    async def kill_leader(self) -> None:
        conn = await self.admin()
        try:
            holder = await conn.fetchval(
                "SELECT holder FROM scheduler_leader WHERE expires_at > now()"
            )
        finally:
            await conn.close()
        name = self.supervisor.pid_of(int(holder.split(":")[1])) if holder else None
        if name is None:
            raise RuntimeError("no live leader to kill")
        self.supervisor.kill(name)
        await self._restarted(name)

    async def kill_api(self) -> None:
        """Lifted once the new API process listens (its start-up is part of the fault)."""
        self.supervisor.kill("api")
        await self._restarted("api")
        await wait_for_port(self.api_port, timeout=60)

    async def _restarted(self, name: str) -> None:
        before = self.supervisor.restarts.get(name, 0)
        while self.supervisor.restarts.get(name, 0) == before:
            await asyncio.sleep(0.1)

    async def terminate_backends(self) -> None:
        conn = await self.admin()
        try:
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()

    async def restart_postgres(self) -> None:
        await asyncio.to_thread(self.cluster.stop)
        await asyncio.sleep(self.args.pg_down)
        await asyncio.to_thread(self.cluster.start)

    async def pause_sqs(self) -> None:
        self.moto.signal(signal.SIGSTOP)
        await asyncio.sleep(self.args.sqs_pause)
        self.moto.signal(signal.SIGCONT)

    async def restart_sqs_empty(self) -> None:
        self.moto.kill()
        await asyncio.sleep(1.0)
        await self.moto.start()
        await ensure_queue(self.moto)

    async def blocking_handler(self) -> None:
        for _ in range(3):
            self.producer.spawn("chaos.block")

    async def crashing_handler(self) -> None:
        self.producer.spawn("chaos.crash")
        await asyncio.sleep(0.5)

    def timeline(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        return [
            ("SIGKILL worker", self.kill_worker),
            ("SIGKILL leader scheduler", self.kill_leader),
            ("SIGKILL API", self.kill_api),
            ("pg_terminate_backend all", self.terminate_backends),
            (f"PostgreSQL restart ({self.args.pg_down:g} s down)", self.restart_postgres),
            (f"SQS paused ({self.args.sqs_pause:g} s)", self.pause_sqs),
            ("SQS restarted empty", self.restart_sqs_empty),
            ("blocking handler (time.sleep)", self.blocking_handler),
            ("crashing handler (os._exit)", self.crashing_handler),
        ]

    async def inject(self, started: float) -> None:
        """Faults from 10 % to 85 % of the run, `--fault-every` s apart (default: one round
        spread over that span), round after round; each round's order is shuffled by --seed,
        but the first round starts with the kills (measured against a steady state)."""
        plan = self.timeline()
        rng = random.Random(self.args.seed)
        span = self.args.duration * 0.75
        gap = self.args.fault_every or span / (len(plan) - 1)
        end = started + self.args.duration * 0.85 + 0.01
        at, round_no = started + self.args.duration * 0.10, 0
        while at <= end:
            if round_no == 0:
                order = plan[:3] + rng.sample(plan[3:], len(plan) - 3)
            else:
                order = rng.sample(plan, len(plan))
            for name, action in order:
                if at > end:
                    return
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                await self.run_fault(name, action)
                at += gap
            round_no += 1


# -- after the run -------------------------------------------------------------------------------


async def drained(conn: asyncpg.Connection, moto: Moto, timeout: float) -> float:
    """Seconds until no job is pending or running and the queues are empty."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            active = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')"
            )
            if active == 0 and sum((await queue_counts(moto)).values()) == 0:
                return time.monotonic() - started
        await asyncio.sleep(1.0)
    return float("nan")


INVARIANTS = {
    "every returned id is stored once": """
        SELECT count(*) FROM unnest($1::uuid[]) AS r(id)
        WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = r.id)
    """,
    "no payload stored twice (no duplicate enqueue)": """
        SELECT count(*) FROM (SELECT payload->>'n' FROM jobs GROUP BY 1 HAVING count(*) > 1) d
    """,
    "nothing left pending or running": """
        SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')
    """,
    "attempts contiguous (1..n)": """
        SELECT count(*) FROM jobs j
        LEFT JOIN LATERAL (SELECT count(*) AS n, min(attempt) AS lo, max(attempt) AS hi
                           FROM job_attempts a WHERE a.job_id = j.id) a ON true
        WHERE a.n <> j.attempts OR (j.attempts > 0 AND (a.lo <> 1 OR a.hi <> j.attempts))
    """,
    "at most one success per job": """
        SELECT count(*) FROM (SELECT job_id FROM job_attempts WHERE outcome = 'succeeded'
                              GROUP BY job_id HAVING count(*) > 1) d
    """,
    "each success has its run in the side table": """
        SELECT count(*) FROM job_attempts a WHERE a.outcome = 'succeeded'
        AND NOT EXISTS (SELECT 1 FROM chaos_runs r
                        WHERE r.job_id = a.job_id AND r.attempt = a.attempt)
    """,
    "succeeded jobs have exactly one success": """
        SELECT count(*) FROM jobs j WHERE j.status = 'succeeded' AND (
            SELECT count(*) FROM job_attempts a
            WHERE a.job_id = j.id AND a.outcome = 'succeeded') <> 1
    """,
    # a random failure is 10 % a run and a job has 10 attempts: a job dies by chance once in
    # ten billion, so a dead job says the faults (or the runtime under them) killed it
    "no job dead (faults cost attempts, never the job)": """
        SELECT count(*) FROM jobs WHERE status = 'dead'
    """,
    "quota counter equals a COUNT": """
        SELECT count(*) FROM (
            SELECT t.tenant FROM (SELECT DISTINCT tenant FROM jobs) t
            LEFT JOIN tenant_usage u USING (tenant)
            WHERE coalesce(u.active, 0) <> (SELECT count(*) FROM jobs j
                WHERE j.tenant = t.tenant AND j.status IN ('pending', 'running'))) d
    """,
}

DUPLICATES = """
WITH runs AS (
    SELECT job_id, attempt, count(*) AS n FROM chaos_runs GROUP BY job_id, attempt
)
SELECT 'same attempt run again (redelivered)' AS cause, coalesce(sum(n - 1), 0) AS runs
FROM runs WHERE n > 1
UNION ALL
SELECT 'retry after a handler failure', count(*)
FROM runs r JOIN job_attempts p ON p.job_id = r.job_id AND p.attempt = r.attempt - 1
WHERE p.outcome = 'failed'
UNION ALL
SELECT 'retry after an expired lease (kill, crash, lost message)', count(*)
FROM runs r JOIN job_attempts p ON p.job_id = r.job_id AND p.attempt = r.attempt - 1
WHERE p.outcome = 'lease_expired'
UNION ALL
SELECT 'attempts dispatched that never ran', count(*)
FROM job_attempts a WHERE NOT EXISTS (
    SELECT 1 FROM chaos_runs r WHERE r.job_id = a.job_id AND r.attempt = a.attempt)
"""


async def check(conn: asyncpg.Connection, soak: Soak, queues: dict[str, int]) -> list[Any]:
    ids = list(soak.producer.returned.values())
    results: list[tuple[str, int]] = []
    for name, sql in INVARIANTS.items():
        args = [ids] if "$1" in sql else []
        results.append((name, int(await conn.fetchval(sql, *args))))
    results.append(("every enqueue call returned a job", len(soak.producer.raised)))
    results.append(("ids returned are distinct", len(ids) - len(set(ids))))
    results.append(("queues end empty", sum(queues.values())))
    return results


async def completions(conn: asyncpg.Connection) -> list[float]:
    rows = await conn.fetch(
        "SELECT extract(epoch FROM finished_at)::float8 AS t FROM jobs "
        "WHERE status = 'succeeded' ORDER BY finished_at"
    )
    return [r["t"] for r in rows]


def per_second(done: list[float], start: float, end: float) -> float:
    return sum(start <= t < end for t in done) / max(end - start, 1e-9)


def recovery(fault: Fault, done: list[float]) -> tuple[float, float, float, float]:
    """(s to the next completion, s to half the earlier throughput, jobs/s before, after),
    times from the fault's start; the later ones measured from when it was lifted."""
    before = per_second(done, fault.started - WINDOW, fault.started)
    after = per_second(done, fault.lifted, fault.lifted + WINDOW)
    nxt = next((t for t in done if t > fault.lifted), float("nan"))
    half = float("nan")
    t = fault.lifted
    while t < fault.lifted + 120:
        if per_second(done, t, t + 1.0) >= before / 2:
            half = t
            break
        t += 0.25
    return nxt - fault.started, half - fault.started, before, after


def report(
    soak: Soak, done: list[float], dups: list[Any], results: list[Any], **figures: Any
) -> bool:
    print(
        f"\nchaos soak: {figures['duration']:.0f} s at {soak.args.rate:g} jobs/s, "
        f"seed {soak.args.seed}"
    )
    print(
        f"enqueued {len(soak.producer.returned)} (calls {soak.producer.sent}, raised "
        f"{len(soak.producer.raised)}), succeeded {figures['succeeded']}, dead {figures['dead']}; "
        f"drained in {figures['drain']:.1f} s; restarts {soak.supervisor.restarts}"
    )
    print(f"load average: start {figures['load_start']}, end {figures['load_end']}")
    failed = soak.supervisor.count_in_logs("scheduler pass failed")
    print(f"'scheduler pass failed' log lines (backed off): {failed or 'none'}\n")
    print(
        "per fault: s from its start to the next job done after it was lifted, and to the\n"
        f"first 1 s with half the jobs/s of the {WINDOW:g} s before it; jobs/s in the "
        f"{WINDOW:g} s before it\nand after it was lifted (median over its occurrences, "
        "max in brackets)"
    )
    head = (
        f"{'fault':40} {'n':>2} {'next done s':>14} {'half rate s':>14} "
        f"{'before /s':>9} {'after /s':>9}"
    )
    print(head)
    print("-" * len(head))
    by_name: dict[str, list[tuple[float, float, float, float]]] = {}
    for fault in soak.faults:
        by_name.setdefault(fault.name, []).append(recovery(fault, done))
    for name, rows in by_name.items():
        nxt, half, before, after = (list(col) for col in zip(*rows, strict=True))
        print(
            f"{name[:40]:40} {len(rows):2} {_spread(nxt):>14} {_spread(half):>14} "
            f"{statistics.median(before):9.1f} {statistics.median(after):9.1f}"
        )
    print(f"\n{'handler runs beyond the first of each job, by cause':60} {'runs':>6}")
    for row in dups:
        print(f"{row['cause']:60} {row['runs']:6}")
    print(f"\n{'invariant':50} {'violations':>10} result")
    ok = True
    for name, bad in results:
        ok = ok and bad == 0
        print(f"{name:50} {bad:10} {'PASS' if bad == 0 else 'FAIL'}")
    if soak.producer.raised:
        print("first enqueue error:", soak.producer.raised[0])
    print("\nall invariants PASS" if ok else "\nsome invariant FAILED")
    return ok


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({max(values):.2f})"


# -- the run -------------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, root: Path) -> bool:
    cluster = Cluster(root)
    await asyncio.to_thread(cluster.init)
    await asyncio.to_thread(cluster.start)
    moto = Moto()
    await moto.start()
    await migrate(cluster.url)
    conn = await asyncpg.connect(cluster.url)
    await conn.execute(SIDE_TABLE)
    await conn.close()
    await ensure_queue(moto)
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    log_dir = root / "logs"
    log_dir.mkdir()
    sup = Supervisor(log_dir, environment(cluster.url, moto.url, server))
    level = ["--log-level", "warning"]
    sup.start("api", ["-m", "jobs_server", "serve", "--port", str(port), *level])
    for i in (1, 2):
        sup.start(f"scheduler-{i}", ["-m", "jobs_server", "scheduler", *level])
        sup.start(
            f"worker-{i}",
            ["-m", "jobs_worker", "run", "chaos_handlers:registry", "-u", USE_CASE,
             "--concurrency", "20", *level],
        )  # fmt: skip
    watch = asyncio.create_task(sup.watch())
    try:
        await wait_for_port(port)
        async with JobsClient(server, TOKEN) as client:
            producer = Producer(client, args.rate)
            return await _run(args, Soak(args, cluster, moto, sup, producer, port))
    finally:
        sup.stop()
        await watch
        moto.kill()
        with contextlib.suppress(Exception):
            cluster.stop("immediate")
        if args.keep:
            print(f"logs and data: {root}")


async def _run(args: argparse.Namespace, s: Soak) -> bool:
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started_wall, started = time.time(), time.monotonic()
    injecting = asyncio.create_task(s.inject(started))
    await s.producer.run(args.duration)
    await injecting
    await s.producer.settle()
    conn = await asyncpg.connect(s.cluster.url)
    try:
        drain = await drained(conn, s.moto, args.drain_timeout)
        queues = await queue_counts(s.moto)
        results = await check(conn, s, queues)
        dups = await conn.fetch(DUPLICATES)
        done = await completions(conn)
        by_status = dict(await conn.fetch("SELECT status::text, count(*) FROM jobs GROUP BY 1"))
    finally:
        await conn.close()
    return report(
        s,
        done,
        dups,
        results,
        duration=time.time() - started_wall,
        drain=drain,
        succeeded=by_status.get("succeeded", 0),
        dead=by_status.get("dead", 0),
        load_start=load_start,
        load_end=" ".join(f"{x:.2f}" for x in os.getloadavg()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=20.0, help="enqueues a second")
    parser.add_argument("--seed", type=int, default=1, help="orders the faults")
    parser.add_argument("--pg-down", type=float, default=8.0, help="seconds PostgreSQL is down")
    parser.add_argument("--sqs-pause", type=float, default=5.0, help="seconds SQS is paused")
    parser.add_argument(
        "--fault-every", type=float, default=None, help="s between faults (default: one round)"
    )
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--keep", action="store_true", help="keep logs and data")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="jobs-chaos-"))
    try:
        ok = asyncio.run(soak(args, root))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
