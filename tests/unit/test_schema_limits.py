"""The input ranges of jobs_schema.limits as pure rules: timestamps, text, JSON values, strict
numbers, and the lease attributes a worker reads when a message body cannot be parsed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from jobs_schema import (
    EnqueueRequest,
    FailureInfo,
    Job,
    JobMessage,
    LeaseRef,
    OutcomeKind,
    OutcomeReport,
    lease_from_body,
)
from jobs_schema.limits import (
    MAX_PAYLOAD_DEPTH,
    MAX_RETRY_DELAY_SECONDS,
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    JsonRefused,
    Text,
    Timestamp,
    clamp_timestamp,
    json_text,
    replace_unstorable,
)

TIMESTAMP = TypeAdapter(Timestamp)
TEXT = TypeAdapter(Text)


def nested(depth: int) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    inner = payload
    for _ in range(depth - 1):
        inner["a"] = {}
        inner = inner["a"]
    return payload


# -- timestamps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "1970-01-01T00:00:00Z",
        "9999-01-01T00:00:00Z",
        "1970-01-01T14:00:00+14:00",  # the lower end, written at +14:00
        "9998-12-31T10:00:00-14:00",  # the upper end, written at -14:00
        "2026-05-01T12:00:00.123456+05:30",
    ],
)
def test_times_in_the_range_are_kept_exactly(text: str):
    parsed = TIMESTAMP.validate_json(json.dumps(text))
    assert parsed == datetime.fromisoformat(text)
    assert parsed.tzinfo is not None
    # every accepted time converts to UTC and to both extreme offsets without overflow
    for offset in (0, 14, -14):
        parsed.astimezone(timezone(timedelta(hours=offset)))


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999999Z",
        "9999-01-01T00:00:00.000001Z",
        "9999-12-31T23:59:59Z",
        "9998-12-31T23:00:00-14:00",
        "1970-01-01T13:59:59+14:00",
        "0001-01-01T00:00:00+14:00",
    ],
)
def test_times_outside_the_range_are_refused_naming_it(value: str):
    with pytest.raises(ValidationError) as err:
        TIMESTAMP.validate_json(json.dumps(value))
    assert MIN_TIMESTAMP.isoformat() in str(err.value)
    assert MAX_TIMESTAMP.isoformat() in str(err.value)


@pytest.mark.parametrize("value", [0, 1_700_000_000, 1.5, "1700000000", " 1.5e9 ", True])
def test_numbers_are_not_times(value: object):
    with pytest.raises(ValidationError, match="not a number"):
        TIMESTAMP.validate_json(json.dumps(value))
    with pytest.raises(ValidationError):
        TIMESTAMP.validate_python(value)


def test_a_time_without_a_zone_is_refused():
    with pytest.raises(ValidationError, match="timezone"):
        TIMESTAMP.validate_python("2026-01-01T00:00:00")


def test_readers_clamp_what_asyncpg_reads_for_infinity():
    assert clamp_timestamp(datetime.min) == MIN_TIMESTAMP
    assert clamp_timestamp(datetime.max) == MAX_TIMESTAMP
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert clamp_timestamp(at) is at
    assert clamp_timestamp(datetime(2026, 1, 1)) == at  # naive: UTC


def test_a_stored_time_always_leaves_with_a_zone():
    now = datetime.now(UTC)
    job = Job.model_validate(
        {
            "id": uuid4(),
            "tenant": "t",
            "use_case": "u",
            "job_type": "j",
            "payload": {},
            "status": "pending",
            "priority": 0,
            "run_at": datetime.min,  # asyncpg's -infinity
            "deadline": datetime.max,  # and infinity
            "attempts": 0,
            "max_attempts": 1,
            "created_at": now,
            "updated_at": now,
        }
    )
    body = json.loads(job.model_dump_json())
    assert body["run_at"] == "0001-01-01T00:00:00Z"
    assert body["deadline"].endswith("Z")


# -- text --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["a\x00b", "\x00", "x\ud800", "\udfff y"])
def test_text_postgresql_cannot_store_is_refused(bad: str):
    with pytest.raises(ValidationError, match=r"NUL|surrogate"):
        TEXT.validate_python(bad)


def test_text_that_can_be_stored_is_kept():
    for good in ("", "plain", "caf\u00e9 \U0001f600 \u4e2d"):
        assert TEXT.validate_python(good) == good


def test_a_handlers_error_text_is_kept_with_replacements():
    assert replace_unstorable("a\x00b\ud800c") == "a\ufffdb\ufffdc"
    assert replace_unstorable("\U0001f600") == "\U0001f600"  # a valid pair stays
    info = FailureInfo(type="E\x00", message="m\x00", traceback="t\ud800")
    assert (info.type, info.message, info.traceback) == ("E\ufffd", "m\ufffd", "t\ufffd")
    json.loads(info.model_dump_json())  # and it can be sent


@pytest.mark.parametrize(
    "result",
    [{"k": "\x00"}, ["\ud800"], float("nan"), nested(MAX_PAYLOAD_DEPTH + 1), nested(300)],
)
def test_a_result_that_cannot_be_stored_fails_its_attempt(result: Any):
    ref = {"job_id": uuid4(), "attempt": 1, "lease_token": uuid4(), "worker_id": "w"}
    report = OutcomeReport(**ref, outcome=OutcomeKind.SUCCEEDED, result=result)
    assert report.outcome is OutcomeKind.FAILED and report.result is None
    assert report.failure is not None and report.failure.type == "ResultNotStorable"
    assert report.failure.retryable is False
    OutcomeReport.model_validate_json(report.model_dump_json())  # and it can be sent
    ok = OutcomeReport(**ref, outcome=OutcomeKind.SUCCEEDED, result={"fine": [1, "\U0001f600"]})
    assert ok.outcome is OutcomeKind.SUCCEEDED and ok.result == {"fine": [1, "\U0001f600"]}


def test_a_retry_delay_past_the_cap_is_the_cap():
    info = FailureInfo(type="Retry", message="later", retry_delay_seconds=1e12)
    assert info.retry_delay_seconds == MAX_RETRY_DELAY_SECONDS
    with pytest.raises(ValidationError):
        FailureInfo.model_validate_json('{"type": "E", "message": "m", "retry_delay_seconds": "5"}')


# -- JSON values -------------------------------------------------------------------------------


def test_payload_nesting_limit_is_exact():
    json_text(nested(MAX_PAYLOAD_DEPTH))
    with pytest.raises(JsonRefused, match=f"deeper than {MAX_PAYLOAD_DEPTH}"):
        json_text(nested(MAX_PAYLOAD_DEPTH + 1))
    arrays: Any = []
    for _ in range(MAX_PAYLOAD_DEPTH):
        arrays = [arrays]
    with pytest.raises(JsonRefused):
        json_text({"a": arrays})


def test_text_that_only_looks_like_an_escape_is_kept():
    for value in ({"a": r"\u0000"}, {"a": r"\ud800"}, {r"\\u0000": "\\"}):
        assert json.loads(json_text(value)) == value
    with pytest.raises(JsonRefused, match="NUL"):
        json_text({"a": "\\\x00"})  # a real NUL after an escaped backslash


def test_brackets_inside_strings_do_not_count_as_nesting():
    json_text({"text": "[{" * 1000, "list": [1, 2, 3]})


def test_a_payload_at_the_limit_parses_in_the_workers_message():
    """The server accepts up to MAX_PAYLOAD_DEPTH; the worker's parser must read it."""
    now = datetime.now(UTC)
    msg = JobMessage(
        job_id=uuid4(),
        lease_token=uuid4(),
        attempt=1,
        tenant="t",
        use_case="u",
        job_type="j",
        payload=nested(MAX_PAYLOAD_DEPTH),
        deadline=now,
        lease_expires_at=now,
        max_attempts=1,
    )
    assert JobMessage.model_validate_json(msg.model_dump_json()).payload == msg.payload


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"x": float("nan")}, "NaN"),
        ({"x": float("inf")}, "NaN"),
        ({"x": "a\x00"}, "NUL"),
        ({"a\x00": 1}, "NUL"),
        ({"x": ["\ud800"]}, "surrogate"),
    ],
)
def test_json_postgresql_cannot_store_is_refused(value: Any, says: str):
    with pytest.raises(JsonRefused, match=says):
        json_text(value)


def test_enqueue_request_applies_every_rule():
    base = {"use_case": "u", "job_type": "j"}
    EnqueueRequest.model_validate(base | {"payload": nested(MAX_PAYLOAD_DEPTH)})
    for bad in (
        {"payload": nested(MAX_PAYLOAD_DEPTH + 1)},
        {"payload": {"k": "\x00"}},
        {"dedup_key": "\x00"},
        {"run_at": "0001-01-01T00:00:00Z"},
        {"deadline": 1_700_000_000},
    ):
        with pytest.raises(ValidationError):
            EnqueueRequest.model_validate_json(json.dumps(base | bad))


# -- strict numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"priority": True},
        {"priority": "5"},
        {"priority": 5.5},
        {"max_attempts": "2"},
        {"delay_tolerance_seconds": "1"},
        {"delay_tolerance_seconds": True},
        {"backoff": {"cap_seconds": "1"}},
    ],
)
def test_numbers_of_the_wrong_json_type_are_refused(fields: dict[str, Any]):
    with pytest.raises(ValidationError):
        EnqueueRequest.model_validate_json(json.dumps({"use_case": "u", "job_type": "j"} | fields))


def test_proper_numbers_are_taken():
    req = EnqueueRequest.model_validate_json(
        '{"use_case": "u", "job_type": "j", "priority": 5, "delay_tolerance_seconds": 3}'
    )
    assert req.priority == 5 and req.delay_tolerance_seconds == 3.0


# -- lease attributes --------------------------------------------------------------------------


def _message(**fields: object) -> JobMessage:
    values: dict[str, object] = {
        "job_id": uuid4(),
        "lease_token": uuid4(),
        "attempt": 3,
        "tenant": "acme",
        "use_case": "u",
        "job_type": "j",
        "payload": {"n": 1},
        "deadline": datetime(2030, 1, 1, tzinfo=UTC),
        "lease_expires_at": datetime(2030, 1, 1, tzinfo=UTC),
        "max_attempts": 5,
    }
    return JobMessage.model_validate(values | fields)


def test_a_message_names_its_lease_in_its_first_fields():
    message = _message()
    body = message.model_dump_json()
    ref = LeaseRef(job_id=message.job_id, attempt=3, lease_token=message.lease_token)
    assert lease_from_body(body) == ref
    # what follows those fields can be anything at all: the lease still reads
    broken = body[: body.index(',"tenant"')] + ',"payload":' + "[" * 5000
    assert lease_from_body(broken) == ref


# fixed ids: parametrized ids must be the same in every collecting process
_JOB = UUID("0b9d7a5e-3f0c-4d2a-9a61-4a8f3c2e1d10")
_TOKEN = UUID("6f1e2d3c-4b5a-4978-8a9b-0c1d2e3f4a5b")


def _header(*, v: int = 1, job_id: object = None, attempt: int = 1) -> str:
    return f'{{"v":{v},"job_id":"{job_id or _JOB}","lease_token":"{_TOKEN}","attempt":{attempt}}}'


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        '{"v":1,"payload":[[[',
        _header(v=2),
        _header(job_id="x"),
        _header(attempt=0),
        " " + _header(),
    ],
)
def test_bodies_naming_no_lease_give_none(body: str):
    assert lease_from_body(body) is None


class _Model(BaseModel):
    at: Timestamp


def test_timestamp_in_a_model_names_the_field():
    with pytest.raises(ValidationError) as err:
        _Model.model_validate({"at": "0001-01-01T00:00:00Z"})
    assert err.value.errors()[0]["loc"] == ("at",)
