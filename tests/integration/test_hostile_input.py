"""Hostile input over real HTTP, PostgreSQL and SQS: times out of range, text PostgreSQL cannot
store, payloads nested past what a parser reads, loosely typed numbers. Each is a 4xx naming the
field that changes nothing, or (a handler's own text) is stored with what cannot be kept
replaced; none breaks another tenant, the scheduler or a batch."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import BaseModel

from jobs_schema import AttemptOutcome, JobStatus, LeaseRef, lease_from_body
from jobs_schema.limits import MAX_PAYLOAD_DEPTH, MAX_TIMESTAMP, MIN_TIMESTAMP
from jobs_worker import JobContext, Registry
from tests.conftest import LiveServer
from tests.integration import test_worker_harness as harness
from tests.integration.requests import ACME, ADMIN, GLOBEX, WORKER, job
from tests.integration.sqs import sqs_probe
from tests.integration.test_dashboard import browser
from tests.integration.test_worker_harness import EMAIL, MakeStack, Stack

make_stack = harness.make_stack  # the fixture

OUT_OF_RANGE = [
    "0001-01-01T00:00:00Z",
    "2030-01-01T00:00:00.1234567Z",  # finer than PostgreSQL keeps: it would not round-trip
    "1969-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59Z",
    "9999-01-01T00:00:00.000001Z",
    "9998-12-31T23:00:00-14:00",  # 9999-01-01T13:00Z in UTC
    "1970-01-01T10:00:00+14:00",  # 1969-12-31T20:00Z in UTC
]
NOT_AWARE_TIMES = ["2026-01-01T00:00:00", 1_700_000_000, 1_700_000_000.5, "1700000000", True]


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as c:
        yield c


def nested(depth: int) -> dict[str, Any]:
    """A payload of `depth` levels of objects."""
    payload: dict[str, Any] = {}
    inner = payload
    for _ in range(depth - 1):
        inner["a"] = {}
        inner = inner["a"]
    return payload


def error_of(r: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = r.json()["error"]
    return error


async def job_count(db: Any) -> int:
    return int(await db.fetchval("SELECT count(*) FROM jobs"))


# -- time values -------------------------------------------------------------------------------


async def test_year_one_run_at_is_refused_and_other_tenants_still_enqueue(client, db):
    r = await client.post("/v1/jobs", json=job(run_at="0001-01-01T00:00:00Z"), headers=ACME)
    assert r.status_code == 422, r.text
    error = error_of(r)
    assert error["code"] == "validation_error"
    assert "run_at" in error["message"] and "1970-01-01T00:00:00+00:00" in error["message"]
    assert "9999-01-01T00:00:00+00:00" in error["message"]
    assert await job_count(db) == 0
    r = await client.post("/v1/jobs", json=job(), headers=GLOBEX)
    assert r.status_code == 201, r.text
    assert await job_count(db) == 1
    r = await client.post("/v1/jobs", json=job(), headers=ACME)  # and the refused tenant too
    assert r.status_code == 201, r.text
    assert await job_count(db) == 2


@pytest.mark.parametrize("field", ["run_at", "deadline"])
@pytest.mark.parametrize("value", OUT_OF_RANGE + NOT_AWARE_TIMES)
async def test_times_outside_the_rule_are_refused(client, db, field, value):
    r = await client.post("/v1/jobs", json=job(**{field: value}), headers=ACME)
    assert r.status_code == 422, r.text
    assert field in error_of(r)["message"]
    r = await client.post(
        "/v1/jobs/batch", json={"jobs": [job(), job(**{field: value})]}, headers=ACME
    )
    assert r.status_code == 422, r.text
    assert any(
        e["loc"][:4] == ["body", "jobs", "1", field] for e in error_of(r)["details"]["errors"]
    )
    assert await job_count(db) == 0


async def test_times_round_trip_exactly_and_carry_a_zone(client):
    run_at = "2030-06-01T12:34:56.123456+14:00"
    deadline = "2030-06-01T00:00:00.000001-14:00"
    r = await client.post("/v1/jobs", json=job(run_at=run_at, deadline=deadline), headers=ACME)
    assert r.status_code == 201, r.text
    stored = (await client.get(f"/v1/jobs/{r.json()['job']['id']}", headers=ACME)).json()
    assert datetime.fromisoformat(stored["run_at"]) == datetime.fromisoformat(run_at)
    assert datetime.fromisoformat(stored["deadline"]) == datetime.fromisoformat(deadline)
    for name in ("run_at", "deadline", "created_at", "updated_at"):
        assert datetime.fromisoformat(stored[name]).tzinfo is not None, name


async def test_the_ends_of_the_range_are_accepted(client):
    r = await client.post("/v1/jobs", json=job(run_at=MAX_TIMESTAMP.isoformat()), headers=ACME)
    assert r.status_code == 201, r.text
    created = r.json()["job"]
    assert datetime.fromisoformat(created["run_at"]) == MAX_TIMESTAMP
    # the default tolerance would reach past the range: the deadline is its end
    assert datetime.fromisoformat(created["deadline"]) == MAX_TIMESTAMP
    early = {"run_at": MIN_TIMESTAMP.isoformat(), "deadline": "9998-12-31T23:59:59+00:00"}
    r = await client.post("/v1/jobs", json=job(**early), headers=ACME)
    assert r.status_code == 201, r.text


FILTER_TIMES = ["0001-01-01T00:00:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z", "1"]


@pytest.mark.parametrize("value", FILTER_TIMES)
@pytest.mark.parametrize("name", ["created_after", "created_before"])
async def test_time_filters_outside_the_rule_are_refused(client, value, name):
    for path in ("/v1/jobs", "/v1/jobs/count"):
        r = await client.get(path, params={name: value}, headers=ACME)
        assert r.status_code == 422, (path, r.text)
        assert name in error_of(r)["message"]
    for path in ("/v1/jobs/retry", "/v1/jobs/cancel"):
        r = await client.post(path, json={name: value}, headers=ACME)
        assert r.status_code == 422, (path, r.text)
        assert name in error_of(r)["message"]


async def test_dashboard_job_list_refuses_times_outside_the_range(live_server):
    admin = await browser(live_server, "tok-admin")
    try:
        for value in ("0001-01-01T00:00:00", "9999-12-31T23:59:59-14:00"):
            for name in ("created_after", "created_before"):
                r = await admin.get("/ui/jobs", params={name: value})
                assert r.status_code == 400, r.text
                assert "range" in r.text
    finally:
        await admin.aclose()


async def test_stored_infinite_times_break_no_reader(make_stack: MakeStack):
    """A row written past the API (by hand, or before the rule) with infinite times."""
    stack = await make_stack()
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    odd = await stack.enqueue({"to": "a@example.com"}, run_at=later)
    async with _db(stack) as conn:
        await conn.execute(
            "UPDATE jobs SET run_at = '-infinity', deadline = 'infinity' WHERE id = $1", odd
        )
    job_id = await stack.enqueue({"to": "b@example.com"})  # wakes the scheduler
    for dispatched in (odd, job_id):  # generous: the scheduler must survive the row, not race
        await stack.wait_for(dispatched, lambda j: j.status != "pending", timeout=60)
    got = await stack.client.get(odd)
    assert got.run_at.tzinfo is not None and got.deadline.tzinfo is not None
    async with httpx.AsyncClient(base_url=stack.server.url) as http:
        listed = await http.get("/v1/jobs", headers=ACME)
        assert listed.status_code == 200
        for item in listed.json()["items"]:
            assert datetime.fromisoformat(item["run_at"]).tzinfo is not None
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.post("/v1/jobs", json=job(), headers=GLOBEX)).status_code == 201
    admin = await browser(stack.server, "tok-admin")
    try:
        for page in ("/ui", "/ui/jobs", f"/ui/jobs/{odd}"):
            r = await admin.get(page)
            assert r.status_code == 200, (page, r.text)
    finally:
        await admin.aclose()


@asynccontextmanager
async def _db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(stack.server.database_url)
    try:
        yield conn
    finally:
        await conn.close()


# -- text --------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["dedup_key", "job_type", "use_case"])
@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b"])
async def test_unstorable_text_in_an_enqueue_is_refused(client, db, field, bad):
    body = json.dumps(job(**{field: bad}))  # json.dumps writes \u0000 and \ud800 escapes
    headers = {**ACME, "content-type": "application/json"}
    r = await client.post("/v1/jobs", content=body, headers=headers)
    assert r.status_code == 422, r.text
    error = error_of(r)
    assert error["code"] == "validation_error" and field in error["message"]
    assert ("NUL" if "\x00" in bad else "surrogate") in error["message"]
    assert await job_count(db) == 0


@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b"])
async def test_unstorable_text_in_a_payload_is_refused(client, db, bad):
    for payload in ({"k": bad}, {bad: "v"}, {"k": [{"deep": bad}]}):
        body = json.dumps(job(payload=payload))
        r = await client.post(
            "/v1/jobs", content=body, headers={**ACME, "content-type": "application/json"}
        )
        assert r.status_code == 422, r.text
        error = error_of(r)
        assert error["code"] == "validation_error" and "payload" in error["message"]
        assert ("NUL" if "\x00" in bad else "surrogate") in error["message"]
    assert await job_count(db) == 0


@pytest.mark.parametrize("name", ["dedup_key", "job_type", "use_case", "tenant", "cursor"])
async def test_nul_in_a_filter_is_refused(client, name):
    for path in ("/v1/jobs", "/v1/jobs/count"):
        if path.endswith("count") and name == "cursor":
            continue
        r = await client.get(path, params={name: "a\x00b"}, headers=ADMIN)
        assert r.status_code == 422, (path, r.text)
        assert name in error_of(r)["message"]
    if name != "cursor":
        r = await client.post("/v1/jobs/cancel", json={name: "a\x00b"}, headers=ADMIN)
        assert r.status_code == 422, r.text


async def test_nul_in_the_dashboard_search_is_refused(live_server):
    admin = await browser(live_server, "tok-admin")
    try:
        for name in ("q", "use_case", "job_type", "tenant"):
            r = await admin.get("/ui/jobs", params={name: "a\x00b"})
            assert r.status_code == 400, (name, r.text)
            assert "NUL" in r.text
    finally:
        await admin.aclose()


async def test_a_cancellation_poll_out_of_range_is_refused_naming_the_field(client):
    lease = {"job_id": str(uuid.uuid4()), "attempt": 1, "lease_token": str(uuid.uuid4())}
    path = "/v1/worker/cancellations"
    refused = {
        "leases": {"worker_id": "w1", "leases": []},
        "worker_id": {"leases": [lease]},
        "attempt": {"worker_id": "w1", "leases": [{**lease, "attempt": 0}]},
        "lease_token": {"worker_id": "w1", "leases": [{**lease, "lease_token": "x"}]},
        "extend_seconds": {"worker_id": "w1", "leases": [{**lease, "extend_seconds": 1}]},
    }
    for field, body in refused.items():
        r = await client.post(path, json=body, headers=WORKER)
        assert r.status_code == 422, (field, r.text)
        assert field in error_of(r)["message"], (field, error_of(r))
    r = await client.post(path, json={"worker_id": "w1", "leases": [lease] * 1001}, headers=WORKER)
    assert r.status_code == 422 and "leases" in error_of(r)["message"], r.text
    r = await client.post(path, json={"worker_id": "w1", "leases": [lease]}, headers=ACME)
    assert r.status_code == 403, r.text
    r = await client.post(path, json={"worker_id": "w1", "leases": [lease]}, headers=WORKER)
    assert (r.status_code, r.json()) == (200, {"cancelled": []})


async def test_nul_in_a_worker_id_is_refused(client):
    lease = {"job_id": "0" * 8 + "-0000-7000-8000-" + "0" * 12, "attempt": 1}
    lease["lease_token"] = lease["job_id"]
    item = {**lease, "extend_seconds": 10}
    r = await client.post(
        "/v1/worker/heartbeats", json={"worker_id": "w\x00", "items": [item]}, headers=WORKER
    )
    assert r.status_code == 422, r.text
    assert "worker_id" in error_of(r)["message"]
    report = {**lease, "outcome": "succeeded", "worker_id": "w\x00"}
    r = await client.post("/v1/worker/outcomes", json={"reports": [report]}, headers=WORKER)
    assert r.status_code == 422, r.text


async def _running_leases(stack: Stack, ids: list[Any]) -> dict[Any, dict[str, Any]]:
    await stack.dispatched(ids)
    async with _db(stack) as conn:
        rows = await conn.fetch(
            "SELECT id, attempts, lease_token FROM jobs WHERE id = ANY($1::uuid[])", ids
        )
    return {
        r["id"]: {
            "job_id": str(r["id"]),
            "attempt": r["attempts"],
            "lease_token": str(r["lease_token"]),
        }
        for r in rows
    }


async def test_outcomes_with_unstorable_text_apply_per_item(make_stack: MakeStack):
    stack = await make_stack(max_attempts=1)
    failing, bad_result, fine = [await stack.enqueue({"to": f"{i}@x"}) for i in range(3)]
    leases = await _running_leases(stack, [failing, bad_result, fine])
    failure = {
        "type": "Bad\x00Error",
        "message": "broke on \x00 and \ud800",
        "traceback": "Traceback\x00 (most recent call last)",
        "retryable": True,
    }
    reports = [
        {**leases[failing], "outcome": "failed", "worker_id": "w1", "failure": failure},
        {**leases[bad_result], "outcome": "succeeded", "worker_id": "w1", "result": {"k": "\x00"}},
        {**leases[fine], "outcome": "succeeded", "worker_id": "w1", "result": {"ok": 1}},
    ]
    async with httpx.AsyncClient(base_url=stack.server.url) as http:
        r = await http.post(
            "/v1/worker/outcomes",
            content=json.dumps({"reports": reports}),
            headers={**WORKER, "content-type": "application/json"},
        )
    assert r.status_code == 200, r.text
    assert [a["applied"] for a in r.json()["acks"]] == [True, True, True]
    failed = await stack.client.get(failing)
    assert failed.status is JobStatus.DEAD
    [attempt] = failed.history or []
    assert attempt.outcome is AttemptOutcome.FAILED
    assert attempt.error_type == "Bad\ufffdError"
    assert attempt.error_message == "broke on \ufffd and \ufffd"
    assert attempt.traceback == "Traceback\ufffd (most recent call last)"
    refused = await stack.client.get(bad_result)
    assert refused.status is JobStatus.DEAD and refused.result is None
    [attempt] = refused.history or []
    assert attempt.error_type == "ResultNotStorable"
    assert attempt.error_message is not None and "NUL" in attempt.error_message
    done = await stack.client.get(fine)
    assert done.status is JobStatus.SUCCEEDED and done.result == {"ok": 1}


class Email(BaseModel):
    to: str


async def test_a_worker_reports_a_handler_error_holding_nul(make_stack: MakeStack):
    stack = await make_stack(max_attempts=1)
    registry = Registry()

    @registry.handler(EMAIL)
    async def send(payload: Email, ctx: JobContext) -> str:
        if payload.to == "bad":
            raise ValueError("unexpected byte \x00 in reply")
        return "sent"

    bad, good = await stack.enqueue({"to": "bad"}), await stack.enqueue({"to": "good"})
    await stack.dispatched([bad, good])
    worker = await stack.worker(registry)
    await asyncio.wait_for(worker.run(burst=True), 30)
    failed = await stack.client.get(bad)
    assert failed.status is JobStatus.DEAD
    [attempt] = failed.history or []
    assert attempt.outcome is AttemptOutcome.FAILED  # not lease_expired
    assert attempt.error_type == "ValueError"
    assert attempt.error_message == "unexpected byte \ufffd in reply"
    assert (await stack.client.get(good)).status is JobStatus.SUCCEEDED


# -- payload shape -----------------------------------------------------------------------------


async def test_payload_at_the_depth_limit_is_accepted_one_deeper_refused(client, db):
    r = await client.post("/v1/jobs", json=job(payload=nested(MAX_PAYLOAD_DEPTH)), headers=ACME)
    assert r.status_code == 201, r.text
    r = await client.post("/v1/jobs", json=job(payload=nested(MAX_PAYLOAD_DEPTH + 1)), headers=ACME)
    assert r.status_code == 422, r.text
    error = error_of(r)
    assert error["code"] == "validation_error"
    assert "payload" in error["message"] and str(MAX_PAYLOAD_DEPTH) in error["message"]
    assert await job_count(db) == 1


@pytest.mark.parametrize("depth", [200, 255, 300, 990, 5000])
async def test_deeply_nested_bodies_get_a_clear_4xx(client, db, depth):
    headers = {**ACME, "content-type": "application/json"}
    payload = '{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1)  # too deep for json.dumps
    body = json.dumps(job(payload="PAYLOAD")).replace('"PAYLOAD"', payload)
    r = await client.post("/v1/jobs", content=body, headers=headers)
    assert 400 <= r.status_code < 500, r.text
    assert error_of(r)["code"] in ("validation_error", "malformed_json")
    broken = '{"use_case": "notifications", "payload": ' + "[" * depth
    r = await client.post("/v1/jobs", content=broken, headers=headers)
    assert r.status_code == 400, r.text
    assert error_of(r)["code"] == "malformed_json"
    assert await job_count(db) == 0


async def test_batch_with_one_deep_payload_names_it_and_stores_nothing(client, db):
    body = {"jobs": [job(), job(payload=nested(MAX_PAYLOAD_DEPTH + 1)), job()]}
    r = await client.post("/v1/jobs/batch", json=body, headers=ACME)
    assert r.status_code == 422, r.text
    [err] = error_of(r)["details"]["errors"]
    assert err["loc"][:4] == ["body", "jobs", "1", "payload"]
    assert await job_count(db) == 0


async def test_unparseable_message_makes_its_job_dead_with_the_reason(make_stack: MakeStack):
    stack = await make_stack(max_attempts=3)
    job_id = await stack.enqueue({"to": "a@example.com"})
    [lease] = (await _running_leases(stack, [job_id])).values()
    async with sqs_probe(stack.sqs_endpoint) as probe:
        url = await probe.url(stack.queue)
        got = await probe.client.receive_message(QueueUrl=url, VisibilityTimeout=300)
        [real] = got["Messages"]  # the scheduler's own copy, taken away
        body = real["Body"]
        assert lease_from_body(body) == LeaseRef.model_validate(lease)
        await probe.client.delete_message(QueueUrl=url, ReceiptHandle=real["ReceiptHandle"])
        # in its place, a body no parser reads, beginning with the real attempt's lease
        header = body[: body.index(',"tenant"')]
        too_deep = header + ',"payload":' + "[" * 300 + "]" * 300 + "}"
        await probe.client.send_message(QueueUrl=url, MessageBody=too_deep)
    worker = await stack.worker(Registry())
    stats = await asyncio.wait_for(worker.run(burst=True), 30)
    assert stats.malformed == 1
    dead = await stack.client.get(job_id)
    assert dead.status is JobStatus.DEAD and dead.attempts == 1
    [attempt] = dead.history or []
    assert attempt.outcome is AttemptOutcome.FAILED
    assert attempt.error_type == "InvalidMessage"
    assert attempt.error_message is not None and "recursion limit" in attempt.error_message
    async with sqs_probe(stack.sqs_endpoint) as probe:
        assert await probe.receive(stack.queue) == []  # deleted once reported


# -- strict types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"priority": True},
        {"priority": "5"},
        {"priority": 5.5},
        {"max_attempts": "3"},
        {"max_attempts": True},
        {"delay_tolerance_seconds": "5"},
        {"delay_tolerance_seconds": False},
        {"backoff": {"base_seconds": True}},
        {"backoff": {"jitter": "0.1"}},
    ],
)
async def test_loosely_typed_numbers_are_refused(client, db, fields):
    r = await client.post("/v1/jobs", json=job(**fields), headers=ACME)
    assert r.status_code == 422, r.text
    assert next(iter(fields)) in error_of(r)["message"]
    assert await job_count(db) == 0


async def test_loosely_typed_limits_are_refused(client):
    r = await client.get("/v1/jobs", params={"limit": "true"}, headers=ACME)
    assert r.status_code == 422, r.text
    for body in ({"limit": True}, {"limit": "10"}, {"limit": 1.5}):
        r = await client.post("/v1/jobs/retry", json=body, headers=ACME)
        assert r.status_code == 422, r.text
    lease = {"job_id": "0" * 8 + "-0000-7000-8000-" + "0" * 12, "attempt": "1"}
    lease["lease_token"] = lease["job_id"]
    report = {**lease, "outcome": "succeeded", "worker_id": "w"}
    r = await client.post("/v1/worker/outcomes", json={"reports": [report]}, headers=WORKER)
    assert r.status_code == 422, r.text
    failure = {"type": "E", "message": "m", "retryable": "no"}
    report = {**lease, "attempt": 1, "outcome": "failed", "worker_id": "w", "failure": failure}
    r = await client.post("/v1/worker/outcomes", json={"reports": [report]}, headers=WORKER)
    assert r.status_code == 422, r.text
