"""Uniqueness windows through the API, over real HTTP against real PostgreSQL, on the
server's injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from jobs_server.clock import ManualClock
from tests.integration.requests import ACME, job

HOUR = {"key": "report-7", "window": "enqueued", "seconds": 3600}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
async def client(start_server: Any, clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    server = await start_server(clock=clock)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        yield c


async def enqueue(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    return await client.post("/v1/jobs", json=job(**fields), headers=ACME)


async def test_unique_for_an_hour_after_enqueue(client, clock, db):
    r = await enqueue(client, unique=HOUR)
    assert r.status_code == 201, r.text
    first = r.json()["job"]
    assert first["dedup_key"] == "report-7"
    assert first["unique"] == {**HOUR, "states": None}
    await client.post(f"/v1/jobs/{first['id']}/cancel", headers=ACME)

    clock.advance(3599)
    dup = await enqueue(client, unique=HOUR)
    assert dup.status_code == 200, dup.text
    assert dup.json()["deduplicated"] is True
    assert (dup.json()["job"]["id"], dup.json()["job"]["status"]) == (first["id"], "cancelled")

    clock.advance(1)
    fresh = await enqueue(client, unique=HOUR)
    assert fresh.status_code == 201, fresh.text
    assert fresh.json()["job"]["id"] != first["id"]
    assert await db.fetchval("SELECT count(*) FROM jobs") == 2


async def test_unique_after_finishing_and_over_states(client, clock):
    finished = {"key": "f", "window": "finished", "seconds": 60}
    first = (await enqueue(client, unique=finished)).json()["job"]
    await client.post(f"/v1/jobs/{first['id']}/cancel", headers=ACME)
    clock.advance(59)
    assert (await enqueue(client, unique=finished)).json()["job"]["id"] == first["id"]
    clock.advance(1)
    assert (await enqueue(client, unique=finished)).status_code == 201

    states = {"key": "s", "window": "states", "states": ["pending", "running", "cancelled"]}
    held = (await enqueue(client, unique=states)).json()["job"]
    await client.post(f"/v1/jobs/{held['id']}/cancel", headers=ACME)
    clock.advance(86_400)
    dup = await enqueue(client, unique=states)
    assert (dup.status_code, dup.json()["job"]["id"]) == (200, held["id"])


async def test_the_rule_is_on_the_job_as_read(client):
    created = (await enqueue(client, unique=HOUR)).json()["job"]
    read = (await client.get(f"/v1/jobs/{created['id']}", headers=ACME)).json()
    assert read["unique"] == created["unique"]
    plain = (await enqueue(client, dedup_key="p")).json()["job"]
    assert (plain["dedup_key"], plain["unique"]) == ("p", None)
    active = (await enqueue(client, unique={"key": "a"})).json()["job"]
    assert (active["dedup_key"], active["unique"]) == ("a", None)  # as dedup_key alone


async def test_concurrent_enqueues_of_one_key_store_one(client, db):
    results = await asyncio.gather(*(enqueue(client, unique=HOUR) for _ in range(20)))
    assert sorted(r.status_code for r in results) == [200] * 19 + [201]
    assert len({r.json()["job"]["id"] for r in results}) == 1
    assert await db.fetchval("SELECT count(*) FROM jobs") == 1


async def test_a_batch_keeps_the_first_of_a_key(client, db):
    r = await client.post(
        "/v1/jobs/batch", json={"jobs": [job(unique=HOUR), job(unique=HOUR)]}, headers=ACME
    )
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert (first["deduplicated"], second["deduplicated"]) == (False, True)
    assert first["job"]["id"] == second["job"]["id"]
    assert await db.fetchval("SELECT count(*) FROM jobs") == 1


BAD_RULES = [
    ("dedup_key and unique", {"dedup_key": "k", "unique": {"key": "k"}}, "not both"),
    ("no key", {"unique": {"window": "active"}}, "unique.key"),
    ("empty key", {"unique": {"key": ""}}, "unique.key"),
    ("unknown window", {"unique": {"key": "k", "window": "forever"}}, "unique.window"),
    ("period without seconds", {"unique": {"key": "k", "window": "enqueued"}}, "unique.seconds"),
    (
        "finished without seconds",
        {"unique": {"key": "k", "window": "finished"}},
        "unique.seconds is required",
    ),
    ("seconds on active", {"unique": {"key": "k", "seconds": 60}}, "unique.seconds is taken"),
    (
        "zero seconds",
        {"unique": {"key": "k", "window": "enqueued", "seconds": 0}},
        "unique.seconds",
    ),
    (
        "seconds past a year",
        {"unique": {"key": "k", "window": "finished", "seconds": 366 * 86_400}},
        "unique.seconds",
    ),
    ("states without states", {"unique": {"key": "k", "window": "states"}}, "unique.states"),
    (
        "states on a period",
        {"unique": {"key": "k", "window": "enqueued", "seconds": 5, "states": ["pending"]}},
        "unique.states",
    ),
    (
        "states without running",
        {"unique": {"key": "k", "window": "states", "states": ["pending", "succeeded"]}},
        "must name 'pending' and 'running'",
    ),
    (
        "states of one",
        {"unique": {"key": "k", "window": "states", "states": ["pending"]}},
        "must name 'pending' and 'running'",
    ),
    (
        "a state twice",
        {"unique": {"key": "k", "window": "states", "states": ["pending", "running", "running"]}},
        "twice",
    ),
    (
        "unknown state",
        {"unique": {"key": "k", "window": "states", "states": ["pending", "running", "done"]}},
        "unique.states",
    ),
    ("unknown field", {"unique": {"key": "k", "for": 5}}, "unique.for"),
]


@pytest.mark.parametrize(("name", "fields", "says"), BAD_RULES, ids=[b[0] for b in BAD_RULES])
async def test_bad_rule_is_refused_naming_the_field(client, db, name, fields, says):
    r = await enqueue(client, **fields)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error"
    assert says in err["message"], err["message"]
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


@pytest.fixture
async def live(start_server: Any, clock: ManualClock) -> Any:
    return await start_server(clock=clock)


@pytest.mark.parametrize(
    ("fields", "reads"),
    [
        ({"dedup_key": "d"}, 'key <span class="mono">d</span>, while pending or running'),
        ({"unique": HOUR}, "while active, and for 60 min after its enqueue"),
        (
            {"unique": {"key": "f", "window": "finished", "seconds": 30}},
            "while active, and for 30 s after it finished",
        ),
        (
            {"unique": {"key": "s", "window": "states", "states": ["pending", "running", "dead"]}},
            "while pending, running or dead",
        ),
    ],
)
async def test_the_job_page_shows_the_rule(live, fields, reads):
    async with httpx.AsyncClient(base_url=live.url, timeout=30, headers={"Origin": live.url}) as c:
        job_id = (await c.post("/v1/jobs", json=job(**fields), headers=ACME)).json()["job"]["id"]
        login = await c.post("/ui/login", data={"token": "tok-acme", "next": "/ui/jobs"})
        assert login.status_code == 303, login.text
        page = await c.get(f"/ui/jobs/{job_id}")
    assert page.status_code == 200
    assert reads in page.text
