"""Procrastinate (from PyPI) on the same PostgreSQL, the yardstick of bench/e2e.py.

    uv run --no-project --with 'procrastinate==3.10.0' --with 'psycopg[binary,pool]' \\
        python bench/procrastinate_e2e.py [--jobs 20000] [--rate 200] [--seconds 15] [--json]

It runs in an ephemeral environment of its own (the workspace's lock is untouched); bench/e2e.py
runs it as a subprocess with --json and prints its figures beside ours. Same shape as ours: a
database of its own (JOBS_BENCH_DATABASE_URL's server), its schema applied, a no-op task whose
first line reads the clock (appended as `job_id time` to a file per worker process), worker
processes started with Procrastinate's own CLI (`python -m procrastinate --app=... worker
--concurrency 10`, LISTEN/NOTIFY on, as shipped), then

  throughput: `--jobs` jobs deferred with `batch_defer_async` in batches of `--batch`, clock
              from the first defer to the last job's `succeeded` event;
  latency:    `--rate` single `defer_async` calls a second for `--seconds` (an absolute
              schedule), latency = handler start - the defer call's return;
  CPU per job per process (utime + stime from /proc) and the workers' peak memory.

The first part of this file (process measurement, pacing, percentiles) uses the standard
library only: bench/e2e.py imports it. Procrastinate itself is imported lazily, so that
`procrastinate_e2e.app` (what the worker CLI loads) is built on first use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# -- process measurement (standard library only: bench/e2e.py imports this part) -----------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return data[data.rindex(")") + 2 :].split()  # comm may hold spaces and parentheses


def _ticks(pid: int) -> int:
    """utime + stime + cutime + cstime: the process's CPU and that of its reaped children (a
    PostgreSQL backend that exited is in its postmaster's cutime/cstime)."""
    f = _stat(pid)
    return 0 if f is None else int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])


def own_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), without its children."""
    f = _stat(pid)
    return 0.0 if f is None else (int(f[11]) + int(f[12])) / CLK_TCK


def _ppids() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat(int(entry))
            if f is not None:
                out[int(entry)] = int(f[1])
    return out


def process_tree(root: int) -> list[int]:
    """`root` and its live descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppids().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def tree_cpu_seconds(root: int) -> float:
    """CPU of a process tree: every live process's own and reaped-children's time (no double
    counting: a reaped process is no longer live)."""
    return sum(_ticks(pid) for pid in process_tree(root)) / CLK_TCK


def machine_busy_seconds() -> float:
    """Non-idle CPU time of the whole machine, all cores."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is already inside user time
    return (sum(fields[:8]) - idle) / CLK_TCK


def memory_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) in MB, or None when the process is gone."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    values[key] = int(value.split()[0]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    if "VmRSS" not in values:
        return None
    return values["VmRSS"], values.get("VmHWM", values["VmRSS"])


def listener_pid(port: int) -> int | None:
    """The process listening on a local TCP port (the root one, if it has children that hold
    the socket too): the postmaster for PostgreSQL's port, LocalStack for SQS's."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{parts[9]}]")
    if not inodes:
        return None
    holders = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                        holders.add(int(entry))
                        break
    ppids = _ppids()
    roots = [p for p in holders if ppids.get(p) not in holders]
    return min(roots) if roots else None


def url_port(url: str, default: int) -> int | None:
    """The port of a URL on this machine; None when the host is elsewhere."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1", None, ""):
        return None
    return parts.port or default


MACHINE = "machine (all processes)"

# The backends of the benchmark's own database, and the cluster's shared background writers;
# other databases' backends (other work on the same server) are left out.
PG_PIDS_SQL = """
SELECT pid FROM pg_stat_activity
WHERE datname = current_database()
   OR (datname IS NULL AND backend_type IN ('checkpointer', 'background writer', 'walwriter'))
"""
POSTGRES = "PostgreSQL"
# Transactions of the benchmark's database; backends report theirs at most once a second, so
# read it STATS_SETTLE seconds after a phase ends.
XACTS_SQL = (
    "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
)
STATS_SETTLE = 1.5


@dataclass
class CpuMeter:
    """CPU seconds of named processes between start() and stop(). `trees` are measured with
    their descendants (LocalStack, our processes); `own` without (this process, the parent of
    the others). `sets` (given to start and stop) are groups whose members come and go, such as
    the PostgreSQL backends of one database: a member that exited in between is missed and
    counted in `missed`."""

    trees: dict[str, int]
    own: dict[str, int] = field(default_factory=dict)
    _start: dict[str, float] = field(default_factory=dict)
    _set_start: dict[str, dict[int, int]] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)
    wall: float = 0.0  # seconds between start() and stop()
    _t0: float = 0.0

    def _read(self) -> dict[str, float]:
        out = {name: tree_cpu_seconds(pid) for name, pid in self.trees.items()}
        out |= {name: own_cpu_seconds(pid) for name, pid in self.own.items()}
        out[MACHINE] = machine_busy_seconds()
        return out

    def start(self, sets: dict[str, list[int]] | None = None) -> None:
        self._set_start = {
            name: {pid: _ticks(pid) for pid in pids} for name, pids in (sets or {}).items()
        }
        self._start = self._read()
        self._t0 = time.monotonic()

    def stop(self, sets: dict[str, list[int]] | None = None) -> dict[str, float]:
        end = self._read()
        self.wall = time.monotonic() - self._t0
        out = {name: end[name] - self._start[name] for name in end}
        for name, pids in (sets or {}).items():
            before = self._set_start.get(name, {})
            alive = {pid for pid in set(pids) | set(before) if _stat(pid) is not None}
            self.missed[name] = len(set(before) - alive)
            out[name] = sum(_ticks(pid) - before.get(pid, 0) for pid in alive) / CLK_TCK
        return out


class MemorySampler:
    """VmRSS of named processes every `interval` seconds; peak from VmHWM."""

    def __init__(self, pids: dict[str, int], interval: float = 1.0) -> None:
        self.pids = pids
        self.interval = interval
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
        self.marks: dict[str, dict[str, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> dict[str, float]:
        now = time.time()
        out = {}
        for name, pid in self.pids.items():
            got = memory_mb(pid)
            if got is not None:
                self.samples[name].append((now, got[0]))
                out[name] = got[0]
        return out

    def mark(self, label: str) -> None:
        self.marks[label] = self.sample()

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, dict[str, float]]:
        """Per process: start, end, min and max of the samples, and the peak (VmHWM)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()
        out = {}
        for name, pid in self.pids.items():
            rss = [r for _, r in self.samples[name]]
            got = memory_mb(pid)
            if not rss:
                continue
            out[name] = {
                "start": rss[0],
                "end": rss[-1],
                "min": min(rss),
                "max": max(rss),
                "peak": got[1] if got else max(rss),
                "samples": len(rss),
            }
        return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def latency_summary(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": max(ms),
        "min": min(ms),
    }


async def paced(
    rate: float, seconds: float, call: Callable[[], Awaitable[Hashable]]
) -> tuple[dict[Hashable, float], float]:
    """Start `call()` `rate` times a second for `seconds` on an absolute schedule (a slow call
    does not delay the next one). Returns {what call returned: time.time() right after it
    returned} and the 99th percentile of how late the calls started, in ms."""
    count = round(rate * seconds)
    returned: dict[Hashable, float] = {}
    lateness: list[float] = []

    async def one() -> None:
        key = await call()
        returned[key] = time.time()

    tasks = []
    t0 = time.perf_counter() + 0.05
    for i in range(count):
        at = t0 + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness.append((time.perf_counter() - at) * 1000)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return returned, percentile(lateness, 99) if lateness else 0.0


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


# -- Procrastinate ------------------------------------------------------------------------------

DSN_ENV = "PROCRASTINATE_E2E_DSN"
OUT_ENV = "PROCRASTINATE_E2E_OUT"
ADMIN_URL = os.environ.get(
    "JOBS_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
HERE = Path(__file__).resolve().parent

_app: Any = None
_out: Any = None


def _record(job_id: int, started: float) -> None:
    global _out
    if _out is None:
        # one file per worker process; line-buffered, so nothing is lost on SIGTERM
        _out = open(f"{os.environ[OUT_ENV]}.{os.getpid()}", "a", buffering=1)  # noqa: SIM115
    _out.write(f"{job_id} {started}\n")


def make_app() -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ[DSN_ENV]))

    @app.task(name="noop", pass_context=True)
    async def noop(context: Any, **_: Any) -> None:
        started = time.time()
        _record(context.job.id, started)

    return app


def __getattr__(name: str) -> Any:
    """`procrastinate_e2e.app`, built on first access (the worker CLI's --app)."""
    global _app
    if name == "app":
        if _app is None:
            _app = make_app()
        return _app
    raise AttributeError(name)


def read_started(out: str) -> dict[int, float]:
    started: dict[int, float] = {}
    for path in Path(out).parent.glob(Path(out).name + ".*"):
        for line in path.read_text().splitlines():
            job_id, _, t = line.partition(" ")
            started.setdefault(int(job_id), float(t))  # the first run, if one ran twice
    return started


async def _count_succeeded(conn: Any) -> int:
    cur = await conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
    row = await cur.fetchone()
    return int(row[0])


async def _wait_succeeded(conn: Any, total: int, timeout: float) -> None:
    give_up = time.monotonic() + timeout
    while await _count_succeeded(conn) < total:
        if time.monotonic() > give_up:
            raise RuntimeError(f"procrastinate: not all {total} jobs succeeded in {timeout} s")
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    name = f"procrastinate_bench_{uuid.uuid4().hex[:6]}"
    async with await psycopg.AsyncConnection.connect(ADMIN_URL, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(ADMIN_URL, name)
    out_dir = tempfile.mkdtemp(prefix="procrastinate-e2e-")
    os.environ[DSN_ENV] = dsn
    os.environ[OUT_ENV] = str(Path(out_dir) / "started")
    env = os.environ | {"PYTHONPATH": str(HERE)}
    workers: list[subprocess.Popen[bytes]] = []
    try:
        # the app of the module the workers import (not of __main__), as Procrastinate wants
        import procrastinate_e2e

        app = procrastinate_e2e.app
        async with (
            app.open_async(),
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn,
        ):
            await app.schema_manager.apply_schema_async()
            noop = app.tasks["noop"]
            for _ in range(args.workers):
                workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "procrastinate",
                            "--app=procrastinate_e2e.app",
                            f"--log-level={args.log_level}",
                            "worker",
                            "--concurrency",
                            str(args.concurrency),
                        ],
                        env=env,
                    )
                )
            # ready: every worker registered, and a warm-up batch ran through
            give_up = time.monotonic() + 60
            while True:
                cur = await conn.execute("SELECT count(*) FROM procrastinate_workers")
                if (await cur.fetchone())[0] >= args.workers:
                    break
                if time.monotonic() > give_up or any(w.poll() is not None for w in workers):
                    raise RuntimeError("procrastinate workers did not start")
                await asyncio.sleep(0.1)
            await noop.batch_defer_async(*[{}] * 200)
            await _wait_succeeded(conn, 200, 60)
            done_before = 200

            local_pg = url_port(ADMIN_URL, 5432) is not None

            async def pg_pids() -> dict[str, list[int]]:
                if not local_pg:
                    return {}
                cur = await conn.execute(PG_PIDS_SQL)
                return {POSTGRES: [int(r[0]) for r in await cur.fetchall()]}

            trees = {f"worker {i + 1}": w.pid for i, w in enumerate(workers)}
            memory = MemorySampler(dict(trees))
            memory.start()
            memory.mark("start")

            async def xacts() -> int:
                cur = await conn.execute(XACTS_SQL)
                return int((await cur.fetchone())[0])

            # throughput
            meter = CpuMeter(trees, own={"bench client": os.getpid()})
            xacts_before = await xacts()
            meter.start(await pg_pids())
            started_at = time.time()
            for start in range(0, args.jobs, args.batch):
                n = min(args.batch, args.jobs - start)
                await noop.batch_defer_async(*[{}] * n)
            enqueued_at = time.time()
            await _wait_succeeded(conn, done_before + args.jobs, 600)
            cpu = meter.stop(await pg_pids())
            cur = await conn.execute(
                "SELECT extract(epoch FROM max(at)) FROM procrastinate_events "
                "WHERE type = 'succeeded'"
            )
            last = float((await cur.fetchone())[0])
            throughput = args.jobs / (last - started_at)
            done_before += args.jobs
            memory.mark("after throughput")
            await asyncio.sleep(STATS_SETTLE)
            pg_transactions = await xacts() - xacts_before

            # latency at a steady rate
            lat_meter = CpuMeter(trees, own={"bench client": os.getpid()})
            xacts_before = await xacts()
            lat_meter.start(await pg_pids())
            returned, late_p99 = await paced(args.rate, args.seconds, noop.defer_async)
            await _wait_succeeded(conn, done_before + len(returned), 120)
            lat_cpu = lat_meter.stop(await pg_pids())
            await asyncio.sleep(STATS_SETTLE)
            lat_pg_transactions = await xacts() - xacts_before
            started = read_started(os.environ[OUT_ENV])
            ms = [(started[j] - t) * 1000 for j, t in returned.items() if j in started]
            mem = await memory.stop()
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=20)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        async with await psycopg.AsyncConnection.connect(ADMIN_URL, autocommit=True) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(out_dir, ignore_errors=True)
    import procrastinate

    return {
        "version": procrastinate.__version__,
        "setting": f"{args.workers} worker processes at concurrency {args.concurrency}, "
        f"--log-level={args.log_level}, LISTEN/NOTIFY on (defaults otherwise)",
        "jobs": args.jobs,
        "batch": args.batch,
        "throughput": throughput,
        "enqueue_seconds": enqueued_at - started_at,
        "elapsed_seconds": last - started_at,
        "cpu_seconds": cpu,
        "wall_seconds": meter.wall,
        "pg_transactions": pg_transactions,
        "pg_backends_missed": meter.missed.get(POSTGRES, 0),
        "latency": {
            "rate": args.rate,
            "seconds": args.seconds,
            "sent": len(returned),
            "measured": len(ms),
            "client_late_p99_ms": late_p99,
            "ms": latency_summary(ms),
            "cpu_seconds": lat_cpu,
            "wall_seconds": lat_meter.wall,
            "pg_transactions": lat_pg_transactions,
        },
        "memory_mb": mem,
    }


def _print(result: dict[str, Any]) -> None:
    print(f"procrastinate {result['version']}: {result['setting']}")
    print(
        f"throughput: {result['jobs']:,} jobs in {result['elapsed_seconds']:.2f} s = "
        f"{result['throughput']:,.0f} jobs/s (defers took {result['enqueue_seconds']:.2f} s)"
    )
    for name, seconds in result["cpu_seconds"].items():
        print(f"  CPU {name:<24} {1000 * seconds / result['jobs']:.3f} ms/job")
    lat = result["latency"]
    ms = lat["ms"]
    print(
        f"latency at {lat['rate']:g}/s for {lat['seconds']:g} s ({lat['measured']} jobs): "
        f"p50 {ms['p50']:.1f} ms, p90 {ms['p90']:.1f} ms, p99 {ms['p99']:.1f} ms, "
        f"max {ms['max']:.1f} ms"
    )
    for name, m in result["memory_mb"].items():
        print(
            f"  RSS {name}: start {m['start']:.0f} MB, end {m['end']:.0f} MB, "
            f"peak {m['peak']:.0f} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=10, help="per worker process")
    parser.add_argument(
        "--log-level",
        default="warning",
        help="the workers' (info logs two lines per job, which costs it throughput)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)


if __name__ == "__main__":
    main()
