"""`jobs schedules ...` against a real jobs-server on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import LiveServer
from tests.integration.test_jobs_cli import Jobs


@pytest.fixture
def jobs(live_server: LiveServer, tmp_path: Path) -> Jobs:
    return Jobs(live_server, tmp_path)


async def test_create_list_pause_resume_delete(jobs: Jobs) -> None:
    out = await jobs(
        "schedules",
        "create",
        "nightly",
        "--use-case",
        "notifications",
        "--job-type",
        "notifications.send_email",
        "--cron",
        "30 2 * * *",
        "--timezone",
        "Europe/Paris",
        "--missed",
        "run_once",
    )
    assert out.startswith("created nightly: next run ")
    listed = await jobs("schedules", "list")
    assert listed.startswith("nightly\t30 2 * * * (Europe/Paris)\tnotifications/")
    assert (await jobs("schedules", "pause", "nightly")).strip() == "nightly: paused"
    assert (await jobs.json("schedules", "resume", "nightly"))["paused"] is False  # type: ignore[index]
    assert (await jobs("schedules", "delete", "nightly")).strip() == "deleted nightly"
    assert (await jobs("schedules", "list")).strip() == "no schedules"
    err = await jobs("schedules", "pause", "nightly", code=1)
    assert "not found" in err


async def test_bad_input_is_named(jobs: Jobs) -> None:
    err = await jobs(
        "schedules", "create", "x", "--use-case", "notifications", "--job-type", "j", code=1
    )
    assert "exactly one of cron" in err
