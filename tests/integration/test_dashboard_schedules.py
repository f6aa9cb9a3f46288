"""The schedules page's Pause, Resume and Delete buttons over real HTTP: they do what the API
does (a tenant its own schedules, an admin any), behind the same CSRF and session checks as
the overview's pause buttons; a schedule from the config file is read-only."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from jobs_schema.schedules import MAX_SCHEDULE_PAGE
from tests.conftest import LiveServer, StartServer
from tests.integration.requests import ACME
from tests.integration.test_dashboard import browser, csrf_of

CONFIG = """
[schedules.nightly]
tenant = "acme"
cron = "30 2 * * *"
use_case = "notifications"
job_type = "notifications.send_email"
"""
HOURLY = {
    "name": "hourly",
    "interval_seconds": 3600,
    "use_case": "notifications",
    "job_type": "notifications.send_email",
}


@pytest.fixture
async def server(start_server: StartServer, tmp_path: Path) -> LiveServer:
    path = tmp_path / "jobs.toml"
    path.write_text(CONFIG)
    return await start_server(config_file=str(path))


@pytest.fixture
async def api(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        assert (await c.post("/v1/schedules", json=HOURLY, headers=ACME)).status_code == 201
        yield c


@pytest.fixture
async def sessions(server: LiveServer) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    clients = {
        name: await browser(server, f"tok-{name}")
        for name in ("acme", "globex", "admin", "readonly")
    }
    yield clients
    for c in clients.values():
        await c.aclose()


def row(html: str, tenant: str, name: str) -> str:
    found = re.search(rf'<tr data-schedule="{tenant}/{name}">(.*?)</tr>', html, re.S)
    assert found, f"no row for {tenant}/{name}"
    return found.group(1)


async def press(
    session: httpx.AsyncClient, action: str, name: str = "hourly", **extra: str
) -> httpx.Response:
    page = (await session.get("/ui/schedules")).text
    form = {"csrf": csrf_of(page), "name": name, "action": action, **extra}
    return await session.post("/ui/schedules", data=form)


async def state(api: httpx.AsyncClient) -> tuple[int, bool | None]:
    r = await api.get("/v1/schedules/hourly", headers=ACME)
    return r.status_code, r.json()["paused"] if r.status_code == 200 else None


async def test_a_tenants_buttons_pause_resume_and_delete_its_schedule(api, sessions):
    acme = sessions["acme"]
    page = (await acme.get("/ui/schedules")).text
    assert 'name="action" value="pause"' in row(page, "acme", "hourly")
    assert 'name="action" value="delete"' in row(page, "acme", "hourly")
    config_row = row(page, "acme", "nightly")
    assert "read-only" in config_row and "<form" not in config_row
    r = await press(acme, "pause", tenant="acme")
    assert r.status_code == 303 and r.headers["location"] == "/ui/schedules?done=paused"
    assert await state(api) == (200, True)
    page = (await acme.get(r.headers["location"])).text
    assert "Schedule paused." in page
    assert 'name="action" value="resume"' in row(page, "acme", "hourly")
    assert (await press(acme, "resume")).status_code == 303  # the tenant is the token's own
    assert await state(api) == (200, False)
    assert (await press(acme, "delete")).headers["location"] == "/ui/schedules?done=deleted"
    assert await state(api) == (404, None)


async def test_an_admin_acts_on_any_tenants_schedule_another_tenant_on_none(api, sessions):
    assert (await press(sessions["admin"], "pause", tenant="acme")).status_code == 303
    assert await state(api) == (200, True)
    for tenant in ({"tenant": "acme"}, {}):
        refused = await press(sessions["globex"], "resume", **tenant)
        assert refused.status_code == 404, refused.text
    missing = await press(sessions["admin"], "resume")  # an admin names the tenant
    assert missing.status_code == 400 and "tenant" in missing.text
    assert await state(api) == (200, True)


async def test_the_buttons_need_the_pages_csrf_token_a_writing_token_and_good_fields(api, sessions):
    admin = sessions["admin"]
    forged = await admin.post(
        "/ui/schedules",
        data={"csrf": "0" * 32, "name": "hourly", "tenant": "acme", "action": "pause"},
    )
    assert forged.status_code == 403
    page = (await sessions["readonly"].get("/ui/schedules")).text
    assert 'action="/ui/schedules"' not in page
    assert (await press(sessions["readonly"], "pause", tenant="acme")).status_code == 403
    config = await press(admin, "pause", name="nightly", tenant="acme")
    assert config.status_code == 409 and "config file" in config.text
    odd = await press(admin, "explode", tenant="acme")
    assert odd.status_code == 400 and "choose pause, resume or delete" in odd.text
    for name in ("", "x" * 201, "a\x00b"):
        bad = await press(admin, "pause", name=name, tenant="acme")
        assert bad.status_code == 422 and "name: " in bad.text, (name, bad.text)
    assert await state(api) == (200, False)


async def test_the_page_lists_more_schedules_than_a_page_holds_with_a_link_to_the_rest(
    api, sessions, server
):
    conn = await asyncpg.connect(server.database_url)
    try:  # copies of `hourly`: with it and the config file's, a page and two more
        await conn.execute(
            "INSERT INTO schedules SELECT (jsonb_populate_record(s, "
            "jsonb_build_object('name', 'fill-' || lpad(g::text, 4, '0')))).* "
            "FROM schedules s, generate_series(1, $1) g "
            "WHERE (s.tenant, s.name) = ('acme', 'hourly')",
            MAX_SCHEDULE_PAGE,
        )
    finally:
        await conn.close()
    acme = sessions["acme"]
    first = (await acme.get("/ui/schedules")).text
    assert first.count("<tr data-schedule=") == MAX_SCHEDULE_PAGE
    more = re.search(r'rel="next" href="([^"]+)"', first)
    assert more, "no link to the next page"
    rest = (await acme.get(html.unescape(more[1]))).text
    assert re.findall(r'<tr data-schedule="acme/([^"]+)">', rest) == ["hourly", "nightly"]
    assert 'rel="next"' not in rest and "« First" in rest
    bad = await acme.get("/ui/schedules", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and "next_cursor" in bad.text
