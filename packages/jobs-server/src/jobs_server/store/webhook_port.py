"""The webhooks' storage port (part of JobStore) and the types it takes and returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from pydantic import JsonValue

from jobs_schema import BackoffPolicy
from jobs_schema.webhooks import WebhookTarget

__all__ = ["FanOutRules", "FannedOut", "StoredDelivery", "StoredWebhook", "WebhookStore"]


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    """A `webhook_subscriptions` row, without its secret."""

    id: UUID
    tenant: str
    url: str
    event_types: list[str]
    use_case: str | None
    description: str
    paused: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredDelivery:
    """One delivery (event, subscription) and what its job has come to."""

    job_id: UUID
    event_id: UUID
    event_type: str
    status: str
    attempts: int
    result: JsonValue
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class FanOutRules:
    """What a delivery job is made of: the built-in use case's name and retry rules."""

    use_case: str
    job_type: str
    tolerance_seconds: float
    max_attempts: int
    backoff: BackoffPolicy


@dataclass(frozen=True, slots=True)
class FannedOut:
    events: int  # outbox events taken (and deleted)
    deliveries: int  # delivery jobs made of them


class WebhookStore(Protocol):
    """Subscriptions, their delivery log, and the outbox the job changes fill (in the
    transaction of the change) and the leader empties into delivery jobs."""

    async def create_webhook(
        self, hook: StoredWebhook, *, secret: str, limit: int
    ) -> StoredWebhook | None:
        """Stored, unless the tenant has `limit` subscriptions already (None), race-free."""
        ...

    async def list_webhooks(self, *, tenant: str | None, limit: int) -> list[StoredWebhook]: ...

    async def get_webhook(
        self, webhook_id: UUID, *, tenant: str | None
    ) -> StoredWebhook | None: ...

    async def set_webhook_paused(
        self, webhook_id: UUID, *, tenant: str | None, paused: bool
    ) -> StoredWebhook | None: ...

    async def delete_webhook(self, webhook_id: UUID, *, tenant: str | None) -> bool: ...

    async def get_webhook_target(self, webhook_id: UUID) -> WebhookTarget | None:
        """Its url and secret, for the worker about to send."""
        ...

    async def list_webhook_deliveries(
        self, webhook_id: UUID, *, before: UUID | None, limit: int
    ) -> list[StoredDelivery]:
        """Newest first, delivery job ids below `before`."""
        ...

    async def emit_webhook_event(
        self, tenant: str, event_type: str, *, use_case: str | None, data: dict[str, JsonValue]
    ) -> bool:
        """An event that is not a job's status change (batch_finished): into the outbox, at
        the store's now, when a subscription of the tenant wants it (False: none does). The
        hook for the code that decides such an event; call it in that decision's transaction
        where there is one (SQL: webhook_emit, migration 0020)."""
        ...

    async def fan_out_webhook_events(self, rules: FanOutRules, *, limit: int) -> FannedOut:
        """Up to `limit` outbox events made into one delivery job per subscription that wants
        each, and removed from the outbox, at once: exactly once per (event, subscription)."""
        ...
