"""The sender of webhook deliveries: the handler of the built-in use case `jobs.webhooks`,
registered when a worker runs with `--webhooks` (JOBS_WEBHOOKS=true).

Per attempt it asks the server for the subscription's url and secret (the secret never
travels in a queue message), resolves the host and refuses private, loopback, link-local and
other non-public addresses again (DNS may have changed since the subscription was made), then
POSTs the event to the very address it checked, signed at send time, following no redirect.
2xx: delivered. 408, 429, 5xx, timeouts and connection errors: retried by the use case's
backoff (a 429's or 503's Retry-After is honoured, up to an hour). Any other answer, a refused
address or a deleted or paused subscription: the delivery ends dead, without retries."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import httpx

from jobs_schema.webhooks import (
    SIGNATURE_HEADER,
    WEBHOOK_JOB_TYPE,
    IpNetworks,
    WebhookDeliveryPayload,
    WebhookTarget,
    address_refused,
)
from jobs_sdk.errors import NotFound
from jobs_sdk.webhooks import sign
from jobs_sdk.worker_api import WorkerApiClient
from jobs_worker.context import JobContext
from jobs_worker.errors import PermanentFailure, Retry
from jobs_worker.registry import Registry

__all__ = ["ServerTargets", "WebhookSender", "webhook_registry"]

_RETRY_STATUSES = frozenset({408, 429})
_MAX_RETRY_AFTER = 3600.0
_RESOLVE_TIMEOUT = 5.0
_MAX_ERROR_BODY = 200
_KEPT_TARGETS = 10_000
# as many kept connections as handlers at once: a burst to one receiver reuses them instead
# of closing all but 20 (httpx's default) and connecting again on every round
_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=200)

Targets = Callable[[UUID], Awaitable[WebhookTarget]]


@dataclass(frozen=True, slots=True)
class _Pinned:
    url: str  # the URL with the checked address in place of the host
    host: str  # for the Host header and TLS (SNI and the certificate's name)


class ServerTargets:
    """Targets read through the worker API: one client per event loop, as handlers of a
    thread-isolated worker run on a loop of their own. A target read is kept `ttl` seconds
    (a burst of events to one endpoint costs one read), so a subscription deleted, paused or
    moved is seen that much later at most."""

    def __init__(
        self, base_url: str, token: str, *, timeout: float = 10.0, ttl: float = 5.0
    ) -> None:
        self._base_url = base_url
        self._token = token
        self._timeout = timeout
        self._ttl = ttl
        self._clients: dict[int, WorkerApiClient] = {}
        self._kept: dict[UUID, tuple[float, WebhookTarget]] = {}

    async def __call__(self, webhook_id: UUID) -> WebhookTarget:
        kept = self._kept.get(webhook_id)
        if kept is not None and time.monotonic() - kept[0] < self._ttl:
            return kept[1]
        loop = id(asyncio.get_running_loop())
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = WorkerApiClient(
                self._base_url, self._token, timeout=self._timeout
            )
        target = await client.webhook_target(webhook_id)
        if len(self._kept) >= _KEPT_TARGETS:
            self._kept.clear()
        self._kept[webhook_id] = (time.monotonic(), target)
        return target


class WebhookSender:
    """`targets` reads a subscription's url and secret (ServerTargets: the worker API)."""

    def __init__(
        self,
        targets: Targets,
        *,
        allow_private: bool = False,
        networks: IpNetworks | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._targets = targets
        self._allow_private = allow_private
        self._networks = networks
        self._timeout = timeout
        self._transport = transport
        self._clients: dict[int, httpx.AsyncClient] = {}

    async def deliver(self, payload: WebhookDeliveryPayload, ctx: JobContext) -> dict[str, int]:
        try:
            target = await self._targets(payload.subscription_id)
        except NotFound:
            raise PermanentFailure("the webhook subscription was deleted") from None
        if target.paused:
            raise PermanentFailure("the webhook subscription is paused")
        pinned = await self._pin(target.url)
        body = json.dumps(
            payload.event.model_dump(mode="json"), separators=(",", ":"), sort_keys=True
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "Host": pinned.host,
            SIGNATURE_HEADER: sign(body, target.secret),
            "Jobs-Event-Id": str(payload.event.id),
            "Jobs-Event-Type": payload.event.type.value,
            "Jobs-Delivery-Attempt": str(ctx.attempt),
        }
        host_name = urlsplit(target.url).hostname or ""
        try:
            resp = await self._client().post(
                pinned.url, content=body, headers=headers, extensions={"sni_hostname": host_name}
            )
        except httpx.TimeoutException:
            raise Retry("the receiver did not answer in time") from None
        except httpx.TransportError as exc:
            raise Retry(f"could not reach the receiver ({type(exc).__name__})") from None
        return _judge(resp)

    async def _pin(self, url: str) -> _Pinned:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
                _RESOLVE_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            raise Retry(f"host {host!r} does not resolve ({exc})") from None
        addresses = [str(i[4][0]) for i in infos]
        for address in addresses:
            why = address_refused(
                address, allow_private=self._allow_private, allowed=self._networks
            )
            if why is not None:
                raise PermanentFailure(f"refused: host {host!r} resolves to {why}")
        ip = addresses[0]
        netloc = f"[{ip}]" if ":" in ip else ip
        netloc += f":{parts.port}" if parts.port else ""
        host_header = parts.netloc.rsplit("@", 1)[-1]
        return _Pinned(urlunsplit(parts._replace(netloc=netloc)), host_header)

    def _client(self) -> httpx.AsyncClient:
        """One client per event loop (a thread-isolated worker runs handlers on its own)."""
        loop = id(asyncio.get_running_loop())
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = httpx.AsyncClient(
                timeout=self._timeout,
                follow_redirects=False,
                transport=self._transport,
                limits=_LIMITS,
            )
        return client

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()


def _judge(resp: httpx.Response) -> dict[str, int]:
    code = resp.status_code
    if 200 <= code < 300:
        return {"status_code": code}
    said = resp.text[:_MAX_ERROR_BODY].replace("\n", " ")
    message = f"HTTP {code} from the receiver: {said}".rstrip(": ")
    if code in _RETRY_STATUSES or code >= 500:
        raise Retry(message, delay=_retry_after(resp))
    if 300 <= code < 400:
        raise PermanentFailure(f"HTTP {code} from the receiver: redirects are not followed")
    raise PermanentFailure(message)


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER) if seconds == seconds else None


def webhook_registry(sender: WebhookSender) -> Registry:
    """A registry holding the sender, to `include` in a worker's."""
    registry = Registry()
    registry.register(WEBHOOK_JOB_TYPE, sender.deliver)
    return registry
