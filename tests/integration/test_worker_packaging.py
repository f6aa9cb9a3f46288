"""jobs-worker installs on its own: its wheel, in a fresh venv, pulls in no server dependency,
and its command runs."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

from tests.integration.test_packaging import run

SERVER_ONLY = {"fastapi", "starlette", "uvicorn", "asyncpg", "jobs-server", "moto"}

PROBE = """
import importlib.metadata as md, json, jobs_worker
print(json.dumps({
    "installed": sorted(d.metadata["Name"].lower() for d in md.distributions()),
    "module": jobs_worker.__file__,
    "exports": jobs_worker.__all__,
}))
"""


def test_worker_wheel_installs_without_server_dependencies(repo_root: Path, tmp_path: Path):
    dist = tmp_path / "dist"
    for package in ("jobs-worker", "jobs-sdk", "jobs-schema"):
        run("uv", "build", "--package", package, "--wheel", "--out-dir", dist, cwd=repo_root)
    wheels = sorted(dist.glob("*.whl"))
    worker_wheel = next(w for w in wheels if w.name.startswith("jobs_worker-"))
    assert "jobs_worker/py.typed" in zipfile.ZipFile(worker_wheel).namelist()

    venv = tmp_path / "venv"
    run("uv", "venv", venv, "--python", sys.executable)
    run("uv", "pip", "install", "--python", venv / "bin" / "python", *wheels)
    probe = json.loads(run(venv / "bin" / "python", "-c", PROBE, cwd=tmp_path))
    assert Path(probe["module"]).is_relative_to(venv)
    assert not SERVER_ONLY & set(probe["installed"])
    assert {"Registry", "JobContext", "Retry", "PermanentFailure", "Worker"} <= set(
        probe["exports"]
    )
    help_text = run(venv / "bin" / "jobs-worker", "run", "--help", cwd=tmp_path)
    assert "Usage: jobs-worker run" in help_text and "--use-case" in help_text
