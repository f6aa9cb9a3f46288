"""`jobs-server dev` as a real process, for the tests that run it (test_dev, test_readme)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Dev:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log: Path

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pg"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()


def dev_env(**extra: str) -> dict[str, str]:
    """The environment without any JOBS_ setting, so dev starts its embedded services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")}
    return env | {"PYTHONUNBUFFERED": "1"} | extra


def start_dev(data_dir: Path, log: Path, **env: str) -> Dev:
    port = free_port()
    args = ["dev", "--data-dir", str(data_dir), "--port", str(port)]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs_server", *args],
            cwd=REPO,
            env=dev_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    dev = Dev(proc, port, data_dir, log)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dev exited with {proc.returncode}:\n{dev.output()}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return dev
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"dev did not get ready:\n{dev.output()}")


@pytest.fixture
def pg_home() -> Iterator[Path]:
    """A directory for embedded PostgreSQL data outside pytest's temporary tree: pgserver runs
    PostgreSQL as another user when run as root, and each pytest session (any on the machine)
    makes /tmp/pytest-of-<user> private to its owner again, locking that user out mid-test."""
    home = Path(tempfile.mkdtemp(prefix="jobs-dev-test-"))
    yield home
    for pid in postgres_serving(home):  # one a failed test left running
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def devs() -> Iterator[list[Dev]]:
    """Every dev started by a test, stopped at the end whatever happened: with SIGTERM, so
    that its worker is gone (and takes no message of the next test's) before the next test."""
    started: list[Dev] = []
    yield started
    for dev in started:
        if dev.proc.poll() is None:
            dev.proc.terminate()
            try:
                dev.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                dev.proc.kill()
                dev.proc.wait(timeout=30)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def postgres_serving(pgdata: Path) -> list[int]:
    """Live processes whose command line names this directory (a postmaster's -D)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        named = any(str(pgdata).encode() in arg for arg in argv[1:])
        if argv[0].endswith(b"postgres") and named and alive(int(entry.name)):
            found.append(int(entry.name))
    return found
