"""The dashboard's webhooks page (/ui/webhooks): the viewer's subscriptions with their latest
deliveries, a form to subscribe a URL (the secret shown once, on the page that answers it) and
a Delete button per subscription. Every action is the WebhookService call the API makes, with
the viewer's principal, behind the dashboard's CSRF check."""

from __future__ import annotations

from urllib.parse import parse_qsl
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from jobs_schema.config import describe_errors
from jobs_schema.webhooks import WebhookCreate, WebhookCreated, WebhookEventType
from jobs_server.dashboard.routes import Page, Refused, _action_form, _Route, _see_other, _templates
from jobs_server.dashboard.session import Viewer
from jobs_server.dashboard.templating import ui_path
from jobs_server.webhooks import WebhookService

__all__ = ["router"]

router = APIRouter(prefix="/ui", include_in_schema=False, route_class=_Route)

_RECENT = 5  # deliveries shown per subscription


def _webhooks(request: Request) -> WebhookService:
    webhooks: WebhookService = request.app.state.jobs.webhooks
    return webhooks


async def _render(
    request: Request, viewer: Viewer, *, created: WebhookCreated | None = None, status: int = 200
) -> Response:
    service = _webhooks(request)
    page = await service.list(viewer.principal)
    recent = {
        h.id: (await service.deliveries(viewer.principal, h.id, limit=_RECENT)).items
        for h in page.items
    }
    done = request.query_params.get("done")
    return _templates(request).page(
        request,
        "webhooks.html",
        status=status,
        viewer=viewer,
        page=page,
        recent=recent,
        created=created,
        enabled=service.enabled,
        event_types=[t.value for t in WebhookEventType],
        done=done if done == "deleted" else None,
    )


@router.get("/webhooks")
async def webhooks_page(request: Request, viewer: Page) -> Response:
    return await _render(request, viewer)


@router.post("/webhooks")
async def create_webhook(request: Request, viewer: Page) -> Response:
    """The subscribe form: the answer is this page with the new secret, shown this once."""
    form = await _action_form(request, viewer)
    pairs = parse_qsl((await request.body()).decode(errors="replace"), keep_blank_values=True)
    events = [value for key, value in pairs if key == "event_types"]
    fields: dict[str, object] = {"url": form.get("url", ""), "event_types": events}
    if form.get("use_case"):
        fields["use_case"] = form["use_case"]
    if form.get("description"):
        fields["description"] = form["description"]
    try:
        body = WebhookCreate.model_validate(fields)
    except ValidationError as exc:
        raise Refused(422, describe_errors(exc)) from None
    tenant = form.get("tenant") or None
    created = await _webhooks(request).create(viewer.principal, body, tenant=tenant)
    return await _render(request, viewer, created=created, status=201)


@router.post("/webhooks/{webhook_id}/delete")
async def delete_webhook(request: Request, viewer: Page, webhook_id: str) -> Response:
    await _action_form(request, viewer)
    try:
        parsed = UUID(webhook_id)
    except ValueError:
        raise Refused(404, "no such webhook") from None
    await _webhooks(request).delete(viewer.principal, parsed)
    return _see_other(f"{ui_path(request)}/webhooks?done=deleted")
