"""The in-memory webhook subscriptions of `jobs_sdk.testing`: the server's rules for a tenant
token (the fake's tenant), without I/O. What a fake cannot do as the server does: it resolves
no host (the address rule against request forgery is the server's, at creation and at send),
and nothing is sent, so the delivery log stays empty."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from jobs_schema import ErrorCode
from jobs_schema.webhooks import (
    MAX_WEBHOOKS_PER_TENANT,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryPage,
    WebhookEventType,
)
from jobs_sdk._fake import FakeJobs
from jobs_sdk._http import _validated
from jobs_sdk.errors import Conflict, NotFound

__all__ = ["FakeSyncWebhooks", "FakeWebhookBook", "FakeWebhooks"]


@dataclass
class FakeWebhookBook:
    """The subscriptions of one tenant token."""

    jobs: FakeJobs
    _hooks: dict[UUID, Webhook] = field(default_factory=dict)

    def create(
        self,
        url: str,
        event_types: Sequence[WebhookEventType | str],
        use_case: str | None,
        description: str,
    ) -> WebhookCreated:
        body = _validated(
            WebhookCreate,
            {
                "url": url,
                "event_types": list(event_types),
                "use_case": use_case,
                "description": description,
            },
        )
        if body.use_case is not None:
            self.jobs.check_use_case(body.use_case)
        if len(self._hooks) >= MAX_WEBHOOKS_PER_TENANT:
            raise Conflict(
                f"tenant {self.jobs.tenant!r} has {MAX_WEBHOOKS_PER_TENANT} webhooks, the most "
                "it may; delete one first",
                code=ErrorCode.CONFLICT,
                status=409,
                details={},
            )
        hook = Webhook(
            id=uuid.uuid4(),
            tenant=self.jobs.tenant,
            url=body.url,
            event_types=sorted(set(body.event_types)),
            use_case=body.use_case,
            description=body.description,
            paused=False,
            created_at=self.jobs.clock(),
        )
        self._hooks[hook.id] = hook
        return WebhookCreated(**hook.model_dump(), secret="whsec_" + secrets.token_urlsafe(32))

    def list(self) -> list[Webhook]:
        return sorted(self._hooks.values(), key=lambda h: (h.created_at, h.id))

    def get(self, webhook_id: UUID) -> Webhook:
        hook = self._hooks.get(webhook_id)
        if hook is None:
            raise NotFound(
                f"webhook {webhook_id} not found",
                code=ErrorCode.NOT_FOUND,
                status=404,
                details={"webhook_id": str(webhook_id)},
            )
        return hook

    def deliveries(self, webhook_id: UUID) -> WebhookDeliveryPage:
        self.get(webhook_id)
        return WebhookDeliveryPage(items=[])

    def set_paused(self, webhook_id: UUID, paused: bool) -> Webhook:
        hook = self.get(webhook_id).model_copy(update={"paused": paused})
        self._hooks[webhook_id] = hook
        return hook

    def delete(self, webhook_id: UUID) -> None:
        self.get(webhook_id)
        del self._hooks[webhook_id]


class FakeWebhooks:
    """`JobsClient.webhooks` in memory: the fake tenant's subscriptions."""

    def __init__(self, book: FakeWebhookBook) -> None:
        self._book = book

    async def create(
        self,
        url: str,
        event_types: Sequence[WebhookEventType | str],
        *,
        use_case: str | None = None,
        description: str = "",
        tenant: str | None = None,
    ) -> WebhookCreated:
        return self._book.create(url, event_types, use_case, description)

    async def list(self, *, tenant: str | None = None) -> list[Webhook]:
        return self._book.list()

    async def get(self, webhook_id: UUID) -> Webhook:
        return self._book.get(webhook_id)

    async def deliveries(
        self, webhook_id: UUID, *, cursor: str | None = None, limit: int = 50
    ) -> WebhookDeliveryPage:
        return self._book.deliveries(webhook_id)

    async def pause(self, webhook_id: UUID) -> Webhook:
        return self._book.set_paused(webhook_id, True)

    async def resume(self, webhook_id: UUID) -> Webhook:
        return self._book.set_paused(webhook_id, False)

    async def delete(self, webhook_id: UUID) -> None:
        self._book.delete(webhook_id)


class FakeSyncWebhooks:
    """`SyncJobsClient.webhooks` in memory."""

    def __init__(self, book: FakeWebhookBook) -> None:
        self._book = book

    def create(
        self,
        url: str,
        event_types: Sequence[WebhookEventType | str],
        *,
        use_case: str | None = None,
        description: str = "",
        tenant: str | None = None,
    ) -> WebhookCreated:
        return self._book.create(url, event_types, use_case, description)

    def list(self, *, tenant: str | None = None) -> list[Webhook]:
        return self._book.list()

    def get(self, webhook_id: UUID) -> Webhook:
        return self._book.get(webhook_id)

    def deliveries(
        self, webhook_id: UUID, *, cursor: str | None = None, limit: int = 50
    ) -> WebhookDeliveryPage:
        return self._book.deliveries(webhook_id)

    def pause(self, webhook_id: UUID) -> Webhook:
        return self._book.set_paused(webhook_id, True)

    def resume(self, webhook_id: UUID) -> Webhook:
        return self._book.set_paused(webhook_id, False)

    def delete(self, webhook_id: UUID) -> None:
        self._book.delete(webhook_id)
