"""Webhooks' pure rules: the signature (jobs_sdk.webhooks), the address rule against
server-side request forgery and the subscription model's ranges (jobs_schema.webhooks), how
the sender judges an answer, and the in-memory client kit."""

from __future__ import annotations

import hashlib
import hmac

import httpx
import pytest
from pydantic import ValidationError

from jobs_schema.webhooks import (
    MAX_WEBHOOK_URL_LENGTH,
    WebhookCreate,
    address_refused,
    parse_networks,
)
from jobs_sdk.webhooks import InvalidSignature, sign, verify
from jobs_worker.errors import PermanentFailure, Retry
from jobs_worker.webhooks import _judge

BODY = b'{"id":"e1","type":"succeeded"}'
SECRET = "whsec_test"


def test_a_signature_is_hmac_sha256_of_the_timestamp_and_the_body() -> None:
    header = sign(BODY, SECRET, timestamp=1_700_000_000)
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify(BODY, header, SECRET, now=1_700_000_100) == 1_700_000_000
    assert verify(BODY.decode(), header, SECRET, now=1_700_000_000) == 1_700_000_000


@pytest.mark.parametrize(
    ("body", "header", "secret", "now", "says"),
    [
        (BODY, None, SECRET, 1_700_000_000, "no Jobs-Signature"),
        (BODY, "", SECRET, 1_700_000_000, "no Jobs-Signature"),
        (BODY, "garbage", SECRET, 1_700_000_000, "malformed"),
        (BODY, "t=abc,v1=00", SECRET, 1_700_000_000, "not a number"),
        (BODY, "v1=00", SECRET, 1_700_000_000, "needs t= and v1="),
        (BODY, "t=1700000000", SECRET, 1_700_000_000, "needs t= and v1="),
        (BODY, "SIGNED", "other-secret", 1_700_000_000, "does not match"),
        (BODY + b" ", "SIGNED", SECRET, 1_700_000_000, "does not match"),
        (BODY, "SIGNED", SECRET, 1_700_000_301, "more than 300"),
        (BODY, "SIGNED", SECRET, 1_699_999_699, "more than 300"),
    ],
    ids=[
        "missing",
        "empty",
        "malformed",
        "bad-timestamp",
        "no-timestamp",
        "no-signature",
        "wrong-secret",
        "changed-body",
        "too-old",
        "from-the-future",
    ],
)
def test_verify_refuses(
    body: bytes, header: str | None, secret: str, now: float, says: str
) -> None:
    if header == "SIGNED":
        header = sign(BODY, SECRET, timestamp=1_700_000_000)
    with pytest.raises(InvalidSignature, match=says):
        verify(body, header, secret, now=now)


def test_verify_takes_any_of_several_signatures() -> None:
    old = sign(BODY, "old", timestamp=1_700_000_000)
    new = sign(BODY, SECRET, timestamp=1_700_000_000).split(",")[1]
    assert verify(BODY, f"{old},{new}", SECRET, now=1_700_000_000) == 1_700_000_000


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("100.64.0.1", "not globally routable"),
        ("240.0.0.1", "reserved"),
        ("fc00::1", "private"),
        ("93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
    ],
    ids=lambda v: str(v),
)
def test_address_rule(address: str, refused: str | None) -> None:
    why = address_refused(address)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why


def test_operators_allow_private_addresses_or_networks() -> None:
    assert address_refused("10.1.2.3", allow_private=True) is None
    nets = parse_networks("10.1.0.0/16, ::1/128")
    assert address_refused("10.1.2.3", allowed=nets) is None
    assert address_refused("::1", allowed=nets) is None
    assert address_refused("10.2.0.1", allowed=nets) is not None
    with pytest.raises(ValueError, match="not a CIDR"):
        parse_networks("10.0.0.0/33")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/x", "http or https"),
        ("example.com/x", "http or https"),
        ("https:///x", "no host"),
        ("https://u:p@example.com/", "credentials"),
        ("https://example.com/#frag", "fragment"),
        ("https://example.com/a b", "no spaces"),
        ("https://exa\x00mple.com/", "control"),
        ("https://example.com:70000/", "not a valid URL"),
        ("https://example.com/" + "a" * MAX_WEBHOOK_URL_LENGTH, "at most"),
    ],
    ids=["ftp", "no-scheme", "no-host", "credentials", "fragment", "space", "nul", "port", "long"],
)
def test_bad_urls_are_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        WebhookCreate(url=url, event_types=["dead"])


def test_event_types_are_known_and_at_least_one() -> None:
    with pytest.raises(ValidationError):
        WebhookCreate.model_validate({"url": "https://e.com/", "event_types": []})
    with pytest.raises(ValidationError):
        WebhookCreate.model_validate({"url": "https://e.com/", "event_types": ["exploded"]})
    with pytest.raises(ValidationError):
        WebhookCreate.model_validate(
            {"url": "https://e.com/", "event_types": ["dead"], "secret": "mine"}
        )
    ok = WebhookCreate.model_validate({"url": "https://e.com/", "event_types": ["batch_finished"]})
    assert [t.value for t in ok.event_types] == ["batch_finished"]


def _answer(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, text="why", request=httpx.Request("POST", "/"))


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299], ids=str)
def test_a_2xx_is_delivered(status: int) -> None:
    assert _judge(_answer(status)) == {"status_code": status}


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504], ids=str)
def test_408_429_and_5xx_are_retried(status: int) -> None:
    with pytest.raises(Retry, match=f"HTTP {status} from the receiver: why") as retry:
        _judge(_answer(status))
    assert retry.value.delay is None  # the use case's backoff


def test_retry_after_is_honoured_up_to_an_hour() -> None:
    with pytest.raises(Retry) as retry:
        _judge(_answer(429, **{"Retry-After": "7"}))
    assert retry.value.delay == 7
    with pytest.raises(Retry) as retry:
        _judge(_answer(503, **{"Retry-After": "999999"}))
    assert retry.value.delay == 3600
    with pytest.raises(Retry) as retry:
        _judge(_answer(503, **{"Retry-After": "nan"}))
    assert retry.value.delay is None


@pytest.mark.parametrize("status", [301, 302, 307, 400, 401, 403, 404, 410, 422], ids=str)
def test_redirects_and_other_4xx_end_the_delivery(status: int) -> None:
    with pytest.raises(PermanentFailure, match=f"HTTP {status}"):
        _judge(_answer(status))
