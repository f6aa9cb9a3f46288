"""Webhook subscriptions under /v1/webhooks: thin, every rule is in WebhookService. A tenant's
token manages its own; an admin token names the tenant with `?tenant=` to create or list."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends, Query, Request
from fastapi.responses import Response

from jobs_schema.limits import Key
from jobs_schema.webhooks import (
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryPage,
    WebhookPage,
    WebhookTarget,
)
from jobs_server.api.deps import Producer, Reader, Worker
from jobs_server.api.errors import BODY_ERRORS, documented_errors, json_response
from jobs_server.api.route import api_router, server_in
from jobs_server.webhooks import WebhookService

__all__ = ["router", "worker_router"]

router = api_router("webhooks", prefix="/v1/webhooks")
worker_router = api_router("worker", prefix="/v1/worker")


async def _webhooks_of(request: Request) -> WebhookService:
    return server_in(request.scope).webhooks


Webhooks = Annotated[WebhookService, Depends(_webhooks_of)]
Tenant = Annotated[
    Key | None, Query(description="an admin token's choice of tenant; a tenant token's own")
]
Cursor = Annotated[
    UUID | None, Query(description="next_cursor of the previous page: older deliveries")
]
Limit = Annotated[int, Query(ge=1, le=100, description="deliveries per page, 1-100")]


@router.post(
    "",
    status_code=201,
    responses={201: {"model": WebhookCreated}, **documented_errors(*BODY_ERRORS, 409)},
    summary="Subscribe a URL to job events; the answer holds the signing secret, shown once",
)
async def create_webhook(
    body: WebhookCreate, who: Producer, webhooks: Webhooks, tenant: Tenant = None
) -> Response:
    return json_response(await webhooks.create(who, body, tenant=tenant), 201)


@router.get("", responses={200: {"model": WebhookPage}}, summary="List webhook subscriptions")
async def list_webhooks(who: Reader, webhooks: Webhooks, tenant: Tenant = None) -> Response:
    return json_response(await webhooks.list(who, tenant=tenant))


@router.get(
    "/{webhook_id}",
    responses={200: {"model": Webhook}, **documented_errors(404)},
    summary="A webhook subscription (never its secret)",
)
async def get_webhook(webhook_id: UUID, who: Reader, webhooks: Webhooks) -> Response:
    return json_response(await webhooks.get(who, webhook_id))


@router.get(
    "/{webhook_id}/deliveries",
    responses={200: {"model": WebhookDeliveryPage}, **documented_errors(404)},
    summary="A subscription's deliveries, newest first: status, attempts, last response code",
)
async def list_webhook_deliveries(
    webhook_id: UUID,
    who: Reader,
    webhooks: Webhooks,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Response:
    return json_response(await webhooks.deliveries(who, webhook_id, cursor=cursor, limit=limit))


@router.post(
    "/{webhook_id}/pause",
    responses={200: {"model": Webhook}, **documented_errors(404)},
    summary="Pause a subscription: no deliveries until it is resumed (events meanwhile are "
    "not sent later)",
)
async def pause_webhook(webhook_id: UUID, who: Producer, webhooks: Webhooks) -> Response:
    return json_response(await webhooks.set_paused(who, webhook_id, paused=True))


@router.post(
    "/{webhook_id}/resume",
    responses={200: {"model": Webhook}, **documented_errors(404)},
    summary="Resume a paused subscription",
)
async def resume_webhook(webhook_id: UUID, who: Producer, webhooks: Webhooks) -> Response:
    return json_response(await webhooks.set_paused(who, webhook_id, paused=False))


@router.delete(
    "/{webhook_id}",
    status_code=204,
    responses={204: {"description": "Deleted"}, **documented_errors(404)},
    summary="Delete a subscription and its delivery log",
)
async def delete_webhook(webhook_id: UUID, who: Producer, webhooks: Webhooks) -> Response:
    await webhooks.delete(who, webhook_id)
    return Response(status_code=204)


@worker_router.get(
    "/webhooks/{webhook_id}",
    name="get_webhook_target",
    responses={200: {"model": WebhookTarget}, **documented_errors(404)},
)
async def webhook_target(webhook_id: UUID, _: Worker, webhooks: Webhooks) -> Response:
    """Where a delivery goes and the secret it is signed with, read at send time (the secret
    never travels in a queue message)."""
    return json_response(await webhooks.target(webhook_id))
