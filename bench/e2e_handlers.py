"""The no-op handler of bench/e2e.py, run by `jobs-worker run e2e_handlers:registry -u bench`
(with bench/ on PYTHONPATH).

Its first line reads the clock; the reading is the job's result, so the benchmark can measure
enqueue-to-handler-start latency from the database afterwards."""

from __future__ import annotations

import time

from pydantic import BaseModel

from jobs_worker import Registry

registry = Registry()


class Noop(BaseModel):
    n: int = 0


@registry.handler("bench.noop")
async def noop(payload: Noop) -> dict[str, float]:
    started = time.time()
    return {"started": started}
