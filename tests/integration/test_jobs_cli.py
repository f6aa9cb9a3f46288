"""The `jobs` operator command (jobs-sdk[cli]) against a real jobs-server on loopback: each
command, human and --json output, the settings' sources and its errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from jobs_sdk.cli import app
from tests.conftest import LiveServer

EMAIL = ["notifications", "notifications.send_email"]


class Jobs:
    """Runs `jobs ...` in a thread (the server runs on this test's event loop)."""

    def __init__(self, server: LiveServer, tmp_path: Path) -> None:
        self.env = {
            "JOBS_URL": server.url,
            "JOBS_TOKEN": server.tenant_token("acme"),
            "JOBS_PROFILE": "",
            "JOBS_PROFILES_FILE": str(tmp_path / "profiles.toml"),
        }

    async def __call__(self, *args: str, code: int = 0, **env: str) -> str:
        runner = CliRunner()
        result = await asyncio.to_thread(
            runner.invoke, app, list(args), env={**self.env, **env}, input="y\n"
        )
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result.stdout if code == 0 else result.stderr

    async def json(self, *args: str) -> object:
        return json.loads(await self("--json", *args))


@pytest.fixture
def jobs(live_server: LiveServer, tmp_path: Path) -> Jobs:
    return Jobs(live_server, tmp_path)


async def test_enqueue_get_and_list(jobs: Jobs):
    out = await jobs("enqueue", *EMAIL, '{"to": "a@example.com"}', "--delay-tolerance", "30")
    assert out.startswith("enqueued ") and ": pending, deadline " in out
    job_id = out.split()[1].rstrip(":")
    created = await jobs.json("enqueue", *EMAIL, "{}", "--dedup-key", "k", "--priority", "7")
    assert created["job"]["priority"] == 7 and not created["deduplicated"]
    again = await jobs("enqueue", *EMAIL, "{}", "--dedup-key", "k")
    assert again.startswith(f"already enqueued (dedup key) {created['job']['id']}")
    details = await jobs("get", job_id)
    assert f"id          {job_id}" in details
    assert 'payload     {"to": "a@example.com"}' in details
    assert (await jobs.json("get", job_id))["payload"] == {"to": "a@example.com"}
    table = (await jobs("list", "--use-case", "notifications")).splitlines()
    assert table[0].split() == [
        "ID",
        "STATUS",
        "USE",
        "CASE",
        "JOB",
        "TYPE",
        "ATTEMPTS",
        "DEADLINE",
        "CREATED",
    ]
    assert [row.split()[0] for row in table[1:]] == [created["job"]["id"], job_id]
    assert "0/3" in table[1]
    listed = await jobs.json("list", "--limit", "1")
    assert [j["id"] for j in listed] == [created["job"]["id"]]
    assert await jobs("list", "--status", "dead") == "no jobs match\n"


async def test_payload_from_a_file_and_from_stdin(jobs: Jobs, tmp_path: Path):
    path = tmp_path / "payload.json"
    path.write_text('{"to": "file@example.com"}')
    from_file = await jobs.json("enqueue", *EMAIL, f"@{path}")
    assert from_file["job"]["payload"] == {"to": "file@example.com"}
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, app, ["--json", "enqueue", *EMAIL, "-"], env=jobs.env, input='{"n": 1}'
    )
    assert json.loads(result.stdout)["job"]["payload"] == {"n": 1}


async def test_cancel_retry_and_count(jobs: Jobs):
    ids = [(await jobs.json("enqueue", "labeling", "tag", "{}"))["job"]["id"] for _ in range(3)]
    assert await jobs("count", "--use-case", "labeling") == "3\n"
    assert (await jobs("cancel", ids[0])).strip() == f"{ids[0]}: cancelled"
    assert (await jobs.json("retry", ids[0]))["status"] == "pending"
    # bulk: counts, asks (the runner answers y), acts on what it counted
    out = await jobs("cancel", "--use-case", "labeling")
    assert "cancel 3 of 3 matching jobs? [y/N]: " in out and "3 jobs cancelled or marked" in out
    assert await jobs("count", "--status", "cancelled") == "3\n"
    retried = await jobs.json("retry", "--status", "cancelled", "--limit", "2", "--yes")
    assert (retried["touched"], retried["more"]) == (2, True)
    assert await jobs("count", "--action", "retry") == "1\n"
    counted = await jobs.json("count", "--status", "pending")
    assert counted["count"] == 2 and counted["max_id"] in ids
    assert "no job matches that retry can change" in await jobs("retry", "--job-type", "none")


async def test_a_refused_confirmation_changes_nothing(jobs: Jobs, live_server: LiveServer):
    await jobs("enqueue", "labeling", "tag")
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, app, ["cancel", "--use-case", "labeling"], env=jobs.env, input="n\n"
    )
    assert result.exit_code == 1 and "Aborted" in result.stderr
    assert await jobs("count", "--status", "pending") == "1\n"


async def test_errors_are_readable_and_set_the_exit_status(jobs: Jobs):
    err = await jobs("get", "00000000-0000-0000-0000-000000000000", code=1)
    assert err.startswith("error: not_found: ")
    assert "unknown use case" in await jobs("enqueue", "nope", "x", code=1)
    assert "the payload is not JSON" in await jobs("enqueue", *EMAIL, "{oops", code=1)
    assert "must be a JSON object, not list" in await jobs("enqueue", *EMAIL, "[1]", code=1)
    assert "error: unauthorized" in await jobs("count", code=1, JOBS_TOKEN="wrong")
    assert "give a job id or filters, not both" in await jobs(
        "cancel", "x", "--status", "pending", code=2
    )
    assert "retry what?" in await jobs("retry", code=2)


async def test_settings_come_from_flags_env_or_a_profile(
    jobs: Jobs, live_server: LiveServer, tmp_path: Path
):
    (tmp_path / "profiles.toml").write_text(
        f'[default]\nurl = "{live_server.url}"\ntoken = "tok-globex"\n\n'
        f'[acme]\nurl = "{live_server.url}"\ntoken_env = "ACME_TOKEN"\n'
    )
    await jobs("enqueue", "labeling", "tag")  # JOBS_URL / JOBS_TOKEN: acme
    no_env = {"JOBS_URL": "", "JOBS_TOKEN": ""}
    assert await jobs("count", **no_env) == "0\n"  # the default profile: globex
    assert await jobs("--profile", "acme", "count", **no_env, ACME_TOKEN="tok-acme") == "1\n"
    assert await jobs("count", **no_env, JOBS_PROFILE="acme", ACME_TOKEN="tok-acme") == "1\n"
    flags = ["--url", live_server.url, "--token", "tok-globex"]
    assert await jobs(*flags, "count") == "0\n"  # flags beat the environment
    err = await jobs("--profile", "prod", "count", code=2)
    assert "no profile 'prod'" in err and "profiles: acme, default" in err
    assert "reads its token from ACME_TOKEN, which is not set" in await jobs(
        "--profile", "acme", "count", code=2
    )
    missing = await jobs(
        "count", code=2, JOBS_URL="", JOBS_TOKEN="", JOBS_PROFILES_FILE="/nonexistent/p.toml"
    )
    assert "no url and no token: pass --url, set JOBS_URL" in missing


def test_the_jobs_script_is_installed_and_runs():
    done = subprocess.run(
        [Path(sys.executable).with_name("jobs"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "enqueue" in done.stdout


async def test_enqueue_with_a_uniqueness_rule(jobs: Jobs):
    rule = '{"key": "r", "window": "enqueued", "seconds": 3600}'
    created = await jobs.json("enqueue", *EMAIL, "{}", "--unique", rule)
    assert created["job"]["dedup_key"] == "r" and not created["deduplicated"]
    await jobs("cancel", created["job"]["id"])
    again = await jobs("enqueue", *EMAIL, "{}", "--unique", rule)
    assert again.startswith(f"already enqueued (dedup key) {created['job']['id']}")
    details = await jobs("get", created["job"]["id"])
    assert 'unique      {"window":"enqueued","seconds":3600.0}' in details
    assert "--unique is not JSON" in await jobs("enqueue", *EMAIL, "{}", "--unique", "{", code=1)
    bad = await jobs("enqueue", *EMAIL, "{}", "--unique", '{"key": "r", "seconds": 5}', code=1)
    assert "unique.seconds is taken" in bad


async def test_wait_follows_a_job_to_its_end(jobs: Jobs, live_server: LiveServer):
    job_id = (await jobs.json("enqueue", "labeling", "tag", "{}"))["job"]["id"]
    waiting = asyncio.create_task(jobs.json("wait", job_id, "--timeout", "30"))
    await asyncio.sleep(0.2)  # let it open the stream; the outcome does not depend on it
    # not through `jobs`: CliRunner captures output process-wide, one invocation at a time
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        token = live_server.tenant_token("acme")
        r = await http.post(
            f"/v1/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200
    assert (await waiting)["status"] == "cancelled"  # type: ignore[index]
    other = (await jobs.json("enqueue", "labeling", "tag", "{}"))["job"]["id"]
    assert "is still pending" in await jobs("wait", other, "--timeout", "0.2", code=1)
