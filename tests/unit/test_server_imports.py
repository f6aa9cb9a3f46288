"""Every module of jobs_server imports on its own, first in a fresh interpreter: an import
cycle (stats -> scheduler -> stats, once) fails whichever module is imported first."""

from __future__ import annotations

import subprocess
import sys

# Forks a child per module from an interpreter that has loaded the third-party libraries but
# no jobs_server module, so each child imports its module first and alone.
_SCRIPT = r"""
import importlib, importlib.util, os, pathlib, traceback
import asyncpg, fastapi, prometheus_client, pydantic, pydantic_settings, typer  # noqa: F401

root = pathlib.Path(importlib.util.find_spec("jobs_server").submodule_search_locations[0])
names = []
for path in sorted(root.rglob("*.py")):
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[-1] != "__main__":
        names.append(".".join(parts))
failed = []
for name in names:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed.append(name)
print("checked", len(names))
print("failed", " ".join(failed))
"""


def test_each_module_imports_alone():
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert int(lines["checked"]) > 30
    assert lines.get("failed", "").strip() == "", out.stderr


def test_stats_does_not_import_the_scheduler():
    code = "import sys, jobs_server.stats; print('jobs_server.scheduler' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
