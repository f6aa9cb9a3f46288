"""Production commands check their settings before doing anything, and say what is wrong."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

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
