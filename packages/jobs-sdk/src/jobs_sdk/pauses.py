"""Pause and resume: `client.pauses` on JobsClient (`AsyncPauses`) and SyncJobsClient
(`SyncPauses`). A scope is a use case, a tenant, or a tenant within a use case; a tenant token's
tenant is its own. Both are idempotent: pausing a paused scope (or resuming one that is not
paused) changes nothing and returns its state with `changed` False, so a resend is safe."""

from __future__ import annotations

from jobs_schema import PauseList, PauseRequest, PauseState
from jobs_sdk import _http
from jobs_sdk._http import Call
from jobs_sdk._transport import AsyncSender, SyncSender

__all__ = ["AsyncPauses", "SyncPauses"]


def _change_call(path: str, use_case: str | None, tenant: str | None, reason: str | None) -> Call:
    body = _http._validated(
        PauseRequest, {"use_case": use_case, "tenant": tenant, "reason": reason}
    )
    return Call("POST", path, content=body.model_dump_json(exclude_none=True).encode())


def pause_call(use_case: str | None, tenant: str | None, reason: str | None) -> Call:
    return _change_call("/v1/pauses", use_case, tenant, reason)


def resume_call(use_case: str | None, tenant: str | None, reason: str | None) -> Call:
    return _change_call("/v1/pauses/resume", use_case, tenant, reason)


LIST_CALL = Call("GET", "/v1/pauses")


class AsyncPauses:
    def __init__(self, sender: AsyncSender) -> None:
        self._sender = sender

    async def pause(
        self, *, use_case: str | None = None, tenant: str | None = None, reason: str | None = None
    ) -> PauseState:
        """Stop claiming the scope's pending jobs from the scheduler's next pass on; running
        ones finish. ValidationFailed for an unknown use case or tenant."""
        return await self._sender.request(pause_call(use_case, tenant, reason), PauseState)

    async def resume(
        self, *, use_case: str | None = None, tenant: str | None = None, reason: str | None = None
    ) -> PauseState:
        """Claim the scope's due jobs again, earliest deadline first."""
        return await self._sender.request(resume_call(use_case, tenant, reason), PauseState)

    async def list(self) -> PauseList:
        """The paused scopes (a tenant token: those that stop its jobs) and the latest changes."""
        return await self._sender.request(LIST_CALL, PauseList)


class SyncPauses:
    """The blocking twin of `AsyncPauses`."""

    def __init__(self, sender: SyncSender) -> None:
        self._sender = sender

    def pause(
        self, *, use_case: str | None = None, tenant: str | None = None, reason: str | None = None
    ) -> PauseState:
        return self._sender.request(pause_call(use_case, tenant, reason), PauseState)

    def resume(
        self, *, use_case: str | None = None, tenant: str | None = None, reason: str | None = None
    ) -> PauseState:
        return self._sender.request(resume_call(use_case, tenant, reason), PauseState)

    def list(self) -> PauseList:
        return self._sender.request(LIST_CALL, PauseList)
