"""Process isolation: handlers of `isolation = "process"` use cases run in child processes
(prefork, as Celery's pool does), one attempt per child at a time.

A child is started with multiprocessing's `spawn` (or `forkserver`) method and imports the
registry by its import path. A crash (`os._exit`, a segfault in a C extension, the OOM killer)
costs only the attempt the child was running: the worker records it as `WorkerCrashed` with
the exit code or signal, and starts a new child for the next attempt. A handler past its
timeout is killed with its child. Children are started on demand, up to `size`, and kept."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

from jobs_schema import JobMessage
from jobs_worker.context import CancelSignal, JobContext, LeaseClients
from jobs_worker.errors import JobsWorkerError
from jobs_worker.execution import Failed, Interrupted, Outcome, execute, failure, timeout_failure
from jobs_worker.logs import configure_logging
from jobs_worker.registry import Registry, load_registry

__all__ = ["ChildSetup", "ProcessPool", "describe_exit"]

logger = logging.getLogger(__name__)

_READY = "ready"
_TAKEN = "taken"  # a child's first answer to a job: from here on a crash is the job's
_START_TIMEOUT = 120.0  # a child imports the registry (and whatever it imports) first
_STOP_TIMEOUT = 2.0


@dataclass(frozen=True)
class ChildSetup:
    """What a child needs to run handlers; sent to it once, at its start."""

    registry: str  # MODULE:ATTRIBUTE, as on the command line
    server_url: str | None = None  # `ctx.jobs` in the child, with the attempt's lease credential
    log_format: str | None = None  # None: leave the child's logging alone
    log_level: str = "info"


@dataclass(frozen=True)
class _Run:
    job: JobMessage
    payload: dict[str, Any]
    worker_id: str
    timeout_seconds: float


@dataclass(frozen=True)
class _Cancel:
    job_id: str


@dataclass(eq=False)
class _Child:
    process: BaseProcess
    requests: Connection  # parent -> child
    results: Connection  # child -> parent


class _NotTaken(Exception):
    """The child was gone before it took the job."""


def _receive(results: Connection) -> Outcome:
    try:
        taken = results.recv()
    except (EOFError, OSError) as exc:
        raise _NotTaken from exc
    if taken != _TAKEN:
        raise OSError(f"handler process answered {taken!r} to a job")
    outcome: Outcome = results.recv()
    return outcome


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "handler process stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"handler process exited with signal {-exitcode} ({name})"
    return f"handler process exited with code {exitcode}"


def _context_for(start_method: str) -> SpawnContext | ForkServerContext:
    # no "fork": a forked copy of a threaded worker (its loops, pools, locks) is not safe
    if start_method == "spawn":
        return multiprocessing.get_context("spawn")
    if start_method == "forkserver":
        return multiprocessing.get_context("forkserver")
    raise JobsWorkerError(f"start method {start_method!r}: use 'spawn' or 'forkserver'")


class ProcessPool:
    """Up to `size` child processes, each running one attempt at a time."""

    def __init__(self, setup: ChildSetup, *, size: int, start_method: str = "spawn") -> None:
        if size < 1:
            raise JobsWorkerError("a process pool needs at least one process")
        self._setup = setup
        self._context: SpawnContext | ForkServerContext = _context_for(start_method)
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        self._free = asyncio.Semaphore(size)
        # blocking pipe reads and joins, one thread per busy child and a few to spare
        self._threads = ThreadPoolExecutor(size + 4, thread_name_prefix="jobs-process-pipe")

    async def run(
        self,
        job: JobMessage,
        payload: dict[str, Any],
        *,
        worker_id: str,
        timeout_seconds: float,
        cancel: CancelSignal,
    ) -> Outcome:
        """Run the attempt in a child; the timeout counts from the child taking the job."""
        run = _Run(job, payload, worker_id, timeout_seconds)
        async with self._free:
            for _ in range(2):
                try:
                    child = self._idle.pop() if self._idle else await self._start()
                except JobsWorkerError as exc:
                    logger.error("handler process did not start", extra={"error": exc.message})
                    return Interrupted(exc.message)
                try:
                    child.requests.send(run)
                    return await self._wait_for(child, job, timeout_seconds, cancel)
                except (_NotTaken, OSError, ValueError):
                    self._discard(child)  # it died while idle: the attempt has not started
        return Interrupted("handler processes died before taking the attempt")

    async def _wait_for(
        self, child: _Child, job: JobMessage, seconds: float, cancel: CancelSignal
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        forward = asyncio.create_task(self._forward_cancel(child, job, cancel))
        try:
            async with asyncio.timeout(seconds):
                outcome = await loop.run_in_executor(self._threads, _receive, child.results)
        except TimeoutError:
            self._discard(child)
            return timeout_failure(job.job_type, seconds, note="; its process was killed")
        except _NotTaken:
            raise
        except (EOFError, OSError):
            return await self._crashed(child, job)
        except BaseException:
            self._discard(child)  # shutdown or a lost lease: the attempt's result cannot count
            raise
        finally:
            forward.cancel()
        self._idle.append(child)
        return outcome

    async def _forward_cancel(self, child: _Child, job: JobMessage, cancel: CancelSignal) -> None:
        await cancel.wait()
        with contextlib.suppress(OSError, ValueError):
            child.requests.send(_Cancel(str(job.job_id)))

    async def _crashed(self, child: _Child, job: JobMessage) -> Failed:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._threads, child.process.join, 5.0)
        self._discard(child)
        message = describe_exit(child.process.exitcode)
        logger.error(
            "handler process crashed; a new one takes its place",
            extra={"job_id": str(job.job_id), "attempt": job.attempt, "error": message},
        )
        return failure("WorkerCrashed", message)

    async def _start(self) -> _Child:
        child_reads, parent_writes = self._context.Pipe(duplex=False)
        parent_reads, child_writes = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=child_main,
            args=(child_reads, child_writes, self._setup),
            name="jobs-handler-process",
        )
        process.start()
        child_reads.close()  # the child's ends: the parent keeps only its own
        child_writes.close()
        child = _Child(process, parent_writes, parent_reads)
        self._children.add(child)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                ready = await loop.run_in_executor(self._threads, parent_reads.recv)
        except (TimeoutError, EOFError, OSError) as exc:
            self._discard(child)
            await loop.run_in_executor(self._threads, process.join, 5.0)
            raise JobsWorkerError(f"{describe_exit(process.exitcode)} at start-up") from exc
        if ready != _READY:
            self._discard(child)
            raise JobsWorkerError(f"handler process answered {ready!r} at start-up")
        logger.info("handler process started", extra={"pid": process.pid})
        return child

    def _discard(self, child: _Child) -> None:
        self._children.discard(child)
        if child.process.exitcode is None:
            child.process.kill()
        for conn in (child.requests, child.results):
            conn.close()
        with contextlib.suppress(RuntimeError):  # after close(): nobody waits for it any more
            self._threads.submit(child.process.join, 5.0)

    async def close(self) -> None:
        """Stop the idle children, kill any left."""
        idle, self._idle = self._idle, []
        for child in idle:
            with contextlib.suppress(OSError, ValueError):
                child.requests.send(None)
        loop = asyncio.get_running_loop()
        for child in idle:
            await loop.run_in_executor(self._threads, child.process.join, _STOP_TIMEOUT)
        for child in list(self._children):
            self._discard(child)
        self._threads.shutdown(wait=False)


# -- the child -----------------------------------------------------------------------------------


def child_main(requests: Connection, results: Connection, setup: ChildSetup) -> None:
    """A child process's life: import the registry, then run attempts until told to stop."""
    # Ctrl-C and a SIGTERM to the process group reach children too: the worker decides when
    # a child stops (after its grace period), and a child whose worker is gone exits itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if setup.log_format is not None:
        configure_logging(setup.log_format, setup.log_level)
    registry = load_registry(setup.registry)
    results.send(_READY)
    asyncio.run(_serve(requests, results, registry, setup))


async def _serve(
    requests: Connection, results: Connection, registry: Registry, setup: ChildSetup
) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[_Run | _Cancel | None] = asyncio.Queue()
    threading.Thread(target=_read, args=(requests, loop, inbox), daemon=True).start()
    clients = LeaseClients(setup.server_url) if setup.server_url else None
    executor = ThreadPoolExecutor(1, thread_name_prefix="jobs-handler")
    current: tuple[str, CancelSignal] | None = None
    while (msg := await inbox.get()) is not None:
        if isinstance(msg, _Cancel):
            if current is not None and current[0] == msg.job_id:
                current[1].set()
            continue
        results.send(_TAKEN)
        cancel = CancelSignal()
        current = (str(msg.job.job_id), cancel)
        handler = registry.get(msg.job.job_type)
        module = handler.func.__module__ if handler is not None else __name__
        ctx = _context(msg, cancel, clients, loop, module)
        # the parent enforces the timeout (by killing this process): no second clock here
        outcome = await execute(
            handler,
            msg.payload,
            ctx,
            timeout_seconds=msg.timeout_seconds + 60,
            executor=executor,
            known=registry.names,
        )
        results.send(outcome)
    if clients is not None:
        await clients.aclose()


def _read(
    requests: Connection,
    loop: asyncio.AbstractEventLoop,
    inbox: asyncio.Queue[_Run | _Cancel | None],
) -> None:
    while True:
        try:
            msg = requests.recv()
        except (EOFError, OSError):
            os._exit(0)  # the worker is gone: nobody can take this process's results
        loop.call_soon_threadsafe(inbox.put_nowait, msg)
        if msg is None:
            return


def _context(
    run: _Run,
    cancel: CancelSignal,
    clients: LeaseClients | None,
    loop: asyncio.AbstractEventLoop,
    module: str,
) -> JobContext:
    return JobContext.for_message(
        run.job,
        worker_id=run.worker_id,
        logger_name=module,
        cancel=cancel,
        clients=clients,
        loop=loop,
    )
