"""The handlers of bench/chaos.py, run by `jobs-worker run chaos_handlers:registry -u chaos`
(with bench/ on PYTHONPATH, CHAOS_DATABASE_URL naming the soak's database).

Every run is first written to a side table of the soak's own (chaos_runs: job id, attempt,
pid, time), so the soak can tell a success from the run that produced it, and count runs the
job system did not ask for. Then:

  chaos.work   fails (raises) or sleeps at random, else succeeds;
  chaos.block  blocks its event loop with time.sleep on its first attempt;
  chaos.crash  ends its process with os._exit on its first attempt.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import asyncpg
from pydantic import BaseModel

from jobs_worker import JobContext, Registry

registry = Registry()

SIDE_TABLE = """
CREATE TABLE IF NOT EXISTS chaos_runs (
    job_id  uuid NOT NULL,
    attempt integer NOT NULL,
    pid     integer NOT NULL,
    kind    text NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""
FAIL_RATE = 0.1
SLOW_RATE = 0.1
BLOCK_SECONDS = 3.0

_pools: dict[str, asyncpg.Pool] = {}


class Work(BaseModel):
    n: int = 0


async def _pool() -> asyncpg.Pool:
    # one small pool per worker process, made on first use (the handler runs in the worker)
    if "db" not in _pools:
        _pools["db"] = await asyncpg.create_pool(
            os.environ["CHAOS_DATABASE_URL"], min_size=1, max_size=4, timeout=5
        )
    return _pools["db"]


async def record(ctx: JobContext, kind: str) -> None:
    pool = await _pool()
    await pool.execute(
        "INSERT INTO chaos_runs (job_id, attempt, pid, kind) VALUES ($1, $2, $3, $4)",
        ctx.job_id,
        ctx.attempt,
        os.getpid(),
        kind,
    )


@registry.handler("chaos.work")
async def work(payload: Work, ctx: JobContext) -> dict[str, int]:
    await record(ctx, "work")
    roll = random.random()
    if roll < FAIL_RATE:
        raise RuntimeError("chaos: a random failure")
    if roll < FAIL_RATE + SLOW_RATE:
        await asyncio.sleep(random.uniform(0.2, 2.0))
    return {"pid": os.getpid()}


@registry.handler("chaos.block")
async def block(payload: Work, ctx: JobContext) -> dict[str, int]:
    await record(ctx, "block")
    if ctx.attempt == 1:
        time.sleep(BLOCK_SECONDS)  # the fault under test: the event loop stops
    return {"pid": os.getpid()}


@registry.handler("chaos.crash")
async def crash(payload: Work, ctx: JobContext) -> dict[str, int]:
    await record(ctx, "crash")
    if ctx.attempt == 1:
        os._exit(17)  # the fault under test: the whole worker process goes
    return {"pid": os.getpid()}
