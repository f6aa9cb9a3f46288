"""The schedules API over real HTTP against real PostgreSQL: tenant scoping, the config
file's schedules read-only, and every bad input answered with the field and the fix."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from jobs_schema.schedules import MAX_SCHEDULES_PER_TENANT
from tests.conftest import LiveServer, StartServer
from tests.integration.requests import ACME, ADMIN, GLOBEX, READONLY

CONFIG = """
[schedules.nightly]
tenant = "acme"
cron = "30 2 * * *"
timezone = "America/New_York"
use_case = "notifications"
job_type = "notifications.send_email"
"""


@pytest.fixture
async def server(start_server: StartServer, tmp_path: Path) -> LiveServer:
    path = tmp_path / "jobs.toml"
    path.write_text(CONFIG)
    return await start_server(config_file=str(path))


@pytest.fixture
async def client(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        yield c


def body(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "hourly",
        "cron": "0 * * * *",
        "use_case": "notifications",
        "job_type": "notifications.send_email",
        "payload": {"to": "a@example.com"},
    }
    return {k: v for k, v in (values | overrides).items() if v is not None}


async def every_schedule(client: httpx.AsyncClient, headers: dict[str, str]) -> list[Any]:
    """The list's pages, followed to the end."""
    items: list[Any] = []
    cursor = None
    while True:
        params = {"cursor": cursor} if cursor else {}
        page = (await client.get("/v1/schedules", params=params, headers=headers)).json()
        items += page["items"]
        if (cursor := page["next_cursor"]) is None:
            return items


async def test_create_read_pause_resume_delete(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/schedules", json=body(), headers=ACME)
    assert r.status_code == 201, r.text
    created = r.json()
    assert (created["tenant"], created["source"], created["paused"]) == ("acme", "api", False)
    assert created["next_run_at"] is not None and created["last_run_at"] is None
    assert (await client.get("/v1/schedules/hourly", headers=ACME)).json() == created
    r = await client.post("/v1/schedules", json=body(), headers=ACME)
    assert r.status_code == 409 and "already" in r.json()["error"]["message"]
    paused = (await client.post("/v1/schedules/hourly/pause", headers=ACME)).json()
    assert paused["paused"] is True and paused["next_run_at"] is None
    resumed = (await client.post("/v1/schedules/hourly/resume", headers=ACME)).json()
    assert resumed["paused"] is False and resumed["next_run_at"] is not None
    assert (await client.delete("/v1/schedules/hourly", headers=ACME)).status_code == 204
    assert (await client.get("/v1/schedules/hourly", headers=ACME)).status_code == 404


async def test_a_tenant_sees_and_manages_its_own(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/schedules", json=body(), headers=ACME)).status_code == 201
    names = [s["name"] for s in (await client.get("/v1/schedules", headers=ACME)).json()["items"]]
    assert names == ["hourly", "nightly"]
    assert (await client.get("/v1/schedules", headers=GLOBEX)).json()["items"] == []
    r = await client.get("/v1/schedules", params={"tenant": "acme"}, headers=GLOBEX)
    assert r.json()["items"] == []
    for method, path in [
        ("GET", "/v1/schedules/hourly"),
        ("POST", "/v1/schedules/hourly/pause"),
        ("DELETE", "/v1/schedules/hourly"),
    ]:
        r = await client.request(method, path, headers=GLOBEX)
        assert r.status_code == 404, (method, path)
    # an admin names the tenant; the read-only admin reads but does not write
    r = await client.get("/v1/schedules/hourly", params={"tenant": "acme"}, headers=ADMIN)
    assert r.status_code == 200
    assert (await client.get("/v1/schedules/hourly", headers=ADMIN)).status_code == 400
    r = await client.post("/v1/schedules/hourly/pause", params={"tenant": "acme"}, headers=READONLY)
    assert r.status_code == 403
    r = await client.post("/v1/schedules", json=body(name="x"), headers=ADMIN)
    assert r.status_code == 400 and "tenant's token" in r.json()["error"]["message"]


async def test_a_tenant_has_at_most_the_limit_of_schedules(
    client: httpx.AsyncClient, server: LiveServer
) -> None:
    """Past MAX_SCHEDULES_PER_TENANT, a creation is refused with 409 and stores nothing; the
    config file's schedule (acme's `nightly`) does not count, and another tenant is not held."""
    assert (await client.post("/v1/schedules", json=body(), headers=ACME)).status_code == 201
    conn = await asyncpg.connect(server.database_url)
    try:  # the rest of the limit, copies of the first, in one statement
        await conn.execute(
            "INSERT INTO schedules SELECT (jsonb_populate_record(s, "
            "jsonb_build_object('name', 'fill-' || g))).* FROM schedules s, "
            "generate_series(2, $1) g WHERE (s.tenant, s.name) = ('acme', 'hourly')",
            MAX_SCHEDULES_PER_TENANT,
        )
    finally:
        await conn.close()
    r = await client.post("/v1/schedules", json=body(name="one-more"), headers=ACME)
    assert r.status_code == 409, r.text
    message = r.json()["error"]["message"]
    assert f"{MAX_SCHEDULES_PER_TENANT} schedules" in message and "delete one" in message
    items = await every_schedule(client, ACME)
    assert [i["source"] for i in items].count("api") == MAX_SCHEDULES_PER_TENANT
    assert "one-more" not in {i["name"] for i in items} and "nightly" in {i["name"] for i in items}
    assert (await client.post("/v1/schedules", json=body(), headers=GLOBEX)).status_code == 201
    assert (await client.delete("/v1/schedules/fill-2", headers=ACME)).status_code == 204
    r = await client.post("/v1/schedules", json=body(name="one-more"), headers=ACME)
    assert r.status_code == 201, r.text


async def test_the_list_comes_a_page_at_a_time(client: httpx.AsyncClient) -> None:
    for name in ("c", "a", "b", "d"):
        r = await client.post("/v1/schedules", json=body(name=name), headers=ACME)
        assert r.status_code == 201, r.text
    names, cursor, pages = [], None, 0
    while True:
        params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        r = await client.get("/v1/schedules", params=params, headers=ACME)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 3
        names += [s["name"] for s in page["items"]]
        pages += 1
        if (cursor := page["next_cursor"]) is None:
            break
    assert (names, pages) == (["a", "b", "c", "d", "nightly"], 2)
    everyone = (await client.get("/v1/schedules", params={"limit": "2"}, headers=ADMIN)).json()
    assert [s["name"] for s in everyone["items"]] == ["a", "b"] and everyone["next_cursor"]
    nul = base64.urlsafe_b64encode(b'["acme", "\\u0000"]').decode()
    surrogate = base64.urlsafe_b64encode(b'["acme", "\\ud800"]').decode()
    # not base64 JSON; one value; {}; a NUL and an unpaired surrogate the store cannot take
    for bad in ("not-a-cursor", "WyJhY21lIl0=", "e30=", nul, surrogate):
        r = await client.get("/v1/schedules", params={"cursor": bad}, headers=ACME)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["details"]["field"] == "cursor"
        assert "next_cursor" in r.json()["error"]["message"]
    for limit in ("0", "1001", "2.5", "true"):
        r = await client.get("/v1/schedules", params={"limit": limit}, headers=ACME)
        assert r.status_code == 422, (limit, r.text)


async def test_config_file_schedules_are_read_only(client: httpx.AsyncClient) -> None:
    got = (await client.get("/v1/schedules/nightly", headers=ACME)).json()
    assert (got["source"], got["timezone"], got["cron"]) == (
        "config",
        "America/New_York",
        "30 2 * * *",
    )
    for method, path in [
        ("POST", "/v1/schedules/nightly/pause"),
        ("POST", "/v1/schedules/nightly/resume"),
        ("DELETE", "/v1/schedules/nightly"),
    ]:
        r = await client.request(method, path, headers=ACME)
        assert r.status_code == 409, (method, path)
        assert "config file" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("overrides", "status", "says"),
    [
        ({"cron": "61 * * * *"}, 400, "cron: "),
        ({"cron": "every day"}, 400, "cron: "),
        ({"timezone": "Mars/Olympus"}, 400, "unknown timezone 'Mars/Olympus'"),
        ({"timezone": "../../etc/passwd"}, 400, "unknown timezone"),
        ({"cron": None}, 422, "exactly one of cron"),
        ({"interval_seconds": 60}, 422, "exactly one of cron"),
        ({"cron": None, "interval_seconds": 0}, 422, "greater than or equal to 1"),
        ({"cron": None, "interval_seconds": -5}, 422, "greater than or equal to 1"),
        ({"cron": None, "interval_seconds": 1.5}, 422, "interval_seconds"),
        ({"use_case": "nope"}, 422, "unknown use case 'nope'"),
        ({"job_type": "notifications.nope"}, 422, "not allowed in use case"),
        ({"missed": "all"}, 422, "missed"),
        ({"name": ""}, 422, "name"),
    ],
)
async def test_bad_input_is_refused_with_the_field(
    client: httpx.AsyncClient, overrides: dict[str, Any], status: int, says: str
) -> None:
    values = body() | overrides
    sent = {k: v for k, v in values.items() if v is not None}
    r = await client.post("/v1/schedules", json=sent, headers=ACME)
    assert r.status_code == status, r.text
    assert says in r.text


async def test_the_dashboard_lists_schedules_with_their_last_and_next_run(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post("/v1/schedules", json=body(), headers=ACME)).status_code == 201
    await client.post("/v1/schedules/hourly/pause", headers=ACME)
    r = await client.get("/ui/schedules", headers=ACME)
    assert r.status_code == 200
    assert 'data-schedule="acme/nightly"' in r.text and 'data-schedule="acme/hourly"' in r.text
    assert "30 2 * * *" in r.text and "America/New_York" in r.text and "paused" in r.text
    assert 'href="/ui/schedules" aria-current="page"' in r.text
    r = await client.get("/ui/schedules", headers=GLOBEX)
    assert r.status_code == 200 and "data-schedule=" not in r.text
    r = await client.get("/ui/schedules", headers=ADMIN)
    assert 'data-schedule="acme/nightly"' in r.text


async def test_a_server_with_config_schedules_starts_on_an_unmigrated_database(
    start_server: StartServer, empty_database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text(CONFIG)
    server = await start_server(database_url=empty_database_url, config_file=str(path))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 503
