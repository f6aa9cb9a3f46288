"""The webhooks page over real HTTP: a tenant sees its subscriptions and their latest
deliveries, subscribes a URL (its secret shown once) and deletes one, behind the same CSRF and
session checks as every dashboard form; another tenant sees none of it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, StartServer
from tests.integration.requests import ACME
from tests.integration.test_dashboard import browser, csrf_of


@pytest.fixture
async def server(start_server: StartServer) -> LiveServer:
    return await start_server(webhooks=True, webhooks_allowed_networks="127.0.0.0/8")


@pytest.fixture
async def sessions(server: LiveServer) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    clients = {name: await browser(server, f"tok-{name}") for name in ("acme", "globex")}
    yield clients
    for c in clients.values():
        await c.aclose()


async def subscribe(session: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    page = (await session.get("/ui/webhooks")).text
    form: list[tuple[str, str]] = [("csrf", csrf_of(page)), ("url", "http://127.0.0.1:9/h")]
    form += [("event_types", "dead"), ("event_types", "expired")]
    form = [(k, v) for k, v in form if k not in fields] + list(fields.items())
    body = httpx.QueryParams(form)
    return await session.post(
        "/ui/webhooks",
        content=str(body).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


async def test_a_tenant_subscribes_sees_and_deletes_its_webhook(server, sessions):
    acme, globex = sessions["acme"], sessions["globex"]
    created = await subscribe(acme, description="ops")
    assert created.status_code == 201, created.text
    secret = re.search(r'<code class="secret">(whsec_[A-Za-z0-9_-]+)</code>', created.text)
    assert secret, created.text
    async with httpx.AsyncClient(base_url=server.url) as api:
        [hook] = (await api.get("/v1/webhooks", headers=ACME)).json()["items"]
    assert hook["event_types"] == ["dead", "expired"] and hook["description"] == "ops"
    page = (await acme.get("/ui/webhooks")).text
    assert f'data-webhook="{hook["id"]}"' in page
    assert secret.group(1) not in page  # shown once
    assert hook["id"] not in (await globex.get("/ui/webhooks")).text

    # another tenant's Delete is a 404 and changes nothing; a form without the token, a 403
    form = {"csrf": csrf_of((await globex.get("/ui/webhooks")).text)}
    gone = await globex.post(f"/ui/webhooks/{hook['id']}/delete", data=form)
    assert gone.status_code == 404
    forged = await acme.post(f"/ui/webhooks/{hook['id']}/delete", data={"csrf": "nope"})
    assert forged.status_code == 403
    form = {"csrf": csrf_of(page)}
    deleted = await acme.post(f"/ui/webhooks/{hook['id']}/delete", data=form)
    assert deleted.status_code == 303
    assert "Webhook deleted." in (await acme.get(deleted.headers["location"])).text
    async with httpx.AsyncClient(base_url=server.url) as api:
        assert (await api.get("/v1/webhooks", headers=ACME)).json()["items"] == []


async def test_a_bad_subscription_is_an_error_page_and_stores_nothing(server, sessions):
    acme = sessions["acme"]
    bad = await subscribe(acme, url="ftp://example.com/")
    assert bad.status_code == 422 and "http or https" in bad.text
    private = await subscribe(acme, url="http://10.0.0.1/")
    assert private.status_code == 400 and "private address" in private.text
    async with httpx.AsyncClient(base_url=server.url) as api:
        assert (await api.get("/v1/webhooks", headers=ACME)).json()["items"] == []
