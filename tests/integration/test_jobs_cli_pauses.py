"""`jobs pause`, `jobs resume` and `jobs pauses` against a real jobs-server on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import LiveServer
from tests.integration.test_jobs_cli import Jobs


@pytest.fixture
def jobs(live_server: LiveServer, tmp_path: Path) -> Jobs:
    return Jobs(live_server, tmp_path)


async def test_pause_list_and_resume(jobs: Jobs, live_server: LiveServer):
    assert await jobs("pauses") == "nothing is paused\n"
    out = await jobs("pause", "--use-case", "labeling", "--reason", "reindex")
    assert out.startswith("use case labeling, tenant acme: paused (by tenant:acme at ")
    assert out.rstrip().endswith("(reindex)")
    assert await jobs("pause", "--use-case", "labeling") == (
        "use case labeling, tenant acme: already paused\n"
    )
    listed = await jobs("pauses")
    assert listed.startswith("use case labeling, tenant acme: paused by tenant:acme at ")
    state = await jobs.json("resume", "--use-case", "labeling")
    assert (state["paused"], state["changed"]) == (False, True)
    admin = live_server.admin_token
    everything = await jobs("pause", "--use-case", "notifications", JOBS_TOKEN=admin)
    assert everything.startswith("use case notifications, every tenant: paused (by admin")
    assert (await jobs.json("pauses"))["pauses"][0]["use_case"] == "notifications"


async def test_what_the_server_refuses_is_an_error(jobs: Jobs):
    assert "unknown use case 'nope'" in await jobs("pause", "--use-case", "nope", code=1)
    assert "own tenant" in await jobs("pause", "--tenant", "globex", code=1)
    assert "name a use_case, a tenant" in await jobs("resume", code=1, JOBS_TOKEN="tok-admin")
