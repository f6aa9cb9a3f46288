"""GET /v1/use-cases/{use_case}/rate-keys and the dashboard's flow limits over HTTP: who may
read them, the errors, and a key's state after a claim (in detail: test_flow_service.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from jobs_server.store.base import LeaderLease
from jobs_server.store.postgres import PostgresJobStore
from tests.conftest import USE_CASES, LiveServer
from tests.integration.requests import ACME, ADMIN, READONLY, job


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


METERED = {
    "queue": "metered",
    "capacity": 50,
    "concurrency_limit_per_key": 3,
    "rate_limit": {"starts": 2, "per_seconds": 60},
}


async def test_the_api_and_the_dashboard_show_a_rate_keys_state(start_server):
    server = await start_server(use_cases={**USE_CASES, "metered": METERED})
    store = await PostgresJobStore.connect(server.database_url, min_size=1, max_size=2)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            r = await client.post(
                "/v1/jobs/batch",
                json={
                    "jobs": [
                        job(
                            use_case="metered",
                            job_type="m",
                            rate_key="api-eu",
                            concurrency_key="acct-1",
                        )
                        for _ in range(5)
                    ]
                },
                headers=ACME,
            )
            assert r.status_code == 200, r.text
            first = r.json()["results"][0]["job"]
            epoch = await store.acquire_leadership("main", "test", ttl=60)
            assert epoch is not None
            uc = server.settings.jobs_config().use_cases["metered"]
            claimed = await store.claim_due_jobs(
                "metered",
                capacity=50,
                limit=10,
                lease_seconds=30,
                leader=LeaderLease("main", "test", epoch),
                per_tenant_cap=None,
                per_key_cap=uc.concurrency_limit_per_key,
                rate_limit=uc.rate_limit,
            )
            assert len(claimed) == 2
            r = await client.get("/v1/use-cases/metered/rate-keys", headers=ADMIN)
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["starts"], body["per_seconds"]) == (2, 60)
            [key] = body["keys"]
            assert (key["rate_key"], key["started"], key["waiting"], key["throttled"]) == (
                "api-eu",
                2,
                3,
                3,
            )
            html = (await client.get("/ui", headers=ADMIN)).text
            assert "at most 3 running per concurrency key" in html
            assert 'data-count="throttled">3<' in html and "api-eu" in html
            tenant_html = (await client.get("/ui", headers=ACME)).text
            assert "at most 2 / 60 s starts per rate key" in tenant_html
            assert "api-eu" not in tenant_html  # keys span tenants: admins only
            page = (await client.get(f"/ui/jobs/{first['id']}", headers=ACME)).text
            assert "acct-1" in page and "api-eu" in page
    finally:
        await store.close()
