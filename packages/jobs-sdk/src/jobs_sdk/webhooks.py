"""Webhooks: `verify` for receivers, `sign` for the sender (jobs-worker), and `Webhooks`
(`client.webhooks`) to manage a tenant's subscriptions.

Every delivery carries `Jobs-Signature: t=<unix seconds>,v1=<hex>` where the hex is
HMAC-SHA256(secret, f"{t}.{body}") over the exact body bytes sent. A receiver recomputes it
with the subscription's secret, compares in constant time, and refuses a timestamp further
than `tolerance` seconds from its own clock (a replayed old delivery). A header may carry
several v1 values: one matching is enough."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from uuid import UUID

from jobs_schema.webhooks import (
    SIGNATURE_HEADER,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryPage,
    WebhookEventType,
    WebhookPage,
)
from jobs_sdk import _http
from jobs_sdk._http import Call
from jobs_sdk._transport import AsyncSender, SyncSender
from jobs_sdk.schedules import _deleted, _params

__all__ = [
    "SIGNATURE_HEADER",
    "InvalidSignature",
    "SyncWebhooks",
    "Webhooks",
    "sign",
    "verify",
]

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


# -- managing subscriptions: `client.webhooks` of JobsClient and SyncJobsClient ---------------


def _create_call(
    url: str,
    event_types: Sequence[WebhookEventType | str],
    use_case: str | None,
    description: str,
    tenant: str | None,
) -> Call:
    """ValidationFailed, before sending, for what can be checked without the server."""
    fields = {"url": url, "event_types": list(event_types), "use_case": use_case}
    body = _http._validated(WebhookCreate, {**fields, "description": description})
    content = body.model_dump_json(exclude_defaults=True).encode()
    return Call("POST", "/v1/webhooks", content=content, params=_params(tenant), replayable=False)


def _deliveries_call(webhook_id: UUID, cursor: str | None, limit: int) -> Call:
    params = {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
    return Call("GET", f"/v1/webhooks/{webhook_id}/deliveries", params=params)


def _action_call(webhook_id: UUID, action: str) -> Call:
    return Call("POST", f"/v1/webhooks/{webhook_id}/{action}")  # twice is once: resendable


def _delete_call(webhook_id: UUID) -> Call:
    return Call("DELETE", f"/v1/webhooks/{webhook_id}", replayable=False)


class Webhooks:
    """The webhook subscriptions of the client's tenant (an admin token names the tenant with
    `tenant=` to create or list)."""

    def __init__(self, sender: AsyncSender) -> None:
        self._sender = sender

    async def create(
        self,
        url: str,
        event_types: Sequence[WebhookEventType | str],
        *,
        use_case: str | None = None,
        description: str = "",
        tenant: str | None = None,
    ) -> WebhookCreated:
        """The subscription and its signing secret (shown this once: keep it)."""
        call = _create_call(url, event_types, use_case, description, tenant)
        return await self._sender.request(call, WebhookCreated)

    async def list(self, *, tenant: str | None = None) -> list[Webhook]:
        call = Call("GET", "/v1/webhooks", params=_params(tenant))
        return (await self._sender.request(call, WebhookPage)).items

    async def get(self, webhook_id: UUID) -> Webhook:
        return await self._sender.request(Call("GET", f"/v1/webhooks/{webhook_id}"), Webhook)

    async def deliveries(
        self, webhook_id: UUID, *, cursor: str | None = None, limit: int = 50
    ) -> WebhookDeliveryPage:
        """Newest first; `next_cursor` of a full page asks for older ones."""
        call = _deliveries_call(webhook_id, cursor, limit)
        return await self._sender.request(call, WebhookDeliveryPage)

    async def pause(self, webhook_id: UUID) -> Webhook:
        return await self._sender.request(_action_call(webhook_id, "pause"), Webhook)

    async def resume(self, webhook_id: UUID) -> Webhook:
        return await self._sender.request(_action_call(webhook_id, "resume"), Webhook)

    async def delete(self, webhook_id: UUID) -> None:
        _deleted((await self._sender.send(_delete_call(webhook_id))).response)


class SyncWebhooks:
    """`Webhooks`, blocking."""

    def __init__(self, sender: SyncSender) -> None:
        self._sender = sender

    def create(
        self,
        url: str,
        event_types: Sequence[WebhookEventType | str],
        *,
        use_case: str | None = None,
        description: str = "",
        tenant: str | None = None,
    ) -> WebhookCreated:
        call = _create_call(url, event_types, use_case, description, tenant)
        return self._sender.request(call, WebhookCreated)

    def list(self, *, tenant: str | None = None) -> list[Webhook]:
        call = Call("GET", "/v1/webhooks", params=_params(tenant))
        return self._sender.request(call, WebhookPage).items

    def get(self, webhook_id: UUID) -> Webhook:
        return self._sender.request(Call("GET", f"/v1/webhooks/{webhook_id}"), Webhook)

    def deliveries(
        self, webhook_id: UUID, *, cursor: str | None = None, limit: int = 50
    ) -> WebhookDeliveryPage:
        return self._sender.request(
            _deliveries_call(webhook_id, cursor, limit), WebhookDeliveryPage
        )

    def pause(self, webhook_id: UUID) -> Webhook:
        return self._sender.request(_action_call(webhook_id, "pause"), Webhook)

    def resume(self, webhook_id: UUID) -> Webhook:
        return self._sender.request(_action_call(webhook_id, "resume"), Webhook)

    def delete(self, webhook_id: UUID) -> None:
        _deleted(self._sender.send(_delete_call(webhook_id)).response)
