"""The overview's Pause and Resume buttons over real HTTP: they pause what the API would (the
use case for an admin, the tenant's own jobs in it for a tenant), behind the CSRF check."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import LiveServer
from tests.integration.requests import ADMIN
from tests.integration.test_dashboard import browser, csrf_of


@pytest.fixture
async def api(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as c:
        yield c


@pytest.fixture
async def sessions(live_server: LiveServer) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    clients = {
        "acme": await browser(live_server, "tok-acme"),
        "admin": await browser(live_server, "tok-admin"),
        "readonly": await browser(live_server, "tok-readonly"),
    }
    yield clients
    for c in clients.values():
        await c.aclose()


def card(html: str, use_case: str) -> str:
    found = re.search(
        rf'<section class="card usecase" id="uc-{use_case}">(.*?)</section>', html, re.S
    )
    assert found, f"no card for {use_case}"
    return found.group(1)


async def press(session: httpx.AsyncClient, use_case: str, action: str, **extra: str):
    page = (await session.get("/ui/")).text
    form = {"csrf": csrf_of(page), "use_case": use_case, "action": action, **extra}
    return await session.post("/ui/pauses", data=form)


async def paused(api: httpx.AsyncClient) -> list[tuple[str | None, str | None]]:
    r = await api.get("/v1/pauses", headers=ADMIN)
    return [(p["use_case"], p["tenant"]) for p in r.json()["pauses"]]


async def test_an_admins_button_pauses_and_resumes_the_use_case(api, sessions):
    admin = sessions["admin"]
    before = card((await admin.get("/ui/")).text, "labeling")
    assert 'name="action" value="pause"' in before and 'data-paused="no"' in before
    r = await press(admin, "labeling", "pause", reason="reindex")
    assert r.status_code == 303 and r.headers["location"] == "/ui/#uc-labeling"
    assert await paused(api) == [("labeling", None)]
    after = card((await admin.get("/ui/")).text, "labeling")
    assert 'data-paused="yes"' in after and "by admin" in after and "reindex" in after
    assert 'name="action" value="resume"' in after
    assert 'data-paused="no"' in card((await admin.get("/ui/")).text, "notifications")
    assert (await press(admin, "labeling", "resume")).status_code == 303
    assert await paused(api) == []


async def test_a_tenants_button_pauses_its_own_jobs_only(api, sessions):
    r = await press(sessions["acme"], "notifications", "pause")
    assert r.status_code == 303
    assert await paused(api) == [("notifications", "acme")]
    html = card((await sessions["acme"].get("/ui/")).text, "notifications")
    assert "for tenant acme" in html and "Resume my jobs" in html


async def test_the_button_needs_the_pages_csrf_token_and_a_writing_token(api, sessions):
    refused = await sessions["admin"].post(
        "/ui/pauses", data={"csrf": "0" * 32, "use_case": "labeling", "action": "pause"}
    )
    assert refused.status_code == 403
    page = (await sessions["readonly"].get("/ui/")).text
    assert 'action="/ui/pauses"' not in page
    assert (await press(sessions["readonly"], "labeling", "pause")).status_code == 403
    assert await paused(api) == []


async def test_an_unknown_use_case_or_action_is_refused_with_its_reason(api, sessions):
    unknown = await press(sessions["admin"], "nope", "pause")
    assert unknown.status_code == 422 and "unknown use case" in unknown.text
    odd = await press(sessions["admin"], "labeling", "explode")
    assert odd.status_code == 400 and "choose pause or resume" in odd.text
    assert await paused(api) == []
