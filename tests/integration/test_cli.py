"""Production commands check their settings before doing anything, and say what is wrong."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from jobs_server.store.migrations import available_migrations
from tests.conftest import free_port


def serve(env_overrides: dict[str, str], port: int) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")} | env_overrides
    return subprocess.run(
        [sys.executable, "-m", "jobs_server", "serve", "--port", str(port)],
        env=env,
        capture_output=True,
        timeout=30,
    )


def good(database_url: str) -> dict[str, str]:
    return {
        "JOBS_DATABASE_URL": database_url,
        "JOBS_USE_CASES": '{"n": {"queue": "n"}}',
    }


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"JOBS_DATABASE_URL": ""}, "JOBS_DATABASE_URL is not set"),
        ({"JOBS_DATABASE_URL": "mysql://x/y"}, "JOBS_DATABASE_URL must start with postgresql://"),
        ({"JOBS_PORT": "eighty"}, "JOBS_PORT"),
        ({"JOBS_USE_CASES": "{}"}, "no use cases configured"),
        ({"JOBS_USE_CASES": '{"n": {"queue": "n", "capacity": -1}}'}, "JOBS_USE_CASES"),
        (
            {"JOBS_CONFIG_FILE": "/nonexistent.toml"},
            "JOBS_CONFIG_FILE: /nonexistent.toml does not exist",
        ),
        ({"JOBS_MAX_PAYLOAD_BYTES": "10"}, "JOBS_MAX_PAYLOAD_BYTES"),
    ],
)
def test_serve_fails_fast_naming_the_setting(database_url, change, says):
    port = free_port()
    r = serve(good(database_url) | change, port)
    assert r.returncode == 2, r.stderr
    assert says in r.stderr.decode()
    # it never bound the port
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_bad_config_file_names_the_field(database_url, tmp_path):
    cfg = tmp_path / "jobs.toml"
    cfg.write_text('[use_cases.n]\nqueue = "n"\nmax_attempts = "many"\n')
    r = serve(good(database_url) | {"JOBS_CONFIG_FILE": str(cfg), "JOBS_USE_CASES": "{}"}, 0)
    assert r.returncode == 2
    assert "use_cases.n.max_attempts" in r.stderr.decode()


def check(env_overrides: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")} | env_overrides
    return subprocess.run(
        [sys.executable, "-m", "jobs_server", "check"],
        env=env,
        capture_output=True,
        timeout=60,
        text=True,
    )


def test_check_passes_on_a_good_setup(database_url, sqs_endpoint, queue_prefix):
    env = {
        "JOBS_DATABASE_URL": database_url,
        "JOBS_SQS_ENDPOINT_URL": sqs_endpoint,
        "JOBS_USE_CASES": f'{{"n": {{"queue": "{queue_prefix}-n"}}}}',
        "JOBS_TENANTS": '{"acme": {"tokens": ["t"]}}',
        "JOBS_WORKER_TOKEN": "w",
    }
    create = subprocess.run(
        [sys.executable, "-m", "jobs_server", "queues", "create"],
        env=os.environ | env,
        capture_output=True,
        timeout=60,
    )
    assert create.returncode == 0, create.stderr
    r = check(env)
    assert r.returncode == 0, r.stdout
    assert "FAIL" not in r.stdout
    assert "migrations   current" in r.stdout


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"JOBS_DATABASE_URL": ""}, "JOBS_DATABASE_URL is not set"),
        ({"JOBS_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"}, "PostgreSQL is unavailable"),
        ({"JOBS_USE_CASES": "{}"}, "use cases    none"),
        ({"JOBS_USE_CASES": "not json"}, "JOBS_USE_CASES is not valid JSON"),
        ({"JOBS_WORKER_TOKEN": ""}, "JOBS_WORKER_TOKEN is not set"),
        ({"JOBS_TENANTS": "{}"}, "no tenant has a token"),
        ({"JOBS_USE_CASES": '{"n": {"queue": "missing-queue"}}'}, "n: cannot find SQS queue"),
    ],
)
def test_check_reports_each_kind_of_bad_config(database_url, sqs_endpoint, change, says):
    env = {
        "JOBS_DATABASE_URL": database_url,
        "JOBS_SQS_ENDPOINT_URL": sqs_endpoint,
        "JOBS_USE_CASES": '{"n": {"queue": "missing-queue"}}',
        "JOBS_TENANTS": '{"acme": {"tokens": ["t"]}}',
        "JOBS_WORKER_TOKEN": "w",
    } | change
    r = check(env)
    assert r.returncode == 1
    assert says in r.stdout


def test_check_reports_pending_migrations(empty_database_url, sqs_endpoint):
    r = check(
        {
            "JOBS_DATABASE_URL": empty_database_url,
            "JOBS_USE_CASES": '{"n": {"queue": "q"}}',
            "JOBS_SQS_ENDPOINT_URL": sqs_endpoint,
        }
    )
    assert r.returncode == 1
    versions = ", ".join(f"{m.version:04d}" for m in available_migrations())
    assert f"pending: {versions}; run `jobs-server migrate`" in r.stdout
