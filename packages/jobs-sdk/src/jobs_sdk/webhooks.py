"""Webhook signatures: `verify` for receivers, `sign` for the sender (jobs-worker).

Every delivery carries `Jobs-Signature: t=<unix seconds>,v1=<hex>` where the hex is
HMAC-SHA256(secret, f"{t}.{body}") over the exact body bytes sent. A receiver recomputes it
with the subscription's secret, compares in constant time, and refuses a timestamp further
than `tolerance` seconds from its own clock (a replayed old delivery). A header may carry
several v1 values (while a secret is rotated): one matching is enough."""

from __future__ import annotations

import hashlib
import hmac
import time

from jobs_schema.webhooks import SIGNATURE_HEADER

__all__ = ["SIGNATURE_HEADER", "InvalidSignature", "sign", "verify"]

DEFAULT_TOLERANCE_SECONDS = 300


class InvalidSignature(Exception):
    """The header is missing or malformed, the signature does not match, or it is too old."""


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The Jobs-Signature header's value for `body`, at `timestamp` (default: now)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_digest(secret, t, body)}"


def verify(
    body: bytes | str,
    header: str | None,
    secret: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check a delivery: `body` as received (bytes, before any JSON parsing), the
    Jobs-Signature header, the subscription's secret. Returns the signed timestamp; raises
    InvalidSignature otherwise."""
    if isinstance(body, str):
        body = body.encode()
    if not header:
        raise InvalidSignature(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise InvalidSignature(f"malformed {SIGNATURE_HEADER} header")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise InvalidSignature("the signature's timestamp is not a number") from None
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise InvalidSignature(f"{SIGNATURE_HEADER} needs t= and v1=")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidSignature(f"the signature's timestamp is more than {tolerance} s away")
    expected = _digest(secret, timestamp, body)
    # compare_digest on every candidate: no early exit that would time the match
    matched = [hmac.compare_digest(expected, c) for c in candidates]
    if not any(matched):
        raise InvalidSignature("the signature does not match the body and secret")
    return timestamp
