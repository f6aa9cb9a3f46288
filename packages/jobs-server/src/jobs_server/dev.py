"""What `jobs-server dev` starts and stops on one machine: an embedded PostgreSQL (pgserver) in
the data directory, moto's SQS server and the dev worker as child processes, and the stable dev
token. Production commands never import this module.

A run stops everything it started on SIGINT and SIGTERM (cli.dev). A run that could not (killed
with SIGKILL, or by an older version) leaves PostgreSQL running in the data directory: the next
run, holding the directory's lock, finds it by its postmaster.pid and stops it before starting
its own. The children (moto, the worker) are asked by the kernel to stop when `dev` dies."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from subprocess import Popen

from jobs_server.errors import ConfigError

__all__ = [
    "dev_token",
    "embedded_postgres",
    "locked_data_dir",
    "moto_server",
    "stop_stale_postgres",
    "worker_process",
]

logger = logging.getLogger(__name__)

_TOKEN_FILE = Path("token")
_LOCK_FILE = "dev.lock"
_PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def locked_data_dir(data_dir: Path) -> Iterator[Path]:
    """The data directory, created if need be, locked for this run: two `dev` runs sharing one
    embedded PostgreSQL would stop it under each other."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / _LOCK_FILE).open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another `jobs-server dev` is running with the data directory {data_dir}; "
                "stop it first, or pass --data-dir to use another one"
            ) from None
        yield data_dir.resolve()


def dev_token(data_dir: Path, *, override: str | None) -> str:
    """`override` (JOBS_DEV_TOKEN), else the token kept in the data directory, made once."""
    if override:
        return override
    path = data_dir / _TOKEN_FILE
    with contextlib.suppress(FileNotFoundError):
        kept = path.read_text().strip()
        if kept:
            return kept
    token = "dev-" + secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


# -- embedded PostgreSQL --------------------------------------------------------------------------


def embedded_postgres(stack: contextlib.ExitStack, pgdata: Path) -> str:
    """Start (or, after a crash, restart) PostgreSQL in `pgdata`; `stack` stops it. Call it
    only while holding the data directory's lock."""
    with warnings.catch_warnings():  # platformdirs warns where XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver

    # initdb and pg_ctl print ~60 lines at INFO; pgserver logs them again at ERROR on failure
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    stop_stale_postgres(pgdata)
    try:
        pg = pgserver.get_server(pgdata, cleanup_mode="stop")
    except (subprocess.SubprocessError, OSError) as exc:
        raise ConfigError(
            f"the embedded PostgreSQL did not start ({exc}); see its log above and in "
            f"{pgdata / 'log'}, or set JOBS_DATABASE_URL to use your own"
        ) from exc
    stack.callback(pg.cleanup)
    uri: str = pg.get_uri()
    return uri


def stop_stale_postgres(pgdata: Path) -> int | None:
    """Stop a PostgreSQL an earlier run left in `pgdata`; return its pid (None: there was none).

    pgserver counts the processes using a data directory in .handle_pids.json and stops the
    server when the last one leaves; a killed run never leaves, so every later run would keep
    the server running. Under the lock, no other run uses it: the count is reset."""
    (pgdata / ".handle_pids.json").unlink(missing_ok=True)
    pidfile = pgdata / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if not is_postmaster_of(pid, pgdata):
        # the pid is dead or now another program's: PostgreSQL would refuse to start over it
        if not _alive(pid):
            return None  # PostgreSQL clears a dead postmaster's file itself
        pidfile.unlink(missing_ok=True)
        return None
    logger.warning("stopping the PostgreSQL an earlier dev run left running", extra={"pid": pid})
    _stop(pid)
    return pid


def is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """Whether `pid` is a running postgres serving `pgdata` (asked of /proc where there is one)."""
    if not _alive(pid):
        return False
    if not Path("/proc").is_dir():
        return True
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return argv[0].endswith(b"postgres") and str(pgdata).encode() in argv


def _alive(pid: int) -> bool:
    with contextlib.suppress(FileNotFoundError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(pid: int) -> None:
    """Fast shutdown (SIGINT: roll back, checkpoint, exit), then harder if it does not go."""
    for sig, wait in ((signal.SIGINT, 30.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.1)
    raise ConfigError(f"could not stop the stale PostgreSQL (pid {pid})")


# -- child processes ------------------------------------------------------------------------------


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn: the child gets SIGTERM when `dev` dies, even by SIGKILL (Linux)."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


def _spawn(
    args: list[str], *, env: dict[str, str] | None = None, quiet: bool = False
) -> Popen[bytes]:
    out = subprocess.DEVNULL if quiet else None
    return Popen(args, env=env, stdout=out, stderr=out, preexec_fn=_die_with_parent())


def _stop_child(proc: Popen[bytes], *, timeout: float) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's SQS server on a free loopback port, for as long as `dev` runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _spawn(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], quiet=True
    )
    try:
        _wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop_child(proc, timeout=10)


def _wait_for_port(port: int, proc: Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise ConfigError("the dev SQS endpoint (moto's server) did not start; is moto installed?")


@contextlib.contextmanager
def worker_process(target: str, *, use_cases: list[str], env: Mapping[str, str]) -> Iterator[None]:
    """`jobs-worker run` as a process of its own, as in production (no import of it here):
    it inherits this process's environment, with `env` on top."""
    env = {**os.environ, **env}
    args = [arg for name in use_cases for arg in ("-u", name)]
    proc = _spawn([sys.executable, "-m", "jobs_worker", "run", target, *args], env=env)
    try:
        yield
    finally:
        _stop_child(proc, timeout=40)
