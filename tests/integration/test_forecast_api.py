"""Feasibility over HTTP against PostgreSQL: enqueue answers carry expected_start_at and
at_risk, and GET /v1/use-cases/{use_case}/forecast with its errors, through the SDK too (the
numbers themselves: tests/unit/test_feasibility.py and test_forecast.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime

import httpx
import pytest

from jobs_sdk import JobsClient, SyncJobsClient
from jobs_sdk.errors import NotFound
from jobs_sdk.testing import FakeJobsClient
from tests.conftest import LiveServer
from tests.integration.requests import ACME, job


async def test_enqueue_answers_and_the_forecast(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as client:
        r = await client.post("/v1/jobs", json=job(delay_tolerance_seconds=3600), headers=ACME)
        assert r.status_code == 201, r.text
        body = r.json()
        # nothing ahead and every slot free: it starts at once
        assert datetime.fromisoformat(body["expected_start_at"]) <= datetime.fromisoformat(
            body["job"]["deadline"]
        )
        assert body["at_risk"] is False
        r = await client.post("/v1/jobs/batch", json={"jobs": [job(), job()]}, headers=ACME)
        assert [i["at_risk"] for i in r.json()["results"]] == [False, False]
        assert all(i["expected_start_at"] for i in r.json()["results"])

        r = await client.get("/v1/use-cases/notifications/forecast", headers=ACME)
        assert r.status_code == 200, r.text
        forecast = r.json()
        assert forecast["use_case"] == "notifications"
        assert [b["horizon"] for b in forecast["backlog"]] == [
            "overdue",
            "<10s",
            "<1min",
            "<10min",
            "<1h",
            "later",
        ]
        assert forecast["worker_slots_needed"] >= 0

        r = await client.get("/v1/use-cases/nope/forecast", headers=ACME)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
        assert "unknown use case 'nope'" in r.json()["error"]["message"]
        r = await client.get("/v1/use-cases/notifications/forecast")
        assert r.status_code == 401

    # the dashboard's overview shows it on each use case card
    async with httpx.AsyncClient(
        base_url=live_server.url, timeout=60, headers={"Origin": live_server.url}
    ) as ui:
        r = await ui.post("/ui/login", data={"token": "tok-acme", "next": "/ui"})
        assert r.status_code == 303, r.text
        page = (await ui.get("/ui")).text
        assert page.count("data-forecast") == len(live_server.settings.jobs_config().use_cases)
        assert 'data-count="slots-needed"' in page and "Projected misses" in page

    async with JobsClient(live_server.url, "tok-acme") as jobs:
        answer = await jobs.enqueue("notifications", "notifications.send_email", {"to": "b@x.io"})
        assert answer.expected_start_at is not None and not answer.at_risk
        assert (await jobs.forecast("notifications")).capacity > 0
        with pytest.raises(NotFound):
            await jobs.forecast("nope")

    def sync_forecast() -> str:  # the server runs on this event loop: block another thread
        with SyncJobsClient(live_server.url, "tok-acme") as sync_jobs:
            return sync_jobs.forecast("notifications").use_case

    assert await asyncio.to_thread(sync_forecast) == "notifications"


async def test_the_fake_client_answers_feasibility_too() -> None:
    fake = FakeJobsClient()
    answer = await fake.enqueue("uc", "t", {}, delay_tolerance=5)
    assert (answer.expected_start_at, answer.at_risk) == (answer.job.run_at, False)
    forecast = await fake.forecast("uc")
    assert (forecast.pending, forecast.worker_slots_needed) == (1, 1)
    assert {b.horizon: b.pending for b in forecast.backlog}["<10s"] == 1
