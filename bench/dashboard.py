"""Dashboard figures at 1,000,000 jobs: time to first byte of the overview and of filtered job
list pages (median of 20), the cost of the statistics refresh the scheduler leader runs, and
(with --plans) the plans of the list queries.

    uv run python bench/dashboard.py          # JOBS_BENCH_DATABASE_URL; about 2 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import asyncpg
import httpx
import uvicorn

from _common import bench_database
from jobs_server.app import create_app
from jobs_server.settings import ServerSettings
from jobs_server.store.base import DispatchStat, JobFilter
from jobs_server.store.postgres import PostgresJobStore, job_filter, load_queries

ROWS = 1_000_000
TENANTS = 20
USE_CASES = ["notifications", "labeling", "billing"]
RUNS = 20

# Jobs created over the last 24 h, ids UUIDv7 of their creation time as the server makes them.
# 3% dead, 2% cancelled, in the last 30 min 30% still pending, a few running, the rest
# succeeded; a third carry a dedup key.
LOAD = """
INSERT INTO jobs (id, tenant, use_case, job_type, payload, status, run_at, deadline, attempts,
                  max_attempts, backoff, dedup_key, result, last_error, created_at, updated_at,
                  dispatched_at, finished_at)
SELECT (lpad(to_hex((extract(epoch FROM c) * 1000)::bigint), 12, '0') || '7'
        || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid,
       'tenant-' || lpad((g % $3)::text, 2, '0'),
       ($4::text[])[1 + g % cardinality($4::text[])],
       'type.' || (g % 7),
       jsonb_build_object('n', g, 'to', 'user' || g || '@example.com'),
       s::job_status, c, c + interval '60 seconds',
       CASE WHEN s = 'pending' THEN 0 WHEN s = 'dead' THEN 3 ELSE 1 END, 3, '{}',
       CASE WHEN g % 3 = 0 THEN 'key-' || g END,
       CASE WHEN s = 'succeeded' THEN '{"ok": true}'::jsonb END,
       CASE WHEN s = 'dead' THEN 'RuntimeError: smtp is down' END,
       c, c, c + interval '200 ms',
       CASE WHEN s IN ('succeeded', 'dead', 'cancelled') THEN c + interval '2 seconds' END
FROM generate_series($1::bigint, $2::bigint) g
CROSS JOIN LATERAL (
    SELECT now() - interval '24 hours' + (g::float8 / $5) * interval '24 hours' AS c,
           md5(g::text) AS h, (g * 7919) % 1000 AS r
) x
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN r < 30 THEN 'dead'
        WHEN r < 50 THEN 'cancelled'
        WHEN c > now() - interval '30 minutes' AND r < 350 THEN 'pending'
        WHEN c > now() - interval '1 minute' AND r < 400 THEN 'running'
        ELSE 'succeeded' END AS s
) st
"""


async def load(url: str) -> None:
    conn = await asyncpg.connect(url)
    started = time.perf_counter()
    for lo in range(1, ROWS + 1, 100_000):
        await conn.execute(LOAD, lo, min(ROWS, lo + 99_999), TENANTS, USE_CASES, float(ROWS))
    await conn.execute(
        "INSERT INTO tenant_usage (tenant, active) SELECT tenant, count(*) FROM jobs "
        "WHERE status IN ('pending', 'running') GROUP BY tenant"
    )
    await conn.execute("VACUUM ANALYZE jobs")
    rows = await conn.fetch("SELECT status::text, count(*) FROM jobs GROUP BY 1 ORDER BY 1")
    print(f"loaded {ROWS:,} jobs in {time.perf_counter() - started:.1f} s:", dict(rows))
    await conn.close()


async def refresh_stats(url: str) -> None:
    """What the leader's refresh does, timed at this size."""
    store = await PostgresJobStore.connect(url)
    try:
        t = time.perf_counter()
        await store.refresh_job_counts("default")
        counts_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        while True:  # catch up the last hour in windows of 10 min, as a new leader does
            await store.roll_up_finished(
                "default", use_cases=USE_CASES, lag_seconds=5, max_window_seconds=600
            )
            status = await store.get_scheduler_status("default")
            behind = await store._run(  # a bench may peek
                lambda c: c.fetchval(
                    "SELECT now() - finished_through > interval '10 seconds' "
                    "FROM scheduler_status WHERE name = 'default'"
                )
            )
            if not behind:
                break
        rollup_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        await store.roll_up_finished(
            "default", use_cases=USE_CASES, lag_seconds=5, max_window_seconds=600
        )
        step_ms = (time.perf_counter() - t) * 1000
        now = status.now.replace(second=0, microsecond=0)
        await store.add_dispatch_stats(
            [
                DispatchStat(now, uc, f"tenant-{t:02d}", 50, 1, 50 * 40.0, -3.0, 59.0)
                for uc in USE_CASES
                for t in range(TENANTS)
            ]
        )
    finally:
        await store.close()
    print(
        f"stats refresh at this size: active-jobs snapshot {counts_ms:.0f} ms, "
        f"first roll-up of the last hour {rollup_ms:.0f} ms, a steady roll-up step "
        f"{step_ms:.1f} ms"
    )


async def ttfb(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    async with client.stream("GET", path, headers=headers) as r:
        first = time.perf_counter()
        assert r.status_code == 200, (path, r.status_code)
        await r.aread()
    return (first - started) * 1000


async def median_ttfb(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> str:
    for _ in range(3):  # warm-up: connections, prepared statements, templates
        await ttfb(client, path, headers)
    times = [await ttfb(client, path, headers) for _ in range(RUNS)]
    return (
        f"median {statistics.median(times):6.1f} ms  (min {min(times):.1f}, max {max(times):.1f})"
    )


PAGES = [
    ("overview, admin", "/ui", "tok-admin"),
    ("overview, tenant", "/ui", "tok-tenant-03"),
    ("list: status=dead, admin", "/ui/jobs?status=dead", "tok-admin"),
    (
        "list: status=dead & use case, admin",
        "/ui/jobs?status=dead&use_case=notifications",
        "tok-admin",
    ),
    ("list: status=pending, admin", "/ui/jobs?status=pending", "tok-admin"),
    ("list: status=dead, tenant", "/ui/jobs?status=dead", "tok-tenant-03"),
    (
        "list: use case & job type, tenant",
        "/ui/jobs?use_case=billing&job_type=type.4",
        "tok-tenant-03",
    ),
    (
        "list: created range, admin",
        "/ui/jobs?created_after=2000-01-01T00:00&created_before=NOON",
        "tok-admin",
    ),
    ("list: dedup key search, tenant", "/ui/jobs?q=key-499983", "tok-tenant-03"),
    ("list: page 2 (cursor), tenant", "CURSOR", "tok-tenant-03"),
]


async def serve(url: str) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    settings = ServerSettings(
        database_url=url,
        use_cases={uc: {"queue": uc, "capacity": 100} for uc in USE_CASES},
        tenants={f"tenant-{t:02d}": {"tokens": [f"tok-tenant-{t:02d}"]} for t in range(TENANTS)},
        admin_token="tok-admin",
        db_pool_max=4,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}"


async def pages(base: str, url: str) -> None:
    noon = await _noon(url)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for label, path, token in PAGES:
            headers = {"Authorization": f"Bearer {token}"}
            if path == "CURSOR":
                r = await client.get("/v1/jobs?limit=50", headers=headers)
                path = f"/ui/jobs?cursor={r.json()['next_cursor']}"
            path = path.replace("NOON", noon)
            print(f"  {label:<40} {await median_ttfb(client, path, headers)}")


async def _noon(url: str) -> str:
    conn = await asyncpg.connect(url)
    at = await conn.fetchval(
        "SELECT to_char(now() - interval '12 hours', 'YYYY-MM-DD\"T\"HH24:MI')"
    )
    await conn.close()
    return str(at)


async def plans(url: str) -> None:
    q = load_queries()["list_jobs"]
    conn = await asyncpg.connect(url, server_settings={"jit": "off"})
    for flt in (
        JobFilter(status=None, tenant="tenant-03", limit=51),
        JobFilter(tenant="tenant-03", status=_status("dead"), limit=51),
        JobFilter(status=_status("dead"), use_case="notifications", limit=51),
        JobFilter(dedup_key="key-499983", tenant="tenant-03", limit=51),
    ):
        args: list[Any] = [flt.limit]
        sql = q.replace("/*filter*/", "(" + job_filter(flt, args) + ")")
        rows = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + sql, *args)
        print(f"-- {flt}")
        print("\n".join(r[0] for r in rows))
    await conn.close()


def _status(name: str) -> Any:
    from jobs_schema import JobStatus

    return JobStatus(name)


async def main(show_plans: bool) -> None:
    async with bench_database("dashboard") as url:
        await load(url)
        await refresh_stats(url)
        server, task, base = await serve(url)
        try:
            print(f"time to first byte over loopback, median of {RUNS} (aim: < 150 ms):")
            await pages(base, url)
        finally:
            server.should_exit = True
            await task
        if show_plans:
            await plans(url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plans", action="store_true", help="print the list queries' plans")
    asyncio.run(main(parser.parse_args().plans))
