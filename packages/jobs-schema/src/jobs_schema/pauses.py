"""Bodies of pause and resume. A scope is a use case, a tenant (in every use case), or a tenant
within a use case. While a scope is paused its pending jobs stay pending and are not claimed;
running ones finish and their outcomes are accepted as usual. Pausing a paused scope, or resuming
one that is not paused, changes nothing and answers with its state as it is (idempotent)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from jobs_schema.jobs import StoredTime
from jobs_schema.limits import Key, Text

__all__ = ["MAX_PAUSE_HISTORY", "MAX_REASON_CHARS", "PauseList", "PauseRequest", "PauseState"]

MAX_REASON_CHARS = 1000
MAX_PAUSE_HISTORY = 50

Reason = Annotated[Text, Field(max_length=MAX_REASON_CHARS)]


class PauseRequest(BaseModel):
    """The body of `POST /v1/pauses` and `POST /v1/pauses/resume`. Name a use case, a tenant,
    or both. A tenant token's tenant is its own (omitted or named); only admins name a use case
    alone, or another tenant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_case: Key | None = Field(
        default=None, description="a configured use case; omitted: every use case"
    )
    tenant: Key | None = Field(
        default=None,
        description="a configured tenant; omitted: every tenant (a tenant token: its own)",
    )
    reason: Reason | None = Field(
        default=None, description=f"why, recorded with the change (at most {MAX_REASON_CHARS})"
    )


class PauseState(BaseModel):
    """A scope's state and its last change. `use_case` or `tenant` null: every one."""

    model_config = ConfigDict(frozen=True)

    use_case: str | None
    tenant: str | None
    paused: bool
    changed: bool = Field(description="this request changed it (false: it already was so)")
    changed_by: str | None = Field(
        description="who made the last change: admin, or tenant:<name>; null: never paused"
    )
    changed_at: StoredTime | None = Field(description="when, by the server's clock")
    reason: str | None


class PauseList(BaseModel):
    model_config = ConfigDict(frozen=True)

    pauses: list[PauseState] = Field(description="the paused scopes")
    history: list[PauseState] = Field(
        description=f"the latest changes, newest first (at most {MAX_PAUSE_HISTORY})"
    )
