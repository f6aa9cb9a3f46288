"""Error answers at the HTTP level: an unexpected error answers 500 in the envelope and keeps
the connection, undecodable bodies, methods a path does not serve, and Retry-After."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import httpx
import pytest

from jobs_schema import Job
from jobs_server.store.postgres import PostgresJobStore
from tests.conftest import LiveServer
from tests.integration.requests import ACME, TINY, job

BROKEN = UUID(int=0xBAD)


class _BrokenForOneJob(PostgresJobStore):
    """A real store whose read of one job id fails the way a bug would."""

    async def get_job(self, job_id: UUID, *, tenant: str | None) -> Job | None:
        if job_id == BROKEN:
            raise RuntimeError("a bug in the store")
        return await super().get_job(job_id, tenant=tenant)


@pytest.fixture
async def broken_store(database_url: str) -> AsyncIterator[PostgresJobStore]:
    store = await _BrokenForOneJob.connect(database_url, min_size=0, max_size=4)
    yield store
    await store.close()


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as c:
        yield c


def _local_address(response: httpx.Response) -> object:
    return response.extensions["network_stream"].get_extra_info("client_addr")


async def test_unexpected_error_answers_500_and_keeps_the_connection(start_server, broken_store):
    server = await start_server(app_options={"store": broken_store})
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as c:
        failed = await c.get(f"/v1/jobs/{BROKEN}", headers=ACME)
        assert failed.status_code == 500
        assert failed.json()["error"] == {
            "code": "internal_error",
            "message": "internal error",
            "details": {},
        }
        assert failed.headers.get("connection") != "close"
        after = await c.get(f"/v1/jobs/{uuid4()}", headers=ACME)
        assert after.status_code == 404
        assert _local_address(after) == _local_address(failed)


async def test_invalid_utf8_body_is_malformed_json(client, db):
    r = await client.post(
        "/v1/jobs",
        content=b'{"use_case": "notifications", "job_type": "\xff\xfe", "payload": {}}',
        headers=ACME | {"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "malformed_json"
    assert "UTF-8" in r.json()["error"]["message"]
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/v1/jobs", "GET, POST"),
        ("/v1/jobs/0b9d7a5e-3f0c-4d2a-9a61-4a8f3c2e1d10", "GET"),
        ("/v1/worker/outcomes", "POST"),
        ("/healthz", "GET"),
    ],
)
async def test_method_not_served_answers_405_with_allow(client, path, allowed):
    r = await client.request("TRACE", path, headers=ACME)
    assert r.status_code == 405
    assert r.headers["allow"] == allowed
    assert r.json()["error"]["code"] == "validation_error"
    assert allowed in r.json()["error"]["message"]


async def test_unknown_path_answers_404_in_the_envelope(client):
    r = await client.get("/v2/nothing", headers=ACME)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


async def test_quota_exceeded_says_when_to_retry(client):
    for _ in range(10):
        assert (await client.post("/v1/jobs", json=job(), headers=TINY)).status_code == 201
    r = await client.post("/v1/jobs", json=job(), headers=TINY)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "quota_exceeded"
    assert int(r.headers["retry-after"]) > 0
