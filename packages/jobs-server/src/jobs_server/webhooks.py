"""Webhooks: every rule of managing a tenant's subscriptions (`WebhookService`, which the API
and the dashboard call), the check of a target's address against server-side request forgery
(`TargetCheck`), and the leader's `WebhookFanOut`, which turns the outbox (filled by the
trigger of migration 0020 in the transaction of each job change) into delivery jobs of the
built-in use case `jobs.webhooks`. A worker started with `--webhooks` sends them
(jobs_worker.webhooks). See docs/webhooks.md."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit
from uuid import UUID

from jobs_schema import JobsConfig
from jobs_schema.webhooks import (
    MAX_WEBHOOKS_PER_TENANT,
    WEBHOOK_JOB_TYPE,
    WEBHOOKS_USE_CASE,
    IpNetworks,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookEventType,
    WebhookPage,
    WebhookTarget,
    address_refused,
)
from jobs_server.auth import Principal
from jobs_server.clock import Clock
from jobs_server.errors import BadRequest, WebhookConflict, WebhookNotFound
from jobs_server.service import EnqueueListener, JobIds
from jobs_server.store.webhook_port import (
    FannedOut,
    FanOutRules,
    StoredDelivery,
    StoredWebhook,
    WebhookStore,
)

__all__ = [
    "FanOutRules",
    "TargetCheck",
    "WebhookFanOut",
    "WebhookService",
    "fan_out_rules",
    "webhook_view",
]

logger = logging.getLogger(__name__)

_RESOLVE_TIMEOUT = 5.0
_DELIVERY_PAGE = 100
_RESPONSE_CODE = re.compile(r"\bHTTP (\d{3})\b")


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """Where deliveries may go: not to private, loopback, link-local, multicast, reserved or
    unspecified addresses, unless `allow_private` or the address is in `allowed`."""

    allow_private: bool = False
    networks: IpNetworks | None = None

    async def refused(self, url: str) -> str | None:
        """Why `url`'s host may not be a target (every address it resolves to is judged), or
        None when it may."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
                _RESOLVE_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            return f"host {host!r} does not resolve ({exc})"
        for info in infos:
            why = address_refused(
                str(info[4][0]), allow_private=self.allow_private, allowed=self.networks
            )
            if why is not None:
                return f"host {host!r} resolves to {why}"
        return None


def fan_out_rules(config: JobsConfig) -> FanOutRules | None:
    """The delivery jobs' rules, from the built-in use case's config (None: webhooks off)."""
    uc = config.use_cases.get(WEBHOOKS_USE_CASE)
    if uc is None:
        return None
    return FanOutRules(
        use_case=WEBHOOKS_USE_CASE,
        job_type=WEBHOOK_JOB_TYPE,
        tolerance_seconds=uc.default_delay_tolerance_seconds,
        max_attempts=uc.max_attempts,
        backoff=uc.backoff,
    )


def webhook_view(row: StoredWebhook) -> Webhook:
    return Webhook(
        id=row.id,
        tenant=row.tenant,
        url=row.url,
        event_types=[WebhookEventType(t) for t in row.event_types],
        use_case=row.use_case,
        description=row.description,
        paused=row.paused,
        created_at=row.created_at,
    )


def delivery_view(row: StoredDelivery) -> WebhookDelivery:
    """A delivery as its job has it: the receiver's last status is in the job's result (a
    success) or its last error ("HTTP 503 ..." from the sender)."""
    code: int | None = None
    if isinstance(row.result, dict) and isinstance(row.result.get("status_code"), int):
        code = int(row.result["status_code"])  # type: ignore[arg-type]
    elif row.last_error and (m := _RESPONSE_CODE.search(row.last_error)):
        code = int(m.group(1))
    return WebhookDelivery(
        job_id=row.job_id,
        event_id=row.event_id,
        event_type=WebhookEventType(row.event_type),
        status=row.status,
        attempts=row.attempts,
        response_code=code,
        last_error=row.last_error,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


class WebhookService:
    """A tenant token manages its own subscriptions; an admin token names the tenant."""

    def __init__(
        self,
        store: WebhookStore,
        config: JobsConfig,
        *,
        clock: Clock,
        targets: TargetCheck,
        limit: int = MAX_WEBHOOKS_PER_TENANT,
    ) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._targets = targets
        self._limit = limit
        self._ids = JobIds(clock)

    @property
    def enabled(self) -> bool:
        return WEBHOOKS_USE_CASE in self._config.use_cases

    async def create(
        self, who: Principal, body: WebhookCreate, *, tenant: str | None = None
    ) -> WebhookCreated:
        owner = _owner(who, tenant)
        if not self.enabled:
            raise WebhookConflict(
                "webhooks are off on this server; the operator turns them on with "
                "JOBS_WEBHOOKS=true (and runs a worker with --webhooks)"
            )
        if body.use_case == WEBHOOKS_USE_CASE:
            raise BadRequest(
                f"use_case: {WEBHOOKS_USE_CASE!r} is the deliveries' own and makes no events; "
                "name another use case, or none for every one",
                field="use_case",
            )
        if body.use_case is not None and body.use_case not in self._config.use_cases:
            known = ", ".join(sorted(self._config.use_cases))
            raise BadRequest(
                f"use_case: unknown use case {body.use_case!r}; configured: {known}",
                field="use_case",
            )
        why = await self._targets.refused(body.url)
        if why is not None:
            raise BadRequest(
                f"url: {why}; deliveries go only to public addresses (an operator may allow "
                "others with JOBS_WEBHOOKS_ALLOW_PRIVATE or JOBS_WEBHOOKS_ALLOWED_NETWORKS)",
                field="url",
            )
        secret = "whsec_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        row = StoredWebhook(
            id=self._ids.new(),
            tenant=owner,
            url=body.url,
            event_types=sorted({t.value for t in body.event_types}),
            use_case=body.use_case,
            description=body.description,
            paused=False,
            created_at=self._clock.now(),
        )
        stored = await self._store.create_webhook(row, secret=secret, limit=self._limit)
        if stored is None:
            raise WebhookConflict(
                f"tenant {owner!r} has {self._limit} webhooks, the most it may; delete one first"
            )
        return WebhookCreated(**webhook_view(stored).model_dump(), secret=secret)

    async def list(self, who: Principal, *, tenant: str | None = None) -> WebhookPage:
        scope = who.tenant_scope
        if scope is not None and tenant is not None and tenant != scope:
            return WebhookPage(items=[])
        limit = self._limit if (scope or tenant) else 10_000
        rows = await self._store.list_webhooks(tenant=scope or tenant, limit=limit)
        return WebhookPage(items=[webhook_view(r) for r in rows])

    async def get(self, who: Principal, webhook_id: UUID) -> Webhook:
        return webhook_view(await self._row(who, webhook_id))

    async def set_paused(self, who: Principal, webhook_id: UUID, *, paused: bool) -> Webhook:
        """Paused: its tenant's events make no deliveries to it, and deliveries already made
        end without a request."""
        row = await self._store.set_webhook_paused(
            webhook_id, tenant=who.tenant_scope, paused=paused
        )
        if row is None:
            raise WebhookNotFound(webhook_id)
        return webhook_view(row)

    async def delete(self, who: Principal, webhook_id: UUID) -> None:
        if not await self._store.delete_webhook(webhook_id, tenant=who.tenant_scope):
            raise WebhookNotFound(webhook_id)

    async def deliveries(
        self, who: Principal, webhook_id: UUID, *, cursor: UUID | None = None, limit: int = 50
    ) -> WebhookDeliveryPage:
        await self._row(who, webhook_id)
        limit = max(1, min(limit, _DELIVERY_PAGE))
        rows = await self._store.list_webhook_deliveries(webhook_id, before=cursor, limit=limit)
        more = str(rows[-1].job_id) if len(rows) == limit else None
        return WebhookDeliveryPage(items=[delivery_view(r) for r in rows], next_cursor=more)

    async def target(self, webhook_id: UUID) -> WebhookTarget:
        """For the worker about to send (worker token only): url and secret."""
        target = await self._store.get_webhook_target(webhook_id)
        if target is None:
            raise WebhookNotFound(webhook_id)
        return target

    async def _row(self, who: Principal, webhook_id: UUID) -> StoredWebhook:
        row = await self._store.get_webhook(webhook_id, tenant=who.tenant_scope)
        if row is None:
            raise WebhookNotFound(webhook_id)
        return row


def _owner(who: Principal, tenant: str | None) -> str:
    scope = who.tenant_scope
    owner = scope if scope is not None else tenant
    if owner is None:
        raise BadRequest("name the webhook's tenant (?tenant=...)", field="tenant")
    if scope is not None and tenant not in (None, scope):
        raise BadRequest("a tenant token creates webhooks of its own tenant only", field="tenant")
    return owner


class WebhookFanOut:
    """Each pass makes up to `batch` outbox events into delivery jobs (one per subscription
    that wants each) in one statement, and tells `on_enqueued` so the dispatcher wakes. A
    backlog larger than `batch` drains over the following passes."""

    def __init__(
        self,
        store: WebhookStore,
        rules: FanOutRules,
        *,
        batch: int = 1_000,
        on_enqueued: EnqueueListener | None = None,
    ) -> None:
        self._store = store
        self._rules = rules
        self._batch = batch
        self._on_enqueued = on_enqueued

    async def run_once(self, now: datetime) -> FannedOut:
        done = await self._store.fan_out_webhook_events(self._rules, limit=self._batch)
        if done.deliveries:
            logger.info(
                "webhook deliveries made",
                extra={"events": done.events, "deliveries": done.deliveries},
            )
            if self._on_enqueued is not None:
                self._on_enqueued({self._rules.use_case}, now)
        return done
