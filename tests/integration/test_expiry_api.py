"""The miss-policy fields over HTTP: what the API takes, what it refuses (a 4xx naming the
field and its range), what it returns, and the expired status in the job list's filter."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import pytest

from jobs_server.store.postgres import PostgresJobStore
from tests.conftest import LiveServer
from tests.integration.requests import ACME, job


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as c:
        yield c


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_the_overrides_are_checked_and_returned(client, db, live_server):
    refused = [
        ({"miss_policy": "sometimes"}, 422, "miss_policy"),
        ({"miss_policy": "expire", "expire_grace_seconds": -1}, 422, "expire_grace_seconds"),
        (
            {"miss_policy": "expire", "expire_grace_seconds": 30 * 86_400 + 1},
            422,
            "expire_grace_seconds",
        ),
        ({"miss_policy": "expire", "expire_grace_seconds": "5"}, 422, "expire_grace_seconds"),
        ({"miss_policy": "expire", "expire_grace_seconds": False}, 422, "expire_grace_seconds"),
        ({"miss_policy": "run_late", "expire_grace_seconds": 5}, 422, "expire_grace_seconds"),
        # the use case runs late: a grace alone would do nothing
        ({"expire_grace_seconds": 5}, 400, "expire_grace_seconds"),
    ]
    for fields, status, named in refused:
        r = await client.post("/v1/jobs", json=job(**fields), headers=ACME)
        assert r.status_code == status, (fields, r.text)
        assert named in r.json()["error"]["message"], (fields, r.text)
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0

    r = await client.post(
        "/v1/jobs", json=job(miss_policy="expire", expire_grace_seconds=30), headers=ACME
    )
    assert r.status_code == 201, r.text
    created = r.json()["job"]
    assert _time(created["expires_at"]) == _time(created["deadline"]) + timedelta(seconds=30)
    r = await client.post("/v1/jobs", json=job(), headers=ACME)
    assert r.json()["job"]["expires_at"] is None  # the use case's policy: run late

    batch = {
        "jobs": [
            job(miss_policy="expire"),
            job(miss_policy="expire", expire_grace_seconds=-5),
        ]
    }
    r = await client.post("/v1/jobs/batch", json=batch, headers=ACME)
    assert r.status_code == 422 and "jobs.1.expire_grace_seconds" in r.json()["error"]["message"]
    r = await client.post("/v1/jobs/batch", json={"jobs": batch["jobs"][:1]}, headers=ACME)
    [item] = r.json()["results"]
    assert item["job"]["expires_at"] == item["job"]["deadline"]  # grace 0

    r = await client.get("/v1/jobs", params={"status": "expired"}, headers=ACME)
    assert r.status_code == 200 and r.json()["items"] == []
    await db.execute(
        "UPDATE jobs SET status = 'expired', finished_at = now() - interval '2 minutes',"
        " last_error = 'expired: its deadline passed' WHERE id = $1::uuid",
        created["id"],
    )
    r = await client.get("/v1/jobs", params={"status": "expired"}, headers=ACME)
    assert [j["id"] for j in r.json()["items"]] == [created["id"]]

    # the dashboard: the badge, the retry action, the policy, the reason, the rolled-up count
    await _dashboard_shows_it(live_server, created["id"])


async def _dashboard_shows_it(server: LiveServer, job_id: str) -> None:
    store = await PostgresJobStore.connect(server.database_url)
    try:
        rolled = await store.roll_up_finished(
            "default", use_cases=["notifications"], lag_seconds=0, max_window_seconds=7200
        )
        assert rolled == 1
    finally:
        await store.close()
    async with httpx.AsyncClient(base_url=server.url, headers=ACME, timeout=30) as ui:
        page = (await ui.get("/ui/jobs", params={"status": "expired"})).text
        assert 'class="status status-expired"' in page and f"/ui/jobs/{job_id}/retry" in page
        detail = (await ui.get(f"/ui/jobs/{job_id}")).text
        assert "expires at" in detail and "expired: its deadline passed" in detail
        overview = (await ui.get("/ui")).text
        found = re.findall(r'data-count="expired">([\d,]+)<', overview)
        assert found and int(found[0]) == 1
