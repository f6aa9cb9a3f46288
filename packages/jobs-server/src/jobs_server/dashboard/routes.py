"""The dashboard's pages under /ui: server-rendered HTML and forms that post back here. Reads go
through JobService and the overview's statistics; every action calls the same JobService and
ActionService methods as the public API, with the same principal, so the dashboard can do
nothing a script holding the same token cannot."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError

from jobs_schema import (
    MAX_BULK_JOBS,
    BulkAction,
    JobSelection,
    JobStatus,
    PauseList,
    PauseRequest,
    PauseState,
    UseCaseForecast,
)
from jobs_schema.config import describe_errors
from jobs_schema.limits import Key
from jobs_server.actions import ACTIONABLE, RETRYABLE, ActionService
from jobs_server.api.errors import entry_for
from jobs_server.dashboard.overview import load_overview
from jobs_server.dashboard.session import (
    Viewer,
    dashboard_principal,
    end_session,
    same_origin,
    start_session,
    viewer_of,
)
from jobs_server.dashboard.templating import Templates, ui_path
from jobs_server.dashboard.timeline import timeline
from jobs_server.dashboard.workflow import layered, neighbours
from jobs_server.errors import JobConflict, JobNotFound, JobsServerError
from jobs_server.pauses import PauseService
from jobs_server.schedules import ScheduleService
from jobs_server.service import JobService
from jobs_server.workflows import WorkflowService

__all__ = ["LoginRequired", "Refused", "login_required", "refused", "router"]

logger = logging.getLogger(__name__)


class _Route(APIRoute):
    """Domain errors on a dashboard page become an error page, not the API's JSON envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except JobsServerError as exc:
                raise _refusal(exc) from exc

        return run


router = APIRouter(prefix="/ui", include_in_schema=False, route_class=_Route)

_FORM_LIMIT = 64 * 1024
_PAGE = 50


class LoginRequired(Exception):
    def __init__(self, next_url: str) -> None:
        super().__init__("log in first")
        self.next_url = next_url


class Refused(Exception):
    """A request the dashboard turns down with an error page."""

    def __init__(self, status: int, message: str, *, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


# -- plumbing ---------------------------------------------------------------------------------


def _templates(request: Request) -> Templates:
    templates: Templates = request.app.state.dashboard
    return templates


def _service(request: Request) -> JobService:
    service: JobService = request.app.state.jobs.service
    return service


def _actions(request: Request) -> ActionService:
    actions: ActionService = request.app.state.jobs.actions
    return actions


def _pauses(request: Request) -> PauseService:
    pauses: PauseService = request.app.state.jobs.pauses
    return pauses


def _schedules(request: Request) -> ScheduleService:
    schedules: ScheduleService = request.app.state.jobs.schedules
    return schedules


async def _viewer(request: Request) -> Viewer:
    jobs = request.app.state.jobs
    viewer = await viewer_of(request, jobs.authenticator, jobs.store)
    request.state.viewer = viewer  # for the error page, which must not look it up again
    if viewer is None:
        query = f"?{request.url.query}" if request.url.query else ""
        raise LoginRequired(request.url.path + query)
    return viewer


Page = Annotated[Viewer, Depends(_viewer)]


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _FORM_LIMIT:
        raise Refused(413, "form too large")
    return dict(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))


async def _action_form(request: Request, viewer: Viewer) -> dict[str, str]:
    """The posted form, once it is known to come from our own page and the viewer may act."""
    form = await _form(request)
    if viewer.csrf is not None and not (same_origin(request) and viewer.csrf_ok(form.get("csrf"))):
        raise Refused(
            403, "This form expired or did not come from this dashboard. Reload the page."
        )
    if not viewer.can_write:
        raise Refused(403, "This token is read-only: it can look, not act.")
    return form


def _refusal(exc: JobsServerError) -> Refused:
    """The error page of a domain error, from the API's entry for it (api/errors.py)."""
    entry = entry_for(exc)
    return Refused(entry.status, entry.page_message(exc), retry_after=entry.retry_after)


def _see_other(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def _local(url: str | None, fallback: str) -> str:
    """`url` if it is a path of this dashboard (never another site), else `fallback`."""
    if url and url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    return fallback


# -- filters ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    """The job list's filters, as they travel in query strings and hidden form fields."""

    status: str = ""
    use_case: str = ""
    tenant: str = ""
    job_type: str = ""
    created_after: str = ""
    created_before: str = ""
    q: str = ""

    @classmethod
    def parse(cls, values: Any, viewer: Viewer) -> Filters:
        found = {f.name: str(values.get(f.name, "")).strip()[:200] for f in fields(cls)}
        if not viewer.is_admin:
            found["tenant"] = ""
        return cls(**found)

    def query(self, **extra: object) -> str:
        pairs = [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name)]
        pairs += [(k, str(v)) for k, v in extra.items() if v not in (None, "")]
        return urlencode(pairs)

    @property
    def any(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def job_status(self) -> JobStatus | None:
        if not self.status:
            return None
        try:
            return JobStatus(self.status)
        except ValueError:
            raise Refused(400, f"unknown status {self.status!r}") from None

    def selection(self, **extra: Any) -> JobSelection:
        try:
            return self._selection(**extra)
        except ValidationError as exc:  # the API's own ranges (jobs_schema.limits)
            raise Refused(400, describe_errors(exc)) from None

    def _selection(self, **extra: Any) -> JobSelection:
        dedup_key = self.q if self.q and _as_uuid(self.q) is None else None
        return JobSelection(
            status=self.job_status(),
            use_case=self.use_case or None,
            job_type=self.job_type or None,
            tenant=self.tenant or None,
            dedup_key=dedup_key,
            created_after=_as_time(self.created_after, "created after"),
            created_before=_as_time(self.created_before, "created before"),
            **extra,
        )


def _as_uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


def _as_time(text: str, what: str) -> datetime | None:
    """A datetime-local field (or any ISO time); without a zone it is UTC."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise Refused(400, f"{what}: {text!r} is not a date and time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


# -- login ------------------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request, next: str = "") -> Response:
    return _templates(request).page(request, "login.html", viewer=None, next=next, error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    if not same_origin(request):
        raise Refused(403, "Log in from this dashboard's own login page.")
    form = await _form(request)
    token = form.get("token", "").strip()
    next_url = _local(form.get("next"), ui_path(request))
    who = dashboard_principal(request.app.state.jobs.authenticator, token) if token else None
    if who is None:
        return _templates(request).page(
            request,
            "login.html",
            status=401,
            viewer=None,
            next=next_url,
            error="That token is not one this server knows (worker tokens cannot log in here).",
        )
    jobs = request.app.state.jobs
    response = _see_other(next_url)
    await start_session(
        request,
        response,
        store=jobs.store,
        token=token,
        principal=who,
        ttl_seconds=jobs.settings.dashboard_session_ttl_seconds,
    )
    return response


@router.post("/logout")
async def logout(request: Request, viewer: Page) -> Response:
    form = await _form(request)
    if viewer.csrf is not None and not (same_origin(request) and viewer.csrf_ok(form.get("csrf"))):
        raise Refused(403, "This form expired. Reload the page.")
    response = _see_other(ui_path(request) + "/login")
    await end_session(request, response, store=request.app.state.jobs.store)
    return response


# -- pages --------------------------------------------------------------------------------------


@router.get("")
@router.get("/")
async def overview(request: Request, viewer: Page) -> Response:
    jobs = request.app.state.jobs
    data = await load_overview(jobs.store, jobs.config, viewer.principal)
    pauses = await _pauses(request).list(viewer.principal)
    return _templates(request).page(
        request,
        "overview.html",
        viewer=viewer,
        data=data,
        forecasts={uc.name: await _forecast(request, viewer, uc.name) for uc in data.use_cases},
        stopped={uc.name: _stopping(pauses, uc.name) for uc in data.use_cases},
        own_pause={uc.name: _own_pause(pauses, uc.name, viewer) for uc in data.use_cases},
    )


async def _forecast(request: Request, viewer: Viewer, use_case: str) -> UseCaseForecast | None:
    """The use case's forecast; None when the server runs without it (JOBS_FEASIBILITY=off)."""
    try:
        return await _service(request).forecast(viewer.principal, use_case)
    except JobConflict:
        return None


def _stopping(pauses: PauseList, use_case: str) -> list[PauseState]:
    """The pauses (the viewer may see) that stop jobs of `use_case`."""
    return [p for p in pauses.pauses if p.use_case in (None, use_case)]


def _own_pause(pauses: PauseList, use_case: str, viewer: Viewer) -> PauseState | None:
    """The pause a card's button changes: an admin's, the whole use case; a tenant's, its own
    tenant in it."""
    tenant = viewer.principal.tenant_scope
    return next((p for p in pauses.pauses if (p.use_case, p.tenant) == (use_case, tenant)), None)


@router.post("/pauses")
async def pause_or_resume(request: Request, viewer: Page) -> Response:
    """A use case card's Pause or Resume button (the whole use case for an admin, the viewer's
    own tenant in it for a tenant)."""
    form = await _action_form(request, viewer)
    try:
        req = PauseRequest(use_case=form.get("use_case"), reason=form.get("reason") or None)
    except ValidationError as exc:
        raise Refused(422, describe_errors(exc)) from None
    if form.get("action") == "pause":
        await _pauses(request).pause(viewer.principal, req)
    elif form.get("action") == "resume":
        await _pauses(request).resume(viewer.principal, req)
    else:
        raise Refused(400, "choose pause or resume")
    return _see_other(f"{ui_path(request)}/#uc-{req.use_case}")


@router.get("/jobs")
async def jobs_list(request: Request, viewer: Page) -> Response:
    filters = Filters.parse(request.query_params, viewer)
    cursor = request.query_params.get("cursor") or None
    found = _as_uuid(filters.q) if filters.q else None
    if found is not None:
        try:
            await _service(request).get(viewer.principal, found)
            return _see_other(f"{ui_path(request)}/jobs/{found}")
        except JobNotFound:
            page = None
    else:
        page = await _service(request).list(
            viewer.principal, filters.selection(), cursor=cursor, limit=_PAGE
        )
    return _templates(request).page(
        request,
        "jobs.html",
        viewer=viewer,
        filters=filters,
        page=page,
        cursor=cursor,
        statuses=list(JobStatus),
        can_cancel=filters.status in ("", JobStatus.PENDING, JobStatus.RUNNING),
        can_retry=filters.status in ("", *RETRYABLE),
        done=_done(request),
    )


def _done(request: Request) -> dict[str, Any] | None:
    """What the last action did (counts only: no text from the query string is shown)."""
    q = request.query_params
    if q.get("done") not in ("cancel", "retry", "cancelled", "retried"):
        return None
    try:
        return {
            "action": q["done"],
            "n": int(q.get("n", "0")),
            "skipped": int(q.get("skipped", "0")),
        }
    except ValueError:
        return None


@router.get("/schedules")
async def schedules_list(request: Request, viewer: Page) -> Response:
    cursor = request.query_params.get("cursor") or None
    page = await _schedules(request).list(viewer.principal, cursor=cursor)
    done = request.query_params.get("done")
    return _templates(request).page(
        request,
        "schedules.html",
        viewer=viewer,
        page=page,
        cursor=cursor,
        done=done if done in _SCHEDULE_DONE.values() else None,
    )


_SCHEDULE_DONE = {"pause": "paused", "resume": "resumed", "delete": "deleted"}


@router.post("/schedules")
async def schedule_action(request: Request, viewer: Page) -> Response:
    """A schedule row's Pause, Resume or Delete button: the ScheduleService call the API makes,
    with the viewer's principal (a tenant, its own schedules; an admin, any, naming its tenant).
    A schedule from the config file is read-only here too (409)."""
    form = await _action_form(request, viewer)
    action = form.get("action", "")
    if action not in _SCHEDULE_DONE:
        raise Refused(400, "choose pause, resume or delete")
    name = _schedule_field(form, "name")
    tenant = _schedule_field(form, "tenant") if form.get("tenant") else None
    schedules = _schedules(request)
    if action == "pause":
        await schedules.pause(viewer.principal, name, tenant=tenant)
    elif action == "resume":
        await schedules.resume(viewer.principal, name, tenant=tenant)
    else:
        await schedules.delete(viewer.principal, name, tenant=tenant)
    return _see_other(f"{ui_path(request)}/schedules?done={_SCHEDULE_DONE[action]}")


_KEY: TypeAdapter[str] = TypeAdapter(Key)


def _schedule_field(form: dict[str, str], field: str) -> str:
    """A schedule's name or tenant as the API takes it (1 to 200 characters, no NUL)."""
    try:
        return _KEY.validate_python(form.get(field, ""))
    except ValidationError as exc:
        raise Refused(422, f"{field}: {describe_errors(exc)}") from None


@router.get("/jobs/bulk")
async def bulk_confirm(request: Request, viewer: Page) -> Response:
    filters = Filters.parse(request.query_params, viewer)
    action = _bulk_action(request.query_params.get("action"))
    count = await _actions(request).count(viewer.principal, filters.selection(), action=action)
    return _templates(request).page(
        request,
        "confirm.html",
        viewer=viewer,
        filters=filters,
        action=action,
        count=count,
        limit=MAX_BULK_JOBS,
        statuses=sorted(s.value for s in ACTIONABLE[action]),
    )


def _bulk_action(value: str | None) -> BulkAction:
    try:
        return BulkAction(value or "")
    except ValueError:
        raise Refused(400, "choose cancel or retry") from None


@router.post("/jobs/bulk")
async def bulk(request: Request, viewer: Page) -> Response:
    form = await _action_form(request, viewer)
    filters = Filters.parse(form, viewer)
    action = _bulk_action(form.get("action"))
    expected = _int(form.get("expected"))
    back = f"{ui_path(request)}/jobs?{filters.query()}"
    if expected <= 0:
        return _see_other(back)
    selection = filters.selection(
        max_id=_as_uuid(form.get("max_id", "")), limit=min(expected, MAX_BULK_JOBS)
    )
    actions = _actions(request)
    if action is BulkAction.CANCEL:
        result = await actions.cancel_matching(viewer.principal, selection)
    else:
        result = await actions.retry_matching(viewer.principal, selection)
    done = {"done": action.value, "n": result.touched, "skipped": result.skipped}
    return _see_other(f"{ui_path(request)}/jobs?{filters.query(**done)}")


def _job_id(text: str) -> UUID:
    parsed = _as_uuid(text)
    if parsed is None:
        raise Refused(404, "There is no job with that id.")
    return parsed


def _int(text: str | None) -> int:
    try:
        return int(text or "0")
    except ValueError:
        return 0


@router.get("/jobs/{job_id}")
async def job_detail(request: Request, viewer: Page, job_id: str) -> Response:
    job = await _service(request).get(viewer.principal, _job_id(job_id))
    # its neighbours come first in the walk: a few hundred cover them, not the whole workflow
    graph = await _workflows(request).graph(viewer.principal, job.id, limit=_NEIGHBOURS)
    now: datetime = request.app.state.jobs.clock.now()
    notice = request.query_params.get("done")
    return _templates(request).page(
        request,
        "job.html",
        viewer=viewer,
        job=job,
        events=timeline(job, now),
        workflow=neighbours(graph, job.id),
        now=now,
        notice=notice if notice in ("cancelled", "retried") else None,
        can_cancel=job.status in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.WAITING)
        and not job.cancel_requested,
        can_retry=job.status in RETRYABLE,
    )


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, viewer: Page, job_id: str) -> Response:
    form = await _action_form(request, viewer)
    job = await _service(request).cancel(viewer.principal, _job_id(job_id))
    back = _local(form.get("next"), f"{ui_path(request)}/jobs/{job.id}?done=cancelled")
    return _see_other(back)


@router.post("/jobs/{job_id}/retry")
async def retry(request: Request, viewer: Page, job_id: str) -> Response:
    form = await _action_form(request, viewer)
    job = await _actions(request).retry(viewer.principal, _job_id(job_id))
    back = _local(form.get("next"), f"{ui_path(request)}/jobs/{job.id}?done=retried")
    return _see_other(back)


# -- errors -------------------------------------------------------------------------------------


async def login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    if request.method != "GET":
        return await refused(request, Refused(401, "Log in first."))
    return _see_other(f"{ui_path(request)}/login?{urlencode({'next': exc.next_url})}")


async def refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    viewer = getattr(request.state, "viewer", None)
    response = _templates(request).page(
        request, "error.html", status=exc.status, viewer=viewer, message=exc.message
    )
    if exc.retry_after is not None:
        response.headers["Retry-After"] = exc.retry_after
    return response


# -- workflows and batches (docs/workflows.md) --------------------------------------------------


_NEIGHBOURS = 300  # linked jobs a job's page reads (its parents and children among them)


def _workflows(request: Request) -> WorkflowService:
    workflows: WorkflowService = request.app.state.jobs.workflows
    return workflows


@router.get("/jobs/{job_id}/graph")
async def job_graph(request: Request, viewer: Page, job_id: str) -> Response:
    graph = await _workflows(request).graph(viewer.principal, _job_id(job_id))
    return _templates(request).page(
        request, "graph.html", viewer=viewer, job_id=graph.jobs[0].id, graph=layered(graph)
    )


@router.get("/batches/{batch_id}")
async def batch_detail(request: Request, viewer: Page, batch_id: str) -> Response:
    parsed = _as_uuid(batch_id)
    if parsed is None:
        raise Refused(404, "There is no batch with that id.")
    batch = await _workflows(request).get_batch(viewer.principal, parsed)
    return _templates(request).page(request, "batch.html", viewer=viewer, batch=batch)
