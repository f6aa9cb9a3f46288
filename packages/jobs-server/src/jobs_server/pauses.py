"""PauseService: the rules of pause and resume. The API (api/pauses.py), the dashboard and the
`jobs` command reach the same methods with the caller's principal.

- A scope is a use case (every tenant in it), a tenant (in every use case), or a tenant within
  a use case; each named one must be configured (422 otherwise).
- Admins pause and resume any scope. A tenant token pauses and resumes its own tenant only,
  in every use case or in one (its tenant is implied when omitted); a whole use case is an
  admin's, since it stops every tenant. Read-only admins and workers change nothing.
- Pausing a paused scope keeps the first pause (its who, when and why) and answers 200 with
  changed false; so does resuming one that is not paused.
- The change is in PostgreSQL; the dispatcher reads it at its next pass. A resume wakes the
  scheduler so the pass comes at once."""

from __future__ import annotations

import logging
from collections.abc import Callable

from jobs_schema import JobsConfig, PauseList, PauseRequest, PauseState
from jobs_schema.pauses import MAX_PAUSE_HISTORY
from jobs_server.auth import Principal, Role
from jobs_server.errors import BadRequest, Forbidden, UnknownTenant, UnknownUseCase
from jobs_server.store.base import PauseStore, QueuePause

__all__ = ["PauseService", "principal_name"]

logger = logging.getLogger(__name__)


def principal_name(who: Principal) -> str:
    """How a change records its author: `admin`, or `tenant:<name>`."""
    return f"tenant:{who.tenant}" if who.role is Role.TENANT else who.role.value


class PauseService:
    def __init__(
        self,
        store: PauseStore,
        config: JobsConfig,
        *,
        on_resumed: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._config = config
        self._on_resumed = on_resumed

    async def pause(self, who: Principal, req: PauseRequest) -> PauseState:
        use_case, tenant = self._scope(who, req)
        change = await self._store.pause_queue(
            use_case, tenant, principal=principal_name(who), reason=req.reason
        )
        if change.changed:
            logger.info("paused", extra={"use_case": use_case, "tenant": tenant})
        return _state(change.pause, changed=change.changed)

    async def resume(self, who: Principal, req: PauseRequest) -> PauseState:
        use_case, tenant = self._scope(who, req)
        change = await self._store.resume_queue(
            use_case, tenant, principal=principal_name(who), reason=req.reason
        )
        if change is None:
            return PauseState(
                use_case=use_case or None,
                tenant=tenant or None,
                paused=False,
                changed=False,
                changed_by=None,
                changed_at=None,
                reason=None,
            )
        if change.changed:
            logger.info("resumed", extra={"use_case": use_case, "tenant": tenant})
            if self._on_resumed is not None:
                self._on_resumed()
        return _state(change.pause, changed=change.changed)

    async def list(self, who: Principal) -> PauseList:
        """Every pause for admins; a tenant sees those that stop its jobs, and their history."""
        pauses = await self._store.list_pauses()
        history = await self._store.list_pause_history(limit=MAX_PAUSE_HISTORY)
        mine = who.tenant_scope
        if mine is not None:
            pauses = [p for p in pauses if p.tenant in ("", mine)]
            history = [p for p in history if p.tenant in ("", mine)]
        return PauseList(
            pauses=[_state(p, changed=False) for p in pauses],
            history=[_state(p, changed=True) for p in history],
        )

    def _scope(self, who: Principal, req: PauseRequest) -> tuple[str, str]:
        """(use_case, tenant) as the store keys them ("" for every one), once `who` may."""
        if not who.can_write:
            raise Forbidden(f"a {who.role.value} token cannot pause or resume")
        tenant = req.tenant
        if who.role is Role.TENANT:
            if tenant is not None and tenant != who.tenant:
                raise Forbidden(
                    f"a tenant token pauses and resumes its own tenant only ({who.tenant!r})"
                )
            tenant = who.tenant
        if req.use_case is None and tenant is None:
            raise BadRequest("name a use_case, a tenant, or both", fields=["use_case", "tenant"])
        if req.use_case is not None and req.use_case not in self._config.use_cases:
            raise UnknownUseCase(req.use_case, sorted(self._config.use_cases))
        if tenant is not None and tenant not in self._config.tenants:
            raise UnknownTenant(tenant, sorted(self._config.tenants))
        return req.use_case or "", tenant or ""


def _state(p: QueuePause, *, changed: bool) -> PauseState:
    return PauseState(
        use_case=p.use_case or None,
        tenant=p.tenant or None,
        paused=p.paused,
        changed=changed,
        changed_by=p.changed_by,
        changed_at=p.changed_at,
        reason=p.reason,
    )
