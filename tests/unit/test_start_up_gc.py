"""After start-up, the worker and the scheduler move what start-up made out of the cyclic
collector's sight (gc.freeze), so that a full collection no longer walks it: each such
collection stopped every handler, or the scheduler's loop, for 40-90 ms (bench/e2e.py)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator

import pytest

from jobs_server import cli as server_cli
from jobs_worker import cli as worker_cli


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.parametrize(
    "settle",
    [worker_cli._freeze_start_up, lambda: server_cli._tune_gc(young=None)],
    ids=["worker", "scheduler"],
)
def test_a_full_collection_after_start_up_skips_what_start_up_made(
    restored: None, settle: Callable[[], None]
) -> None:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    walked_before = len(gc.get_objects(generation=2))
    settle()
    assert gc.get_freeze_count() > 0
    assert len(gc.get_objects(generation=2)) < walked_before / 10
    assert gc.get_threshold() == thresholds  # young collections stay short


def test_the_api_server_also_collects_young_objects_less_often(restored: None) -> None:
    server_cli._tune_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == 20_000
