"""Operator actions over real HTTP against real PostgreSQL: retry one job, count by filter, and
cancel or retry everything matching a filter, within the token's tenant and the quotas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from jobs_server.clock import ManualClock
from tests.conftest import LiveServer
from tests.integration.requests import ACME, ADMIN, GLOBEX, READONLY, TINY, WORKER, job


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as c:
        yield c


async def enqueue(client: httpx.AsyncClient, headers: dict[str, str], n: int = 1, **kw: Any):
    r = await client.post(
        "/v1/jobs/batch",
        json={"jobs": [job(payload={"i": i}, **kw) for i in range(n)]},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return [x["job"]["id"] for x in r.json()["results"]]


async def kill(db: asyncpg.Connection, ids: list[str], status: str = "dead") -> None:
    """As the outcome path leaves a job that used up its attempts (or was cancelled)."""
    await db.execute(
        """
        UPDATE jobs SET status = $2::job_status, attempts = max_attempts, finished_at = now(),
            last_error = 'RuntimeError: smtp is down', deadline_missed = true,
            deadline = now() - interval '1 hour'
        WHERE id = ANY ($1::uuid[])
        """,
        ids,
        status,
    )


async def active(db: asyncpg.Connection, tenant: str) -> int:
    return int(await db.fetchval("SELECT active FROM tenant_usage WHERE tenant = $1", tenant))


# -- retry one job ------------------------------------------------------------------------------


async def test_retry_a_dead_job_makes_it_pending_now_with_one_more_attempt(client, db):
    [job_id] = await enqueue(client, ACME)
    await kill(db, [job_id])
    assert await active(db, "acme") == 0
    before = datetime.now(UTC)
    r = await client.post(f"/v1/jobs/{job_id}/retry", headers=ACME)
    assert r.status_code == 200, r.text
    retried = r.json()
    assert retried["status"] == "pending"
    assert retried["attempts"] == 3  # the history stays
    assert retried["max_attempts"] == 4  # and one more attempt is granted
    assert retried["finished_at"] is None
    assert retried["deadline_missed"] is False
    run_at = datetime.fromisoformat(retried["run_at"])
    deadline = datetime.fromisoformat(retried["deadline"])
    assert before - timedelta(seconds=5) <= run_at <= datetime.now(UTC) + timedelta(seconds=5)
    # the use case's default tolerance (60 s in the test config) from now
    assert abs((deadline - run_at).total_seconds() - 60) < 1
    assert retried["last_error"] == "RuntimeError: smtp is down"
    assert await active(db, "acme") == 1  # the quota's usage count follows
    again = await client.post(f"/v1/jobs/{job_id}/retry", headers=ACME)
    assert again.status_code == 409
    assert "only dead, cancelled or expired" in again.json()["error"]["message"]


async def test_a_retry_is_pending_at_the_server_clocks_now(start_server, db):
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0) + timedelta(days=1))
    server = await start_server(clock=clock)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
        [job_id] = await enqueue(c, ACME)
        await kill(db, [job_id])
        clock.advance(90)
        r = await c.post(f"/v1/jobs/{job_id}/retry", headers=ACME)
    assert r.status_code == 200, r.text
    retried = r.json()
    # the clock's now, not the host's (a day apart) nor the database's
    assert datetime.fromisoformat(retried["run_at"]) == clock.now()
    assert datetime.fromisoformat(retried["updated_at"]) == clock.now()
    assert datetime.fromisoformat(retried["deadline"]) == clock.now() + timedelta(seconds=60)


async def test_retry_a_cancelled_job_keeps_its_remaining_attempts(client, db):
    [job_id] = await enqueue(client, ACME)
    assert (await client.post(f"/v1/jobs/{job_id}/cancel", headers=ACME)).status_code == 200
    r = await client.post(f"/v1/jobs/{job_id}/retry", headers=ACME)
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["attempts"], r.json()["max_attempts"]) == ("pending", 0, 3)


async def test_retry_refusals(client, db):
    [pending] = await enqueue(client, ACME)
    [theirs] = await enqueue(client, GLOBEX)
    await kill(db, [theirs])
    r = await client.post(f"/v1/jobs/{pending}/retry", headers=ACME)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert (await client.post(f"/v1/jobs/{theirs}/retry", headers=ACME)).status_code == 404
    unknown = "0190a0b0-0000-7000-8000-000000000000"
    assert (await client.post(f"/v1/jobs/{unknown}/retry", headers=ACME)).status_code == 404
    r = await client.post(f"/v1/jobs/{theirs}/retry", headers=READONLY)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert (await client.post(f"/v1/jobs/{theirs}/retry", headers=WORKER)).status_code == 403
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", theirs) == "dead"
    # the admin may
    assert (await client.post(f"/v1/jobs/{theirs}/retry", headers=ADMIN)).status_code == 200


async def test_retry_respects_an_active_dedup_key(client, db):
    [old] = await enqueue(client, ACME, dedup_key="order-7")
    await kill(db, [old])
    [new] = await enqueue(client, ACME, dedup_key="order-7")
    r = await client.post(f"/v1/jobs/{old}/retry", headers=ACME)
    assert r.status_code == 409
    assert "dedup key" in r.json()["error"]["message"]
    await kill(db, [new])
    # two dead jobs share the key: a bulk retry revives the newest only
    r = await client.post("/v1/jobs/retry", json={"dedup_key": "order-7"}, headers=ACME)
    assert r.json() == {"action": "retry", "touched": 1, "skipped": 1, "more": False}
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", new) == "pending"
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", old) == "dead"


async def test_retry_respects_the_tenant_quota(client, db):
    dead = await enqueue(client, TINY, 3)
    await kill(db, dead)
    await enqueue(client, TINY, 9)  # quota 10: room for one more
    [one, two, three] = dead
    r = await client.post("/v1/jobs/retry", json={}, headers=TINY)
    assert r.json() == {"action": "retry", "touched": 1, "skipped": 2, "more": False}
    assert await active(db, "tiny") == 10
    left = [
        i for i in dead if await db.fetchval("SELECT status FROM jobs WHERE id = $1", i) == "dead"
    ]
    assert len(left) == 2
    r = await client.post(f"/v1/jobs/{left[0]}/retry", headers=TINY)
    assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
    assert {one, two, three} >= set(left)


# -- count --------------------------------------------------------------------------------------


async def test_count_by_filter_within_the_tenant(client, db):
    mine = await enqueue(client, ACME, 5)
    await kill(db, mine[:2])
    theirs = await enqueue(client, GLOBEX, 4)
    await kill(db, theirs[:3])
    r = await client.get("/v1/jobs/count", params={"status": "dead"}, headers=ACME)
    assert r.status_code == 200, r.text
    assert r.json() == {"count": 2, "max_id": max(mine[:2])}
    assert (await client.get("/v1/jobs/count", headers=ACME)).json()["count"] == 5
    r = await client.get("/v1/jobs/count", params={"action": "retry"}, headers=ACME)
    assert r.json()["count"] == 2
    r = await client.get("/v1/jobs/count", params={"action": "cancel"}, headers=ACME)
    assert r.json()["count"] == 3
    # another tenant's filter selects nothing; the admin sees both, or one tenant
    r = await client.get("/v1/jobs/count", params={"tenant": "globex"}, headers=ACME)
    assert r.json() == {"count": 0, "max_id": None}
    assert (await client.get("/v1/jobs/count", params={"status": "dead"}, headers=ADMIN)).json()[
        "count"
    ] == 5
    r = await client.get(
        "/v1/jobs/count", params={"status": "dead", "tenant": "globex"}, headers=READONLY
    )
    assert r.json()["count"] == 3
    assert (await client.get("/v1/jobs/count", headers=WORKER)).status_code == 403


# -- bulk ---------------------------------------------------------------------------------------


async def test_bulk_cancel_touches_only_the_tenants_matching_jobs(client, db):
    mine = await enqueue(client, ACME, 7)
    other_use_case = await enqueue(client, ACME, 2, use_case="labeling", job_type="t")
    theirs = await enqueue(client, GLOBEX, 3)
    r = await client.post("/v1/jobs/cancel", json={"use_case": "notifications"}, headers=ACME)
    assert r.status_code == 200, r.text
    assert r.json() == {"action": "cancel", "touched": 7, "skipped": 0, "more": False}
    statuses = dict(await db.fetch("SELECT id::text, status::text FROM jobs"))
    assert {statuses[i] for i in mine} == {"cancelled"}
    assert {statuses[i] for i in other_use_case + theirs} == {"pending"}
    assert await active(db, "acme") == 2
    # again: nothing left to cancel
    r = await client.post("/v1/jobs/cancel", json={"use_case": "notifications"}, headers=ACME)
    assert r.json()["touched"] == 0
    # a tenant naming another tenant selects nothing
    r = await client.post("/v1/jobs/cancel", json={"tenant": "globex"}, headers=ACME)
    assert r.json()["touched"] == 0
    assert await active(db, "globex") == 3


async def test_bulk_cancel_marks_running_jobs(client, db):
    ids = await enqueue(client, ACME, 2)
    await db.execute(
        "UPDATE jobs SET status = 'running', attempts = 1, lease_token = gen_random_uuid(), "
        "lease_expires_at = now() + interval '1 minute' WHERE id = $1",
        ids[0],
    )
    r = await client.post("/v1/jobs/cancel", json={}, headers=ACME)
    assert r.json()["touched"] == 2
    rows = {
        r["id"]: r
        for r in await db.fetch("SELECT id::text, status::text, cancel_requested FROM jobs")
    }
    assert (rows[ids[0]]["status"], rows[ids[0]]["cancel_requested"]) == ("running", True)
    assert rows[ids[1]]["status"] == "cancelled"


async def test_bulk_actions_stop_at_the_counted_max_id_and_the_limit(client, db):
    first = await enqueue(client, ACME, 4)
    count = (await client.get("/v1/jobs/count", params={"action": "cancel"}, headers=ACME)).json()
    assert count["count"] == 4
    later = await enqueue(client, ACME, 2)  # created after the confirmation
    r = await client.post(
        "/v1/jobs/cancel", json={"max_id": count["max_id"], "limit": 3}, headers=ACME
    )
    assert r.json() == {"action": "cancel", "touched": 3, "skipped": 0, "more": True}
    r = await client.post("/v1/jobs/cancel", json={"max_id": count["max_id"]}, headers=ACME)
    assert r.json() == {"action": "cancel", "touched": 1, "skipped": 0, "more": False}
    statuses = dict(await db.fetch("SELECT id::text, status::text FROM jobs"))
    assert {statuses[i] for i in first} == {"cancelled"}
    assert {statuses[i] for i in later} == {"pending"}


async def test_bulk_retry_in_batches_across_tenants_for_the_admin(client, db):
    mine = await enqueue(client, ACME, 1000)
    mine += await enqueue(client, ACME, 200)
    theirs = await enqueue(client, GLOBEX, 5)
    await kill(db, mine + theirs)
    count = (await client.get("/v1/jobs/count", params={"status": "dead"}, headers=ADMIN)).json()
    assert count["count"] == 1205
    r = await client.post(
        "/v1/jobs/retry", json={"status": "dead", "max_id": count["max_id"]}, headers=ADMIN
    )
    assert r.json() == {"action": "retry", "touched": 1205, "skipped": 0, "more": False}
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'pending'") == 1205
    assert await active(db, "acme") == 1200 and await active(db, "globex") == 5


async def test_bulk_actions_need_a_token_that_may_write(client, db):
    ids = await enqueue(client, ACME, 2)
    await kill(db, ids[:1])
    for path in ("/v1/jobs/cancel", "/v1/jobs/retry"):
        r = await client.post(path, json={}, headers=READONLY)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert (await client.post(path, json={}, headers=WORKER)).status_code == 403
        assert (await client.post(path, json={})).status_code == 401
        r = await client.post(path, json={"tenant_id": "x"}, headers=ACME)
        assert r.status_code == 422  # unknown fields are refused
    statuses = sorted(r[0] for r in await db.fetch("SELECT status::text FROM jobs"))
    assert statuses == ["dead", "pending"]


async def test_list_finds_a_job_by_dedup_key(client, db):
    [wanted] = await enqueue(client, ACME, dedup_key="invoice-9")
    await enqueue(client, ACME, 3)
    await kill(db, [wanted])  # finished jobs are found too
    r = await client.get("/v1/jobs", params={"dedup_key": "invoice-9"}, headers=ACME)
    assert [j["id"] for j in r.json()["items"]] == [wanted]
    r = await client.get("/v1/jobs", params={"dedup_key": "invoice-9"}, headers=GLOBEX)
    assert r.json()["items"] == []
