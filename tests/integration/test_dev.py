"""`jobs-server dev` as a newcomer runs it: a real process with the embedded PostgreSQL
(pgserver) in a temporary data directory and its own moto server. It stops everything it
started on SIGINT and SIGTERM, and a later run recovers from a PostgreSQL a killed run left."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from jobs_schema.webhooks import SIGNATURE_HEADER
from jobs_sdk import SyncJobsClient
from jobs_sdk.webhooks import verify
from tests.integration import dev_process
from tests.integration.dev_process import alive, postgres_serving, start_dev

pytestmark = pytest.mark.slow

INITDB_SAYS = "The files belonging to this database system"

devs = dev_process.devs  # the fixtures
pg_home = dev_process.pg_home


def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split()[0])


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def wait_gone(pids: list[int], timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_everything_dev_started(tmp_path, pg_home, devs, sig):
    dev = start_dev(pg_home / "data", tmp_path / "dev.log")
    devs.append(dev)
    postmaster = postmaster_pid(dev.pgdata)
    children = children_of(dev.proc.pid)  # moto's server and the worker
    assert len(children) == 2, children
    assert postgres_serving(dev.pgdata) == [postmaster]
    assert INITDB_SAYS not in dev.output()  # initdb's chatter is kept for failures
    dev.proc.send_signal(sig)
    dev.proc.wait(timeout=90)
    assert wait_gone([postmaster, *children]) == []
    assert postgres_serving(dev.pgdata) == []
    assert not (dev.pgdata / "postmaster.pid").exists()  # a clean shutdown


def test_a_later_run_stops_the_postgres_a_killed_run_left(tmp_path, pg_home, devs):
    data, log = pg_home / "data", tmp_path / "dev.log"
    first = start_dev(data, log)
    devs.append(first)
    token = first.token()
    stale = postmaster_pid(first.pgdata)
    first.proc.kill()  # no chance to stop anything
    first.proc.wait(timeout=30)
    assert alive(stale), "PostgreSQL should outlive a SIGKILLed dev"

    second = start_dev(data, log)
    devs.append(second)
    assert not alive(stale)
    assert postgres_serving(second.pgdata) == [postmaster_pid(second.pgdata)] != [stale]
    assert second.token() == token  # the same token across restarts
    r = httpx.get(
        f"http://127.0.0.1:{second.port}/v1/jobs", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text
    second.proc.send_signal(signal.SIGTERM)
    second.proc.wait(timeout=90)
    assert postgres_serving(second.pgdata) == []


def test_a_postmaster_pid_naming_another_live_process_is_cleared(tmp_path, pg_home, devs):
    """A pid file left by a crash whose pid now belongs to another program: PostgreSQL (and
    pgserver) would take it for a running server."""
    data, log = pg_home / "data", tmp_path / "dev.log"
    first = start_dev(data, log)
    devs.append(first)
    pidfile = first.pgdata / "postmaster.pid"
    lines = pidfile.read_text().splitlines()
    first.proc.send_signal(signal.SIGTERM)
    first.proc.wait(timeout=90)
    other = subprocess.Popen(["sleep", "300"])
    try:
        pidfile.write_text("\n".join([str(other.pid), *lines[1:]]) + "\n")
        second = start_dev(data, log)
        devs.append(second)
        assert other.poll() is None  # not ours: left alone
        assert postmaster_pid(second.pgdata) != other.pid
        second.proc.send_signal(signal.SIGTERM)
        second.proc.wait(timeout=90)
        assert postgres_serving(second.pgdata) == []
    finally:
        other.kill()
        other.wait()


def test_jobs_dev_token_overrides_the_kept_one(tmp_path, pg_home, devs):
    dev = start_dev(pg_home / "data", tmp_path / "dev.log", JOBS_DEV_TOKEN="dev-chosen-token")
    devs.append(dev)
    url = f"http://127.0.0.1:{dev.port}/v1/jobs"
    assert httpx.get(url, headers={"Authorization": "Bearer dev-chosen-token"}).status_code == 200
    assert "dev-chosen-token" in dev.output()
    dev.proc.send_signal(signal.SIGTERM)
    dev.proc.wait(timeout=90)


def test_dev_sends_webhooks_of_its_example_jobs(tmp_path, pg_home, devs):
    """`jobs-server dev` turns webhooks on and its worker sends them (to this machine too)."""
    got: list[tuple[bytes, str]] = []
    arrived = threading.Event()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((body, self.headers[SIGNATURE_HEADER]))
            self.send_response(204)
            self.end_headers()
            arrived.set()

        def log_message(self, *args: object) -> None:
            return None

    receiver = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        dev = start_dev(pg_home / "data", tmp_path / "dev.log")
        devs.append(dev)
        with SyncJobsClient(f"http://127.0.0.1:{dev.port}", dev.token()) as client:
            url = f"http://127.0.0.1:{receiver.server_port}/hook"
            hook = client.webhooks.create(url, ["succeeded"])
            job = client.enqueue(
                "notifications", "notifications.send_email", {"to": "a@b.c", "subject": "hi"}
            )
            assert arrived.wait(120), dev.output()
        body, header = got[0]
        verify(body, header, hook.secret)
        assert json.loads(body)["job_id"] == str(job.job.id)
    finally:
        receiver.shutdown()
        receiver.server_close()
