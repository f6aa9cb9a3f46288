"""The README's quick start, run as written: its shell lines and its Python example, parsed out
of README.md, against a real `jobs-server dev` process. The one change made to them is the
port: dev listens on a free one here instead of 8000."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration import dev_process
from tests.integration.dev_process import REPO, Dev, dev_env, start_dev

pytestmark = pytest.mark.slow

devs = dev_process.devs  # the fixture

DEV_CONFIG = REPO / "packages/jobs-server/src/jobs_server/dev_config.toml"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def quick_start_blocks() -> list[tuple[str, str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [(lang, body) for lang, body in FENCE.findall(section)]


def block(lang: str, containing: str) -> str:
    found = [body for kind, body in quick_start_blocks() if kind == lang and containing in body]
    assert len(found) == 1, f"the quick start should have one {lang} block with {containing!r}"
    return found[0]


def on_port(code: str, port: int) -> str:
    assert ":8000" in code
    return code.replace(":8000", f":{port}")


def commands() -> list[str]:
    """The lines of the quick start's first block (the one without a language)."""
    plain = [body for lang, body in quick_start_blocks() if not lang]
    return plain[0].splitlines()


def test_the_quick_start_is_two_commands_run_and_test():
    lines = [line.split("#")[0].strip() for line in commands() if line.strip()]
    assert lines == ["uv run jobs-server dev", "uv run --group dev pytest"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "\n" + lines[1] + "\n" in ci  # CI runs the README's test command


@pytest.fixture
def dev(tmp_path, database_url, sqs_endpoint, queue_prefix, devs) -> Dev:
    """`jobs-server dev` on a test database and the tests' SQS endpoint, its data directory
    `.jobs-dev` in tmp_path, where the README's shell lines then run. Its use cases are dev's
    own, on queues of this test's own: a receive a stopped worker left waiting in moto would
    take the next test's message."""
    config = (DEV_CONFIG.read_text()).replace('queue = "jobs-', f'queue = "{queue_prefix}-')
    assert config != DEV_CONFIG.read_text()
    (tmp_path / "dev.toml").write_text(config)
    started = start_dev(
        tmp_path / ".jobs-dev",
        tmp_path / "dev.log",
        JOBS_DATABASE_URL=database_url,
        JOBS_SQS_ENDPOINT_URL=sqs_endpoint,
        JOBS_CONFIG_FILE=str(tmp_path / "dev.toml"),
    )
    devs.append(started)
    return started


def wait_succeeded(dev: Dev, job_id: str) -> dict[str, object]:
    url = f"http://127.0.0.1:{dev.port}/v1/jobs/{job_id}"
    headers = {"Authorization": f"Bearer {dev.token()}"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, object] = httpx.get(url, headers=headers, timeout=10).json()
        if body["status"] != "pending" and body["status"] != "running":
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish:\n{dev.output()}")


def test_the_curl_lines_run_as_written(dev, tmp_path):
    script = on_port(block("sh", "curl"), dev.port)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=dev_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout.strip().splitlines()[-1])  # the job, as the last line shows it
    assert shown["use_case"] == "notifications"
    assert wait_succeeded(dev, str(shown["id"]))["status"] == "succeeded"


def test_the_python_example_runs_as_written(dev, tmp_path):
    script = tmp_path / "hello.py"
    script.write_text(on_port(block("python", "JobsClient"), dev.port))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=dev_env(JOBS_TOKEN=Path(dev.data_dir / "token").read_text().strip()),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    job_id, status = done.stdout.split()[-2:]
    assert status == "succeeded"
    assert wait_succeeded(dev, job_id)["status"] == "succeeded"
