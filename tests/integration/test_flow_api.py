"""GET /v1/use-cases/{use_case}/rate-keys over HTTP: who may read it, and its errors. The
state it shows is tested in tests/unit/test_flow_service.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import LiveServer
from tests.integration.requests import ACME, ADMIN, READONLY


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as c:
        yield c


async def test_admins_read_a_use_cases_rate_keys(client):
    for who in (ADMIN, READONLY):
        r = await client.get("/v1/use-cases/labeling/rate-keys", headers=who)
        assert r.status_code == 200, r.text
        assert r.json() == {"use_case": "labeling", "starts": None, "per_seconds": None, "keys": []}


async def test_a_tenant_token_an_unknown_use_case_and_a_bad_limit_are_refused(client):
    r = await client.get("/v1/use-cases/labeling/rate-keys", headers=ACME)
    assert r.status_code == 403, r.text
    r = await client.get("/v1/use-cases/nope/rate-keys", headers=ADMIN)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "unknown_use_case")
    for bad in ("0", "101", "x"):
        r = await client.get(
            "/v1/use-cases/labeling/rate-keys", params={"limit": bad}, headers=ADMIN
        )
        assert (r.status_code, r.json()["error"]["code"]) == (422, "validation_error"), r.text
        assert "query.limit" in r.json()["error"]["message"]
