"""jobs-sdk installs on its own: its wheel, in a fresh venv, pulls in no server dependency."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

SERVER_ONLY = {"fastapi", "starlette", "uvicorn", "asyncpg", "aiobotocore", "botocore", "typer"}

PROBE = """
import importlib.metadata as md, json, jobs_sdk
print(json.dumps({
    "installed": sorted(d.metadata["Name"].lower() for d in md.distributions()),
    "requires": md.requires("jobs-sdk"),
    "module": jobs_sdk.__file__,
    "exports": jobs_sdk.__all__,
}))
"""


def _name(requirement: str) -> str:
    match = re.match(r"[\w.-]+", requirement)
    assert match is not None, requirement
    return match.group()


def run(*args: str | Path, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_sdk_wheel_installs_without_server_dependencies(repo_root: Path, tmp_path: Path):
    dist = tmp_path / "dist"
    for package in ("jobs-sdk", "jobs-schema"):
        run("uv", "build", "--package", package, "--wheel", "--out-dir", dist, cwd=repo_root)
    wheels = sorted(dist.glob("*.whl"))
    sdk_wheel = next(w for w in wheels if w.name.startswith("jobs_sdk-"))
    assert "jobs_sdk/py.typed" in zipfile.ZipFile(sdk_wheel).namelist()

    venv = tmp_path / "venv"
    run("uv", "venv", venv, "--python", sys.executable)
    python = venv / "bin" / "python"
    run("uv", "pip", "install", "--python", python, *wheels)
    probe = json.loads(run(python, "-c", PROBE, cwd=tmp_path))

    assert Path(probe["module"]).is_relative_to(venv)
    assert not SERVER_ONLY & set(probe["installed"])
    assert "pydantic-settings" not in probe["installed"]
    base = [r for r in probe["requires"] if "extra ==" not in r]
    assert {_name(r) for r in base} == {"jobs-schema", "httpx", "pydantic"}
    # the `jobs` command's typer and the outbox's drivers come only with their extras
    extras = {
        (_name(r), re.search(r"extra == [\"'](\w+)[\"']", r).group(1))  # type: ignore[union-attr]
        for r in probe["requires"]
        if "extra ==" in r
    }
    assert extras == {("typer", "cli"), ("asyncpg", "asyncpg"), ("sqlalchemy", "sqlalchemy")}
    assert not {"typer", "asyncpg", "sqlalchemy"} & set(probe["installed"])
    assert {"JobsClient", "SyncJobsClient", "JobsError"} <= set(probe["exports"])
    bare = subprocess.run([venv / "bin" / "jobs"], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 1
    assert "pip install 'jobs-sdk[cli]'" in bare.stderr
