"""What an idle standby scheduler costs PostgreSQL: transactions a second and CPU, idle and
while wake-ups (NOTIFY) arrive.

    uv run python bench/standby.py            # JOBS_BENCH_DATABASE_URL, default 127.0.0.1:5432

A fresh database in which the leader lease is held by a holder that never lets go (a row, as a
live leader elsewhere would keep it), then `jobs-server scheduler` as a process of its own: it
can only stand by, and it is the only client of the database besides this script, whose own
transactions (a NOTIFY each, the reads of the counters) are subtracted. Figures from
pg_stat_database (xact_commit + xact_rollback) and /proc/<pid>/stat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from _common import bench_database

HERE = Path(__file__).resolve().parent
XACTS = (
    "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
)
# An idle backend whose last flush was under a second ago flushes its statistics 10 s later:
# this script waits that long before each read of the counters. (The standby's transactions
# are seconds apart, so it flushes each one at once.)
SETTLE = 11.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_standby(db: str, ttl: float) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")} | {
        "JOBS_DATABASE_URL": db,
        "JOBS_USE_CASES": json.dumps({"bench": {"queue": "bench-standby"}}),
        "JOBS_SQS_ENDPOINT_URL": "http://127.0.0.1:9",  # a standby never publishes
        "JOBS_LEADER_TTL_SECONDS": str(ttl),
        "JOBS_METRICS_ENABLED": "false",
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "jobs_server", "scheduler", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def listening(conn: asyncpg.Connection) -> bool:
    n = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
    )
    return bool(n)


async def measure(
    conn: asyncpg.Connection, pid: int, seconds: float, notify_rate: float
) -> tuple[float, float]:
    """(the standby's transactions a second, its CPU seconds a second) over about `seconds`."""
    await asyncio.sleep(SETTLE)
    before, cpu, started = int(await conn.fetchval(XACTS)), cpu_seconds(pid), time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        if notify_rate:
            await conn.execute("SELECT pg_notify('jobs_wakeup', '{\"u\": [\"bench\"]}')")
            sent += 1
            await asyncio.sleep(max(0.0, sent / notify_rate - elapsed))
        else:
            await asyncio.sleep(seconds - elapsed)
    await asyncio.sleep(SETTLE)
    after, cpu = int(await conn.fetchval(XACTS)), cpu_seconds(pid) - cpu
    window = time.monotonic() - started
    theirs = after - before - sent - 1  # less ours: the notifies and the first read
    return theirs / window, cpu / window


async def run(args: argparse.Namespace) -> None:
    async with bench_database("standby") as db:
        conn = await asyncpg.connect(db)
        await conn.execute(
            "INSERT INTO scheduler_leader (name, holder, epoch, expires_at) "
            "VALUES ('default', 'a-leader-elsewhere', 1, now() + interval '1 day')"
        )
        proc = start_standby(db, args.ttl)
        try:
            for _ in range(600):
                if proc.poll() is not None:
                    raise RuntimeError(f"the scheduler exited ({proc.returncode})")
                if await listening(conn):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(3.0)  # past its start-up statements
            idle = await measure(conn, proc.pid, args.seconds, 0.0)
            woken = await measure(conn, proc.pid, args.seconds, args.notify_rate)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            await conn.close()
    expected = 3 / args.ttl
    print(
        f"idle standby, leader TTL {args.ttl:g} s (one election try per TTL/3 = {expected:.2f}/s)"
    )
    print(f"{'':28} {'transactions/s':>14} {'CPU s per 10 s':>15}")
    print(f"{'idle':28} {idle[0]:14.2f} {idle[1] * 10:15.3f}")
    label = f"{args.notify_rate:g} NOTIFY/s"
    print(f"{label:28} {woken[0]:14.2f} {woken[1] * 10:15.3f}")
    print("load average:", " ".join(f"{x:.2f}" for x in os.getloadavg()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--ttl", type=float, default=10.0, help="JOBS_LEADER_TTL_SECONDS")
    parser.add_argument("--notify-rate", type=float, default=50.0, help="wake-ups a second")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
