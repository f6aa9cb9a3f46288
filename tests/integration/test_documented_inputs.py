"""What the OpenAPI document says is valid, the server takes; what it takes, it stores. Each case
here is one the property-based test (test_fuzz.py) found, pinned down."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import LiveServer
from tests.integration.requests import ACME, WORKER, job


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as c:
        yield c


async def test_integers_are_json_schema_integers(client):
    """3.0 is the integer 3 in JSON Schema; true stays refused."""
    r = await client.post("/v1/jobs", json=job(priority=3.0, max_attempts=2.0), headers=ACME)
    assert r.status_code == 201, r.text
    assert (r.json()["job"]["priority"], r.json()["job"]["max_attempts"]) == (3, 2)
    r = await client.post("/v1/jobs", json=job(priority=True), headers=ACME)
    assert r.status_code == 422


async def test_an_attempt_past_postgres_integer_is_a_422(client):
    lease = {"job_id": str(uuid.uuid4()), "attempt": 2**31, "lease_token": str(uuid.uuid4())}
    r = await client.post("/v1/worker/release", json={"leases": [lease]}, headers=WORKER)
    assert r.status_code == 422, r.text
    assert "attempt" in r.json()["error"]["message"]


async def test_empty_filters_are_refused_alike_by_list_and_count(client):
    for path in ("/v1/jobs", "/v1/jobs/count"):
        r = await client.get(path, params={"job_type": ""}, headers=ACME)
        assert r.status_code == 422, (path, r.text)
        assert "job_type" in r.json()["error"]["message"]


async def test_deadline_and_tolerance_together_are_refused(client):
    body = job(deadline="2999-01-01T00:00:00Z", delay_tolerance_seconds=5)
    r = await client.post("/v1/jobs", json=body, headers=ACME)
    assert r.status_code == 422


async def test_a_result_that_is_a_list_is_stored(client, db):
    r = await client.post("/v1/jobs", json=job(), headers=ACME)
    job_id = uuid.UUID(r.json()["job"]["id"])
    lease = uuid.uuid4()
    await db.execute(
        "UPDATE jobs SET status = 'running', attempts = 1, lease_token = $2,"
        " lease_expires_at = now() + interval '1 minute' WHERE id = $1",
        job_id,
        lease,
    )
    report = {
        "job_id": str(job_id),
        "attempt": 1,
        "lease_token": str(lease),
        "outcome": "succeeded",
        "worker_id": "w1",
        "result": [1, ["two"], {"three": 3}],
    }
    r = await client.post("/v1/worker/outcomes", json={"reports": [report]}, headers=WORKER)
    assert r.status_code == 200, r.text
    assert r.json()["acks"][0]["applied"] is True
    stored = (await client.get(f"/v1/jobs/{job_id}", headers=ACME)).json()
    assert (stored["status"], stored["result"]) == ("succeeded", [1, ["two"], {"three": 3}])
