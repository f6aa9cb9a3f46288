"""WorkerSettings: the server's config file format, the environment on top, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs_worker import ConfigError
from jobs_worker.settings import WorkerSettings, load_settings

DEV_CONFIG = Path(__file__).resolve().parents[2] / (
    "packages/jobs-server/src/jobs_server/dev_config.toml"
)


def test_reads_the_servers_config_file_and_env_wins_per_use_case(monkeypatch):
    monkeypatch.setenv("JOBS_CONFIG_FILE", str(DEV_CONFIG))
    monkeypatch.setenv("JOBS_USE_CASES", '{"notifications": {"queue": "q", "timeout_seconds": 3}}')
    monkeypatch.setenv("JOBS_CONCURRENCY", "7")
    settings = load_settings()
    use_cases = settings.select_use_cases(["notifications", "message_labeling"])
    assert use_cases["notifications"].queue == "q"
    assert use_cases["notifications"].lease_duration_seconds == 33
    assert use_cases["message_labeling"].queue == "jobs-message-labeling"
    assert use_cases["message_labeling"].timeout_seconds == 120
    assert settings.concurrency == 7


def test_unknown_use_case_names_the_known_ones():
    settings = WorkerSettings(use_cases={"a": {"queue": "qa"}})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match=r"unknown use case 'b': .* defines 'a'"):
        settings.select_use_cases(["b"])


def test_missing_server_settings_are_named(monkeypatch):
    for name in ("JOBS_SERVER_URL", "JOBS_WORKER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="JOBS_SERVER_URL is not set"):
        WorkerSettings().require_server()
    with pytest.raises(ConfigError, match="JOBS_WORKER_TOKEN is not set"):
        WorkerSettings(server_url="http://jobs:8000").require_server()
    with pytest.raises(ConfigError, match="must start with http"):
        WorkerSettings(server_url="jobs:8000", worker_token="t").require_server()  # type: ignore[arg-type]


def test_bad_values_and_files_are_named(monkeypatch, tmp_path):
    monkeypatch.setenv("JOBS_CONCURRENCY", "zero")
    with pytest.raises(ConfigError, match="JOBS_CONCURRENCY"):
        load_settings()
    monkeypatch.delenv("JOBS_CONCURRENCY")
    bad = tmp_path / "jobs.toml"
    bad.write_text("[use_cases.x]\nqueue = 1\n")
    with pytest.raises(ConfigError, match=r"JOBS_CONFIG_FILE: .*use_cases\.x\.queue"):
        WorkerSettings(config_file=bad).jobs_config()
    with pytest.raises(ConfigError, match="does not exist"):
        WorkerSettings(config_file=tmp_path / "nope.toml").jobs_config()
