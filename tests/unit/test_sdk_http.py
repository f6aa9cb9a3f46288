"""Request building and answer parsing that the sync and async clients share."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from jobs_schema import (
    BatchEnqueueResponse,
    EnqueueRequest,
    EnqueueResponse,
    ErrorCode,
    Job,
    JobStatus,
)
from jobs_sdk import JobsError, NotFound, QuotaExceeded, ServerError, ValidationFailed, _http

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def job(**overrides: object) -> Job:
    fields: dict[str, object] = {
        "id": uuid.uuid4(),
        "tenant": "acme",
        "use_case": "labeling",
        "job_type": "t",
        "payload": {},
        "status": "pending",
        "priority": 0,
        "run_at": NOW,
        "deadline": NOW,
        "attempts": 0,
        "max_attempts": 3,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return Job.model_validate(fields | overrides)


def test_enqueue_request_from_arguments():
    req = _http.enqueue_request(
        "labeling", "t", {"a": 1}, {"delay_tolerance": timedelta(minutes=2), "priority": 3}
    )
    assert req == EnqueueRequest(
        use_case="labeling",
        job_type="t",
        payload={"a": 1},
        delay_tolerance_seconds=120,
        priority=3,
    )
    assert _http.enqueue_request("labeling", "t", None, {"delay_tolerance": 5}).payload == {}


def test_enqueue_request_refuses_an_option_it_does_not_take():
    # the wire name of the tolerance is no option: it used to be dropped without a word
    with pytest.raises(TypeError, match=r"unknown options \['delay_tolerance_seconds'\]"):
        _http.enqueue_request("labeling", "t", None, {"delay_tolerance_seconds": 5})  # type: ignore[typeddict-unknown-key]


def test_enqueue_request_passes_a_model_through_and_refuses_a_mix():
    req = EnqueueRequest(use_case="labeling", job_type="t")
    assert _http.enqueue_request(req, None, None, {}) is req
    with pytest.raises(TypeError):
        _http.enqueue_request(req, "t", None, {})
    with pytest.raises(TypeError):
        _http.enqueue_request("labeling", None, None, {})


def test_rules_checked_locally_raise_validation_failed():
    with pytest.raises(ValidationFailed) as info:
        _http.enqueue_request(
            "labeling", "t", None, {"deadline": NOW, "delay_tolerance": 3, "priority": 9999}
        )
    assert info.value.status is None
    assert "priority" in info.value.message
    json.dumps(info.value.details)  # details stay JSON, like the server's
    with pytest.raises(ValidationFailed):
        _http.batch_call([], None)
    with pytest.raises(ValidationFailed):
        _http.get_call("../admin")


def test_an_enqueue_call_is_the_same_bytes_every_time_it_is_sent():
    req = EnqueueRequest(use_case="labeling", job_type="t", payload={"a": 1})
    call = _http.enqueue_call(req, "key-1")
    assert call.headers() == {"Content-Type": "application/json", "Idempotency-Key": "key-1"}
    assert call.replayable
    assert json.loads(call.content or b"") == {
        "use_case": "labeling",
        "job_type": "t",
        "payload": {"a": 1},
    }
    assert not _http.enqueue_call(req, None).replayable


def test_list_call_params():
    call = _http.list_call(
        {"status": JobStatus.PENDING, "use_case": None, "created_after": NOW},
        cursor="abc",
        limit=10,
    )
    assert call.params == {
        "status": "pending",
        "created_after": "2030-01-01T00:00:00+00:00",
        "cursor": "abc",
        "limit": "10",
    }
    request = httpx.Request("GET", "http://jobs/v1/jobs", params=call.params)
    assert "created_after=2030-01-01T00%3A00%3A00%2B00%3A00" in str(request.url)


def test_parse_maps_the_envelope_and_bare_errors():
    body = {"error": {"code": "not_found", "message": "job x not found", "details": {}}}
    with pytest.raises(NotFound) as info:
        _http.parse(httpx.Response(404, json=body), Job)
    assert info.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(ServerError) as bare:
        _http.parse(httpx.Response(502, text="<html>bad gateway</html>"), Job)
    assert bare.value.status == 502
    assert "bad gateway" in bare.value.message
    made = job()
    assert _http.parse(httpx.Response(200, content=made.model_dump_json()), Job) == made


def test_batch_outcomes_keep_the_submission_order():
    first, third = job(), job()
    response = {
        "results": [
            {"index": 2, "job": third.model_dump(mode="json"), "deduplicated": True},
            {"index": 0, "job": first.model_dump(mode="json")},
            {"index": 1, "error": {"code": "quota_exceeded", "message": "full", "details": {}}},
        ]
    }
    outcomes = _http.batch_outcomes(
        _http.parse(httpx.Response(200, json=response), BatchEnqueueResponse)
    )
    assert outcomes[0] == EnqueueResponse(job=first)
    assert isinstance(outcomes[1], QuotaExceeded) and outcomes[1].status == 429
    assert outcomes[2] == EnqueueResponse(job=third, deduplicated=True)


def test_failing_index_from_domain_and_request_validation_errors():
    assert _http.failing_index(ValidationFailed("x", details={"index": 3})) == 3
    loc = {"errors": [{"loc": ["body", "jobs", "4", "priority"], "msg": "too big"}]}
    assert _http.failing_index(ValidationFailed("x", details=loc)) == 4
    other = {"errors": [{"loc": ["body"], "msg": "bad"}]}
    assert _http.failing_index(ValidationFailed("x", details=other)) is None
    assert _http.failing_index(JobsError("x")) is None


def test_a_refused_batch_splits_around_the_named_item_else_in_halves():
    assert _http.split_groups(4, ValidationFailed("x", details={"index": 1})) == [[1], [0, 2, 3]]
    assert _http.split_groups(5, ValidationFailed("x")) == [[0, 1], [2, 3, 4]]
    assert _http.split_groups(3, ValidationFailed("x", details={"index": 7})) == [[0], [1, 2]]


def test_merge_groups_restores_the_order():
    a, b, c = (EnqueueResponse(job=job()) for _ in range(3))
    assert _http.merge_groups([[1], [0, 2]], [[b], [a, c]]) == [a, b, c]


def test_only_caller_errors_are_worth_a_split():
    assert _http.is_item_error(ValidationFailed("x"))
    assert not _http.is_item_error(QuotaExceeded("x"))
