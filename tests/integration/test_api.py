"""The producer API over real HTTP against real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from jobs_schema import SERVER_TIME_HEADER
from jobs_server.app import JobsServer
from jobs_server.clock import ManualClock
from jobs_server.store.migrations import available_migrations, migrate
from tests.conftest import LiveServer, make_settings
from tests.integration.proxy import start_database_proxy
from tests.integration.requests import ACME, GLOBEX, TINY, job


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as c:
        yield c


async def test_enqueue_applies_default_tolerance_and_reads_back(client, live_server):
    run_at = datetime.now(UTC) + timedelta(minutes=5)
    r = await client.post("/v1/jobs", json=job(run_at=run_at.isoformat(), priority=7), headers=ACME)
    assert r.status_code == 201, r.text
    created = r.json()["job"]
    assert created["tenant"] == "acme"
    assert created["status"] == "pending"
    assert created["priority"] == 7
    assert created["max_attempts"] == 3
    deadline = datetime.fromisoformat(created["deadline"])
    assert deadline - datetime.fromisoformat(created["run_at"]) == timedelta(seconds=60)
    r = await client.get(f"/v1/jobs/{created['id']}", headers=ACME)
    assert r.status_code == 200
    assert r.json()["history"] == []
    assert r.json()["payload"] == {"to": "a@example.com"}


async def test_explicit_deadline_and_tolerance(client):
    r = await client.post("/v1/jobs", json=job(delay_tolerance_seconds=5), headers=ACME)
    j = r.json()["job"]
    assert datetime.fromisoformat(j["deadline"]) - datetime.fromisoformat(j["run_at"]) == timedelta(
        seconds=5
    )
    deadline = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    r = await client.post("/v1/jobs", json=job(deadline=deadline.isoformat()), headers=ACME)
    assert datetime.fromisoformat(r.json()["job"]["deadline"]) == deadline


async def test_enqueue_reads_the_servers_clock(start_server, db):
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0) + timedelta(days=1))
    server = await start_server(clock=clock)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        r = await c.post("/v1/jobs", json=job(delay_tolerance_seconds=5), headers=ACME)
        assert r.status_code == 201, r.text
        late = job(deadline=(clock.now() - timedelta(seconds=1)).isoformat())
        refused = await c.post("/v1/jobs", json=late, headers=ACME)
        assert refused.status_code == 400  # in the past by the clock, not by the host
    # every answer, an error too, carries the server's clock for workers to read leases by
    for answer in (r, refused):
        assert float(answer.headers[SERVER_TIME_HEADER]) == clock.now().timestamp()
    j = r.json()["job"]
    # run_at, deadline and the stored stamps: the clock's, a day off the host's
    assert datetime.fromisoformat(j["run_at"]) == clock.now()
    assert datetime.fromisoformat(j["deadline"]) == clock.now() + timedelta(seconds=5)
    row = await db.fetchrow("SELECT created_at, updated_at, id FROM jobs")
    assert row["created_at"] == row["updated_at"] == clock.now()
    # the id's time part too: created-at ranges still map to id ranges
    assert row["id"].int >> 80 == int(clock.now().timestamp() * 1000)


async def test_quota_holds_under_concurrent_enqueues(client, db):
    results = await asyncio.gather(
        *(client.post("/v1/jobs", json=job(payload={"i": i}), headers=TINY) for i in range(50))
    )
    codes = sorted(r.status_code for r in results)
    assert codes.count(201) == 10
    assert codes.count(429) == 40
    refused = next(r for r in results if r.status_code == 429).json()["error"]
    assert refused["code"] == "quota_exceeded"
    assert "quota of 10" in refused["message"]
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE tenant = 'tiny'") == 10
    assert await db.fetchval("SELECT active FROM tenant_usage WHERE tenant = 'tiny'") == 10


async def test_quota_frees_when_jobs_finish(client, db):
    ids = [
        (await client.post("/v1/jobs", json=job(payload={"i": i}), headers=TINY)).json()["job"][
            "id"
        ]
        for i in range(10)
    ]
    assert (await client.post("/v1/jobs", json=job(), headers=TINY)).status_code == 429
    assert (await client.post(f"/v1/jobs/{ids[0]}/cancel", headers=TINY)).status_code == 200
    assert (await client.post("/v1/jobs", json=job(), headers=TINY)).status_code == 201


async def test_dedup_under_concurrency_returns_one_job(client, db):
    results = await asyncio.gather(
        *(client.post("/v1/jobs", json=job(dedup_key="order-42"), headers=ACME) for _ in range(20))
    )
    assert sorted(r.status_code for r in results) == [200] * 19 + [201]
    ids = {r.json()["job"]["id"] for r in results}
    assert len(ids) == 1
    assert sum(r.json()["deduplicated"] for r in results) == 19
    assert await db.fetchval("SELECT count(*) FROM jobs") == 1
    # another tenant's same key is its own job
    other = await client.post("/v1/jobs", json=job(dedup_key="order-42"), headers=GLOBEX)
    assert other.status_code == 201
    assert other.json()["job"]["id"] not in ids


async def test_dedup_key_is_free_again_after_the_job_finishes(client):
    first = (await client.post("/v1/jobs", json=job(dedup_key="k"), headers=ACME)).json()["job"]
    await client.post(f"/v1/jobs/{first['id']}/cancel", headers=ACME)
    again = await client.post("/v1/jobs", json=job(dedup_key="k"), headers=ACME)
    assert again.status_code == 201
    assert again.json()["job"]["id"] != first["id"]


async def test_tenant_cannot_see_or_touch_another_tenants_job(client):
    theirs = (await client.post("/v1/jobs", json=job(), headers=GLOBEX)).json()["job"]
    mine = (await client.post("/v1/jobs", json=job(), headers=ACME)).json()["job"]
    r = await client.get(f"/v1/jobs/{theirs['id']}", headers=ACME)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    assert (await client.post(f"/v1/jobs/{theirs['id']}/cancel", headers=ACME)).status_code == 404
    listed = (await client.get("/v1/jobs", headers=ACME)).json()["items"]
    assert [j["id"] for j in listed] == [mine["id"]]
    assert (await client.get("/v1/jobs?tenant=globex", headers=ACME)).json()["items"] == []
    # the job is untouched, and the admin sees both
    admin = {"Authorization": "Bearer tok-admin"}
    assert (await client.get(f"/v1/jobs/{theirs['id']}", headers=admin)).json()[
        "status"
    ] == "pending"
    assert len((await client.get("/v1/jobs", headers=admin)).json()["items"]) == 2


async def test_tokens_and_roles(client):
    assert (await client.get("/v1/jobs")).status_code == 401
    r = await client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    worker = {"Authorization": "Bearer tok-worker"}
    assert (await client.get("/v1/jobs", headers=worker)).status_code == 403
    readonly = {"Authorization": "Bearer tok-readonly"}
    assert (await client.get("/v1/jobs", headers=readonly)).status_code == 200
    r = await client.post("/v1/jobs", json=job(), headers=readonly)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"


async def test_list_filters_and_keyset_pagination(client):
    for i in range(7):
        await client.post("/v1/jobs", json=job(payload={"i": i}), headers=ACME)
    for _ in range(3):
        await client.post("/v1/jobs", json=job(use_case="labeling", job_type="t"), headers=ACME)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, "use_case": "notifications"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/jobs", params=params, headers=ACME)).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 == len(set(seen))
    assert seen == sorted(seen, reverse=True)
    by_type = (await client.get("/v1/jobs", params={"job_type": "t"}, headers=ACME)).json()
    assert len(by_type["items"]) == 3
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    later = await client.get("/v1/jobs", params={"created_after": future}, headers=ACME)
    assert later.json()["items"] == []
    cancelled = await client.get("/v1/jobs", params={"status": "cancelled"}, headers=ACME)
    assert cancelled.json()["items"] == []


async def test_cancel_pending_then_conflict(client):
    j = (await client.post("/v1/jobs", json=job(), headers=ACME)).json()["job"]
    r = await client.post(f"/v1/jobs/{j['id']}/cancel", headers=ACME)
    assert r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    again = await client.post(f"/v1/jobs/{j['id']}/cancel", headers=ACME)
    assert again.status_code == 409
    assert "already cancelled" in again.json()["error"]["message"]


async def test_batch_of_1000_in_one_call(client, db):
    jobs = [job(payload={"i": i}, dedup_key=f"b{i % 900}") for i in range(1000)]
    r = await client.post("/v1/jobs/batch", json={"jobs": jobs}, headers=ACME)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == list(range(1000))
    assert sum(x["deduplicated"] for x in results) == 100
    assert results[900]["job"]["id"] == results[0]["job"]["id"]
    assert await db.fetchval("SELECT count(*) FROM jobs") == 900
    assert await db.fetchval("SELECT active FROM tenant_usage WHERE tenant = 'acme'") == 900


async def test_batch_reports_quota_per_item(client, db):
    r = await client.post(
        "/v1/jobs/batch", json={"jobs": [job(payload={"i": i}) for i in range(15)]}, headers=TINY
    )
    results = r.json()["results"]
    assert [x["job"] is not None for x in results] == [True] * 10 + [False] * 5
    assert {x["error"]["code"] for x in results[10:]} == {"quota_exceeded"}
    assert await db.fetchval("SELECT count(*) FROM jobs") == 10


async def test_idempotency_key(client, db):
    key = {"Idempotency-Key": "req-1"} | ACME
    a = await client.post("/v1/jobs", json=job(), headers=key)
    b = await client.post("/v1/jobs", json=job(), headers=key)
    assert a.status_code == b.status_code == 201
    assert a.json()["job"]["id"] == b.json()["job"]["id"]
    c = await client.post("/v1/jobs", json=job(priority=3), headers=key)
    assert c.status_code == 409
    assert c.json()["error"]["code"] == "idempotency_key_mismatch"
    same = await asyncio.gather(
        *(
            client.post(
                "/v1/jobs/batch", json={"jobs": [job()]}, headers=ACME | {"Idempotency-Key": "b"}
            )
            for _ in range(10)
        )
    )
    assert len({r.json()["results"][0]["job"]["id"] for r in same}) == 1
    assert await db.fetchval("SELECT count(*) FROM jobs") == 2


BIG = "x" * (300 * 1024)

BAD_INPUTS = [
    ("wrong type", job(priority="high"), 422, "validation_error", "priority"),
    ("payload not an object", job(payload=[1, 2]), 422, "validation_error", "payload"),
    ("unknown use case", job(use_case="nope"), 422, "unknown_use_case", "unknown use case 'nope'"),
    ("unknown job type", job(job_type="x.y"), 422, "unknown_job_type", "not allowed"),
    (
        "negative tolerance",
        job(delay_tolerance_seconds=-1),
        422,
        "validation_error",
        "greater than",
    ),
    (
        "deadline before run_at",
        job(run_at="2030-01-02T00:00:00Z", deadline="2030-01-01T00:00:00Z"),
        422,
        "validation_error",
        "deadline is before run_at",
    ),
    ("deadline in the past", job(deadline="2001-01-01T00:00:00Z"), 400, "validation_error", "past"),
    ("naive datetime", job(run_at="2030-01-01T00:00:00"), 422, "validation_error", "timezone"),
    ("client-set tenant", job(tenant="globex"), 422, "validation_error", "tenant"),
    ("client-set status", job(status="succeeded"), 422, "validation_error", "status"),
    ("client-set attempts", job(attempts=3), 422, "validation_error", "attempts"),
    ("client-set lease", job(lease_token="x"), 422, "validation_error", "lease_token"),
    ("oversized payload", job(payload={"x": BIG}), 413, "payload_too_large", "larger than"),
]


@pytest.mark.parametrize(
    ("name", "body", "status", "code", "says"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
async def test_bad_input_is_refused_and_stores_nothing(client, db, name, body, status, code, says):
    r = await client.post("/v1/jobs", json=body, headers=ACME)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert says in err["message"]
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_malformed_json(client, db):
    r = await client.post(
        "/v1/jobs", content=b'{"use_case": ', headers=ACME | {"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "malformed_json"
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_batch_over_the_limit_and_batch_with_one_bad_item(client, db):
    r = await client.post("/v1/jobs/batch", json={"jobs": [job()] * 1001}, headers=ACME)
    assert r.status_code == 422
    assert "at most 1000" in r.json()["error"]["message"]
    r = await client.post(
        "/v1/jobs/batch", json={"jobs": [job(), job(use_case="nope")]}, headers=ACME
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"]["index"] == 1
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_body_limit_holds_for_chunked_bodies(client, db):
    async def chunks():
        yield json.dumps(job())[:-1].encode() + b', "x": "'
        for _ in range(40):
            yield b"y" * 16384
        yield b'"}'

    r = await client.post(
        "/v1/jobs", content=chunks(), headers=ACME | {"Content-Type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_openapi_is_served(client):
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/jobs" in spec["paths"]
    assert "/v1/jobs/batch" in spec["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_database_down_answers_503_and_recovers(start_server, database_url, db):
    proxy, proxied = await start_database_proxy(database_url)
    server = await start_server(database_url=proxied)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        assert (await c.post("/v1/jobs", json=job(), headers=ACME)).status_code == 201
        await proxy.stop()
        r = await c.post("/v1/jobs", json=job(), headers=ACME)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "unavailable"
        assert r.headers["retry-after"]
        await proxy.start()
        for _ in range(50):
            r = await c.post("/v1/jobs", json=job(), headers=ACME)
            if r.status_code == 201:
                break
            await asyncio.sleep(0.1)
        assert r.status_code == 201
    await proxy.stop()
    assert await db.fetchval("SELECT count(*) FROM jobs") == 2


async def test_router_mounts_inside_an_existing_app(database_url):
    user_app = FastAPI()

    @user_app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    jobs = JobsServer(make_settings(database_url))
    jobs.include_in(user_app)
    async with jobs.running():
        transport = httpx.ASGITransport(app=user_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
            assert (await c.get("/hello")).json() == {"hello": "world"}
            r = await c.post("/v1/jobs", json=job(), headers=ACME)
            assert r.status_code == 201
            assert (await c.get("/v1/jobs/nope", headers=ACME)).status_code == 422


async def test_liveness_and_readiness(start_server, empty_database_url, database_url):
    async with httpx.AsyncClient(timeout=30) as c:
        ready = await start_server()
        assert (await c.get(ready.url + "/healthz")).json() == {"status": "ok"}
        r = await c.get(ready.url + "/readyz")
        assert r.status_code == 200
        assert r.json()["status"] == "ready"
        # a database without the schema: alive, not ready, and it says how to fix it
        unmigrated = await start_server(database_url=empty_database_url)
        assert (await c.get(unmigrated.url + "/healthz")).status_code == 200
        r = await c.get(unmigrated.url + "/readyz")
        assert r.status_code == 503
        assert r.json()["pending_migrations"] == [m.version for m in available_migrations()]
        assert "jobs-server migrate" in r.json()["fix"]
        await migrate(empty_database_url)
        assert (await c.get(unmigrated.url + "/readyz")).status_code == 200


async def test_readiness_fails_while_the_database_is_down(start_server, database_url):
    proxy, proxied = await start_database_proxy(database_url)
    server = await start_server(database_url=proxied)
    async with httpx.AsyncClient(timeout=30) as c:
        assert (await c.get(server.url + "/readyz")).status_code == 200
        await proxy.stop()
        r = await c.get(server.url + "/readyz")
        assert r.status_code == 503
        assert r.json()["status"] == "unready"
        await proxy.start()
        for _ in range(50):
            if (await c.get(server.url + "/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert (await c.get(server.url + "/readyz")).status_code == 200
    await proxy.stop()


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ('{"x": NaN}', "NaN or Infinity"),
        ('{"x": 1e400}', "NaN or Infinity"),
        ('{"x": "a\\u0000b"}', "NUL character"),
        ('{"x": "\\ud800"}', "unpaired UTF-16 surrogate"),
    ],
)
async def test_payloads_postgres_cannot_store_are_refused_clearly(client, db, raw, says):
    body = '{"use_case": "labeling", "job_type": "t", "payload": ' + raw + "}"
    r = await client.post(
        "/v1/jobs", content=body.encode(), headers=ACME | {"Content-Type": "application/json"}
    )
    assert r.status_code in (400, 422), r.text
    assert says in r.json()["error"]["message"]
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0
