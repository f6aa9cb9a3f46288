"""Periodic jobs: `client.schedules` of JobsClient (`Schedules`) and SyncJobsClient
(`SyncSchedules`), sharing the call builders below and differing only in the I/O.

    await jobs.schedules.create("hourly", cron="0 * * * *", use_case="reports",
                                job_type="reports.build", payload={"kind": "sales"})
"""

from __future__ import annotations

from typing import TypedDict, Unpack
from urllib.parse import quote

import httpx
from pydantic import JsonValue

from jobs_schema import MissedTickPolicy, Schedule, ScheduleCreate, SchedulePage
from jobs_sdk import _http
from jobs_sdk._http import Call
from jobs_sdk._transport import AsyncSender, SyncSender

__all__ = ["ScheduleOptions", "Schedules", "SyncSchedules"]


class ScheduleOptions(TypedDict, total=False):
    """What a schedule may set besides its name, use case and job type (see ScheduleCreate);
    exactly one of `cron` and `interval_seconds`."""

    cron: str
    interval_seconds: int
    timezone: str
    payload: dict[str, JsonValue]
    delay_tolerance_seconds: float
    priority: int
    missed: MissedTickPolicy | str


def create_call(name: str, use_case: str, job_type: str, options: ScheduleOptions) -> Call:
    """ValidationFailed, before sending, for what can be checked without the server."""
    body = _http._validated(
        ScheduleCreate, {"name": name, "use_case": use_case, "job_type": job_type, **options}
    )
    content = body.model_dump_json(exclude_defaults=True).encode()
    return Call("POST", "/v1/schedules", content=content, replayable=False)


def _params(tenant: str | None) -> dict[str, str]:
    return {"tenant": tenant} if tenant is not None else {}


def list_call(tenant: str | None, cursor: str | None = None) -> Call:
    """One page; `list()` follows `next_cursor` to the end."""
    params = _params(tenant) | ({"cursor": cursor} if cursor is not None else {})
    return Call("GET", "/v1/schedules", params=params)


def get_call(name: str, tenant: str | None) -> Call:
    return Call("GET", f"/v1/schedules/{quote(name, safe='')}", params=_params(tenant))


def action_call(name: str, action: str, tenant: str | None) -> Call:
    # pausing (or resuming) twice is pausing once: safe to resend
    path = f"/v1/schedules/{quote(name, safe='')}/{action}"
    return Call("POST", path, params=_params(tenant))


def delete_call(name: str, tenant: str | None) -> Call:
    path = f"/v1/schedules/{quote(name, safe='')}"
    return Call("DELETE", path, params=_params(tenant), replayable=False)


def _deleted(response: httpx.Response) -> None:
    if not response.is_success:
        raise _http._error(response)


class Schedules:
    """The schedules of the client's tenant (an admin token names the tenant with `tenant=`)."""

    def __init__(self, sender: AsyncSender) -> None:
        self._sender = sender

    async def create(
        self, name: str, *, use_case: str, job_type: str, **options: Unpack[ScheduleOptions]
    ) -> Schedule:
        """Conflict when the tenant has one of that name."""
        return await self._sender.request(create_call(name, use_case, job_type, options), Schedule)

    async def list(self, *, tenant: str | None = None) -> list[Schedule]:
        """Every schedule the token may see (of `tenant`, for an admin token), page by page."""
        found: list[Schedule] = []
        cursor: str | None = None
        while True:
            page = await self._sender.request(list_call(tenant, cursor), SchedulePage)
            found.extend(page.items)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    async def get(self, name: str, *, tenant: str | None = None) -> Schedule:
        return await self._sender.request(get_call(name, tenant), Schedule)

    async def pause(self, name: str, *, tenant: str | None = None) -> Schedule:
        return await self._sender.request(action_call(name, "pause", tenant), Schedule)

    async def resume(self, name: str, *, tenant: str | None = None) -> Schedule:
        """The schedule goes on at its next tick; ticks while paused are not made up."""
        return await self._sender.request(action_call(name, "resume", tenant), Schedule)

    async def delete(self, name: str, *, tenant: str | None = None) -> None:
        _deleted((await self._sender.send(delete_call(name, tenant))).response)


class SyncSchedules:
    """`Schedules`, blocking."""

    def __init__(self, sender: SyncSender) -> None:
        self._sender = sender

    def create(
        self, name: str, *, use_case: str, job_type: str, **options: Unpack[ScheduleOptions]
    ) -> Schedule:
        return self._sender.request(create_call(name, use_case, job_type, options), Schedule)

    def list(self, *, tenant: str | None = None) -> list[Schedule]:
        """Every schedule the token may see (of `tenant`, for an admin token), page by page."""
        found: list[Schedule] = []
        cursor: str | None = None
        while True:
            page = self._sender.request(list_call(tenant, cursor), SchedulePage)
            found.extend(page.items)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    def get(self, name: str, *, tenant: str | None = None) -> Schedule:
        return self._sender.request(get_call(name, tenant), Schedule)

    def pause(self, name: str, *, tenant: str | None = None) -> Schedule:
        return self._sender.request(action_call(name, "pause", tenant), Schedule)

    def resume(self, name: str, *, tenant: str | None = None) -> Schedule:
        return self._sender.request(action_call(name, "resume", tenant), Schedule)

    def delete(self, name: str, *, tenant: str | None = None) -> None:
        _deleted(self._sender.send(delete_call(name, tenant)).response)
