"""Job ids: UUIDv7 stamped by the server's clock, ordered within a millisecond, and never the
same in a forked child as in its parent."""

from __future__ import annotations

import os
import sys
import warnings
from datetime import UTC, datetime, timedelta

import pytest

from jobs_server.clock import ManualClock
from jobs_server.service import JobIds


def test_ids_carry_the_clocks_millisecond_and_sort_by_creation():
    clock = ManualClock(datetime(2031, 5, 6, 7, 8, 9, 123000, tzinfo=UTC))
    ids = JobIds(clock)
    first = [ids.new() for _ in range(5000)]  # past the 4,096 of one millisecond
    assert first == sorted(first)
    assert len(set(first)) == len(first)
    assert all(i.version == 7 for i in first)
    assert first[0].int >> 80 == int(clock.now().timestamp() * 1000)
    clock.advance(timedelta(seconds=1))
    later = ids.new()
    assert later.int >> 80 == int(clock.now().timestamp() * 1000)
    assert later > first[-1]


@pytest.mark.skipif(sys.platform == "win32", reason="needs os.fork")
def test_a_forked_child_does_not_repeat_its_parents_ids():
    clock = ManualClock()  # a clock that stands still: only the random bits can tell them apart
    ids = JobIds(clock)
    ids.new()  # the parent holds random bytes for the next ids
    read, write = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns when other threads exist; none fork here
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child
        os.write(write, ids.new().bytes)
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert ids.new().bytes != child
