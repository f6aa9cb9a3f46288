"""A use case's deadline forecast, as GET /v1/use-cases/{use_case}/forecast shows it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ForecastBucket", "UseCaseForecast"]


class ForecastBucket(BaseModel):
    """Pending jobs whose deadline falls in one horizon from now."""

    model_config = ConfigDict(frozen=True)

    horizon: str = Field(
        description="overdue, <10s, <1min, <10min, <1h or later: time left to the deadline"
    )
    pending: int
    projected_misses: int = Field(description="of those, how many start late at drain_rate")


class UseCaseForecast(BaseModel):
    """The backlog of a use case in claim order, and what it takes to meet its deadlines.
    Counts span the use case's tenants and lag by about a second (docs/feasibility.md)."""

    model_config = ConfigDict(frozen=True)

    use_case: str
    measured_at: datetime
    capacity: int = Field(description="the use case's max running jobs")
    running: int
    pending: int
    throughput: float | None = Field(
        description="running attempts ended per second, last measured; None: not yet"
    )
    mean_duration_seconds: float | None = Field(
        description="mean seconds from dispatch to end of an attempt; None: not yet"
    )
    drain_rate: float = Field(description="jobs per second the estimate assumes start")
    projected_misses: int = Field(description="pending jobs that start late at drain_rate")
    worker_slots_needed: int = Field(
        description="slots for every pending job to start by its deadline at the mean "
        "duration (the gauge jobs_worker_slots_needed)"
    )
    backlog: list[ForecastBucket]
