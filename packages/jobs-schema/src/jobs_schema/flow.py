"""The state of the flow limits, as GET /v1/use-cases/{use_case}/rate-keys shows it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RateKeyList", "RateKeyState"]


class RateKeyState(BaseModel):
    """One rate key: its starts in the current interval, and its jobs waiting."""

    model_config = ConfigDict(frozen=True)

    rate_key: str
    started: int = Field(description="starts in the last interval")
    next_slot: datetime = Field(description="the earliest a job of this key may start")
    waiting: int = Field(description="due pending jobs of this key")
    throttled: int = Field(description="of those, how many the limit holds back now")


class RateKeyList(BaseModel):
    """A use case's rate limit and its busiest rate keys, most waiting first."""

    model_config = ConfigDict(frozen=True)

    use_case: str
    starts: int | None = Field(description="the limit's starts per interval; None: no limit")
    per_seconds: float | None = Field(description="the limit's interval")
    keys: list[RateKeyState]
