"""Pause and resume over real HTTP against real PostgreSQL, on a ManualClock: who may, what is
refused and how it says so, idempotency, and the state and history as stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from jobs_server.clock import ManualClock
from tests.conftest import StartServer
from tests.integration.requests import ACME, ADMIN, GLOBEX, READONLY, WORKER

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def client(start_server: StartServer, clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    server = await start_server(clock=clock)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
        yield c


async def test_an_admin_pauses_a_use_case_once_and_resumes_it(client, clock, db):
    r = await client.post(
        "/v1/pauses", json={"use_case": "notifications", "reason": "smtp down"}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "use_case": "notifications",
        "tenant": None,
        "paused": True,
        "changed": True,
        "changed_by": "admin",
        "changed_at": "2030-01-01T12:00:00Z",
        "reason": "smtp down",
    }
    clock.advance(30)
    again = await client.post("/v1/pauses", json={"use_case": "notifications"}, headers=ADMIN)
    assert again.status_code == 200
    assert again.json() == {**r.json(), "changed": False}  # the first pause stands
    clock.advance(30)
    resumed = await client.post(
        "/v1/pauses/resume", json={"use_case": "notifications"}, headers=ADMIN
    )
    assert resumed.status_code == 200
    body = resumed.json()
    assert (body["paused"], body["changed"], body["changed_at"]) == (
        False,
        True,
        "2030-01-01T12:01:00Z",
    )
    rows = await db.fetch("SELECT paused, changed_by FROM pause_history ORDER BY id")
    assert [tuple(row) for row in rows] == [(True, "admin"), (False, "admin")]


async def test_a_tenant_pauses_its_own_tenant_and_sees_what_stops_it(client):
    r = await client.post("/v1/pauses", json={"use_case": "labeling"}, headers=ACME)
    assert r.status_code == 200, r.text
    assert (r.json()["tenant"], r.json()["changed_by"]) == ("acme", "tenant:acme")
    await client.post("/v1/pauses", json={"tenant": "globex"}, headers=GLOBEX)
    await client.post("/v1/pauses", json={"use_case": "notifications"}, headers=ADMIN)
    mine = (await client.get("/v1/pauses", headers=ACME)).json()
    assert [(p["use_case"], p["tenant"]) for p in mine["pauses"]] == [
        ("labeling", "acme"),
        ("notifications", None),
    ]
    everything = (await client.get("/v1/pauses", headers=READONLY)).json()
    assert len(everything["pauses"]) == 3
    assert everything["history"][0]["use_case"] == "notifications"  # the latest first


@pytest.mark.parametrize(
    ("headers", "body", "status", "code", "names"),
    [
        (ADMIN, {}, 400, "validation_error", "use_case"),
        (ADMIN, {"use_case": "nope"}, 422, "unknown_use_case", "notifications"),
        (ADMIN, {"tenant": "nobody"}, 422, "unknown_tenant", "acme"),
        (ADMIN, {"use_case": "labeling", "color": "red"}, 422, "validation_error", "color"),
        (ADMIN, {"use_case": "x" * 201}, 422, "validation_error", "use_case"),
        (ADMIN, {"use_case": "labeling", "reason": "r" * 1001}, 422, "validation_error", "reason"),
        (ADMIN, {"tenant": "ac\u0000me"}, 422, "validation_error", "tenant"),
        (ACME, {"tenant": "globex"}, 403, "forbidden", "own tenant"),
        (READONLY, {"use_case": "labeling"}, 403, "forbidden", "read-only"),
        (WORKER, {"use_case": "labeling"}, 403, "forbidden", "worker"),
        ({}, {"use_case": "labeling"}, 401, "unauthorized", ""),
    ],
)
@pytest.mark.parametrize("path", ["/v1/pauses", "/v1/pauses/resume"])
async def test_what_is_refused_says_which_field_and_why(
    client, db, path, headers, body, status, code, names
):
    r = await client.post(path, json=body, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert names in r.text
    assert await db.fetchval("SELECT count(*) FROM pauses") == 0


async def test_resuming_what_was_never_paused_is_a_no_op(client, db):
    r = await client.post("/v1/pauses/resume", json={"tenant": "acme"}, headers=ACME)
    assert r.status_code == 200
    assert (r.json()["paused"], r.json()["changed"], r.json()["changed_by"]) == (
        False,
        False,
        None,
    )
    assert await db.fetchval("SELECT count(*) FROM pause_history") == 0
