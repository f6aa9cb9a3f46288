"""The worker: receive job messages, run their handlers (at most `concurrency` at once, each
under its use case's timeout), heartbeat them, report outcomes in batches, delete messages.

The server is the source of truth and SQS messages are only wake-ups: a message whose lease
is gone (a duplicate delivery, a stale copy) is deleted without running, and every report is
fenced by its lease on the server, so the worker can be killed between any two steps.

A message may carry several jobs (jobs_schema.PackedMessage): each runs as its own attempt, the
message stays invisible while any of them is held here and is deleted once every one has an
outcome the server acknowledged (or was found gone)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from jobs_schema import (
    FailureInfo,
    JobMessage,
    LeaseRef,
    LeaseState,
    OutcomeAck,
    OutcomeKind,
    OutcomeReport,
    UseCaseConfig,
    jobs_in_body,
    lease_from_body,
)
from jobs_schema.config import HandlerIsolation, describe_errors
from jobs_sdk.batching import Batcher
from jobs_worker.cancellations import CancelPoller
from jobs_worker.consumer.base import Consumer, ReceivedMessage
from jobs_worker.context import (
    JobContext,
    JobsClientProvider,
    LeaseClients,
    TenantClients,
    job_fields,
)
from jobs_worker.errors import JobsWorkerError, WorkerApiError
from jobs_worker.execution import Failed, Interrupted, Outcome, execute
from jobs_worker.heartbeats import Heartbeater, HeldLease
from jobs_worker.loops import HandlerLoops
from jobs_worker.metrics import WorkerMetrics, outcome_label
from jobs_worker.processes import ProcessPool
from jobs_worker.registry import Registry
from jobs_worker.reporter import JobGone, Reporter, ServerUnavailable, WorkerApi
from jobs_worker.tracing import WorkerTracing

__all__ = ["Worker", "WorkerHealth", "WorkerStats", "new_worker_id"]

logger = logging.getLogger(__name__)

_RECEIVE_MAX = 10  # SQS hands out at most 10 messages a receive
_BURST_WAIT = 1.0
_RECEIVE_BACKOFF = (0.5, 10.0)
_REPORT_RETRY_PAUSE = 1.0
_FINISHED_MEMORY = 10_000  # attempts remembered as done, to drop late duplicate copies
# a receive in flight this long past its long poll has hung (e.g. a connection silently dropped)
_RECEIVE_HUNG_AFTER = 30.0
# a delivery whose lease has less than this left by the server's clock is checked before it
# runs: it may be an old copy whose attempt the reaper already closed
_FRESH_LEASE_MARGIN = 2.0
_CHECK_BACKOFF = (0.5, 10.0)
_WATCHDOG_PERIOD = 0.5
_STALLED = "a handler loop"  # what health() says the worker waits for while a loop is blocked

Key = tuple[UUID, int, UUID]


def new_worker_id() -> str:
    """Unique per process start; recorded on the attempts this worker runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class WorkerStats:
    received: int = 0
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    stale: int = 0  # outcomes the server refused: the lease had moved on
    skipped: int = 0  # messages not run: duplicates, or their lease was already gone
    released: int = 0
    malformed: int = 0
    interrupted: int = 0  # given back: another handler blocked the loop they shared
    crashed: int = 0  # their handler process died


@dataclass(frozen=True)
class WorkerHealth:
    ok: bool
    problems: list[str]
    ready: bool = True  # False while waiting for the server, SQS or a queue
    waiting_for: list[str] = field(default_factory=list)


@dataclass(eq=False)
class _Delivery:
    """One received message and how many of its jobs have no outcome yet. A job that ends
    without one (its report failed, its payload could not be fetched) never closes: the
    message is then not deleted and comes back after its visibility timeout."""

    message: ReceivedMessage
    open: int

    def close(self) -> bool:
        """One job is done with; True when it was the last (delete the message now)."""
        self.open -= 1
        return self.open == 0


@dataclass(eq=False)
class _Attempt:
    job: JobMessage
    lease: HeldLease
    config: UseCaseConfig
    delivery: _Delivery
    task: asyncio.Task[None] | None = None
    holds_slot: bool = True
    reporting: bool = False  # the handler is done; its outcome is on its way
    released: bool = False
    closed: bool = False  # counted as done in its delivery

    @property
    def key(self) -> Key:
        return (self.job.job_id, self.job.attempt, self.job.lease_token)


class _Slots:
    """Handler slots; a receive reserves the slots its messages will take. A packed message's
    jobs beyond those wait for slots in turn, ahead of the next receive."""

    def __init__(self, total: int) -> None:
        self.free = total
        self._freed = asyncio.Event()
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def reserve(self, up_to: int) -> int:
        while self.free == 0:
            self._freed.clear()
            await self._freed.wait()
        taken = min(up_to, self.free)
        self.free -= taken
        return taken

    async def take(self) -> None:
        """One slot, after the jobs already waiting for one."""
        if self.free and not self._waiting:
            self.free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed over just as the waiter was cancelled
            raise

    def release(self, count: int = 1) -> None:
        for _ in range(count):
            while self._waiting and self._waiting[0].done():
                self._waiting.popleft()
            if self._waiting:
                self._waiting.popleft().set_result(None)
            else:
                self.free += 1
        if self.free:
            self._freed.set()


@dataclass
class _Idle:
    """What burst mode needs to know: when each queue last came back empty."""

    last_activity: float
    empty_since: dict[str, float] = field(default_factory=dict)


class Worker:
    """Consume the use cases' queues and run the registry's handlers.

    `run()` until `stop()` (SIGTERM in the CLI), or with `burst=True` until the queues are
    empty. The consumer, the API client and the tenant clients belong to the caller."""

    def __init__(
        self,
        registry: Registry,
        *,
        consumer: Consumer,
        api: WorkerApi,
        use_cases: dict[str, UseCaseConfig],
        concurrency: int = 10,
        grace_seconds: float = 30.0,
        worker_id: str | None = None,
        clients: JobsClientProvider | None = None,
        poll_seconds: float = 20.0,
        burst_idle_seconds: float = 1.0,
        report_batch: int = 100,
        report_linger: float = 0.02,
        delete_linger: float = 0.2,
        report_retry_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        metrics: WorkerMetrics | None = None,
        tracing: WorkerTracing | None = None,
        processes: ProcessPool | None = None,
        block_warn_seconds: float = 2.0,
        spare_loops: bool = False,
        cancel_poll_seconds: float = 1.0,
    ) -> None:
        if not use_cases:
            raise JobsWorkerError("a worker needs at least one use case to consume")
        if concurrency < 1:
            raise JobsWorkerError("concurrency must be at least 1")
        if not 0 < cancel_poll_seconds <= 60:
            raise JobsWorkerError("cancel_poll_seconds must be over 0 and at most 60")
        _check_isolation(use_cases, processes)
        self.registry = registry
        self.worker_id = worker_id or new_worker_id()
        self.stats = WorkerStats()
        self.metrics = metrics
        if metrics is not None:
            metrics.watch(self)
        self._tracing = tracing or WorkerTracing()
        self._consumer = consumer
        self._api = api
        self._use_cases = dict(use_cases)
        self._concurrency = concurrency
        self._grace = grace_seconds
        self._clients = clients
        self._poll = poll_seconds
        self._burst_idle = burst_idle_seconds
        self._report_retry = report_retry_seconds
        self._clock = clock
        self._slots = _Slots(concurrency)
        self._running: dict[Key, _Attempt] = {}
        self._finished: OrderedDict[Key, None] = OrderedDict()
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()
        self._idle = _Idle(last_activity=clock())
        self._background: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._receiving: dict[str, float] = {}  # queue -> when its receive in flight began
        self._per_message: dict[str, float] = {}  # use case -> jobs per message, last receive
        self._heartbeater = Heartbeater(api, consumer, worker_id=self.worker_id, clock=clock)
        # heartbeats come a third of a lease apart: cancellations are asked about every second
        self._cancels = CancelPoller(
            api, worker_id=self.worker_id, interval=cancel_poll_seconds, clock=clock
        )
        self._reporter = Reporter(api, max_batch=report_batch, linger=report_linger)
        # deletes wait for company even when idle: nobody waits on them
        self._deleter: Batcher[ReceivedMessage, bool] = Batcher(
            self._delete_batch, max_batch=_RECEIVE_MAX, linger=delete_linger, eager=False
        )
        # sync handlers get threads of their own: the loop's default executor stays free for
        # the asyncio.to_thread calls of handlers (and libraries) themselves
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="jobs-handler")
        self._processes = processes
        self._block_warn = block_warn_seconds
        self._spare_loops = spare_loops
        self._loops: HandlerLoops | None = None  # started by run()
        self._waiting: dict[str, str] = {}  # what the worker waits for -> why

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def free_slots(self) -> int:
        return self._slots.free

    def health(self) -> WorkerHealth:
        """For a liveness check: running, no loop dead, no receive hung. `ready` (for a
        readiness check) is False while the worker waits for the server, SQS or a queue."""
        problems = []
        if not self._tasks and not self._waiting:
            problems.append("not running")
        if self.stopping:
            problems.append("stopping")
        problems += [f"loop ended: {t.get_name()}" for t in self._tasks if t.done()]
        hung = self._clock() - self._poll - _RECEIVE_HUNG_AFTER
        problems += [f"receive on {q} hung" for q, t in self._receiving.items() if t < hung]
        waiting = [f"{what}: {why}" for what, why in self._waiting.items()]
        return WorkerHealth(
            ok=not problems,
            problems=problems,
            ready=not problems and not waiting,
            waiting_for=waiting,
        )

    def waiting_for(self, what: str, why: str | None) -> None:
        """Mark a dependency (e.g. "server", "queue notifications") as unavailable, with why,
        or as available again (None); shown by `health()` and the health port's /readyz."""
        if why is None:
            self._waiting.pop(what, None)
        else:
            self._waiting[what] = why

    async def wait_stopping(self, seconds: float) -> bool:
        """Sleep up to `seconds`, less if the worker is told to stop; True if it was."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self.stopping

    def stop(self, *, now: bool = False) -> None:
        """Stop receiving; running handlers get `grace_seconds` to finish (none if `now`),
        then what is left is released to run again elsewhere."""
        self._stopping.set()
        if now:
            self._hurry.set()

    async def run(self, *, burst: bool = False) -> WorkerStats:
        """Consume until stopped (or, in burst mode, until the queues are empty)."""
        self._warn_missing_handlers()
        logger.info(
            "worker started",
            extra={"worker_id": self.worker_id, "use_cases": list(self._use_cases)},
        )
        self._idle.last_activity = self._clock()
        clients = self._clients
        self._loops = HandlerLoops(
            block_warn_seconds=self._block_warn,
            spares=self._spare_loops,
            max_loops=max(2, self._concurrency),
            on_stop=clients.aclose if isinstance(clients, LeaseClients | TenantClients) else None,
        )
        heartbeats = asyncio.create_task(
            self._guard("heartbeats", self._heartbeater.run()), name="heartbeats"
        )
        polls = asyncio.create_task(
            self._guard("cancellations", self._cancels.run()), name="cancellations"
        )
        loops = [
            asyncio.create_task(
                self._guard(f"receive {name}", self._receive_loop(name, uc, burst)),
                name=f"receive {name}",
            )
            for name, uc in self._use_cases.items()
        ]
        loops.append(
            asyncio.create_task(self._guard("watchdog", self._watchdog()), name="watchdog")
        )
        if burst:
            loops.append(asyncio.create_task(self._burst_monitor()))
        self._tasks = [heartbeats, polls, *loops]
        try:
            await self._stopping.wait()
        finally:
            await self._shutdown(loops, [heartbeats, polls])
        logger.info("worker stopped", extra={"worker_id": self.worker_id, **vars(self.stats)})
        return self.stats

    async def _guard(self, name: str, loop: Coroutine[Any, Any, None]) -> None:
        """A loop that dies of a bug stops the worker (gracefully) instead of idling on."""
        try:
            await loop
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("worker loop crashed; stopping", extra={"loop": name})
            self.stop()

    def _warn_missing_handlers(self) -> None:
        for name, uc in self._use_cases.items():
            missing = [t for t in uc.job_types if t not in self.registry]
            if missing:
                logger.warning(
                    "use case has job types without a handler here; such jobs will fail",
                    extra={"use_case": name, "job_types": missing},
                )

    # -- receiving -----------------------------------------------------------------------------

    async def _receive_loop(self, name: str, uc: UseCaseConfig, burst: bool) -> None:
        self._per_message[name] = float(uc.pack_max_jobs)
        want = self._next_want(name, _RECEIVE_MAX * uc.pack_max_jobs)
        failures = 0
        while not self._stopping.is_set():
            if uc.isolation is not HandlerIsolation.PROCESS and await self._stalled():
                continue
            reserved = await self._slots.reserve(want)
            started = self._receiving[name] = self._clock()
            try:
                messages = await self._consumer.receive(
                    uc.queue,
                    max_messages=self._messages_for(name, reserved),
                    wait_seconds=self._wait(burst),
                )
            except JobsWorkerError as exc:
                self._slots.release(reserved)
                failures += 1
                await self._receive_failed(name, exc, failures)
                continue
            except BaseException:
                self._slots.release(reserved)
                raise
            finally:
                self._receiving.pop(name, None)
            failures = 0
            self.waiting_for(f"queue {uc.queue}", None)
            admitted = 0
            if messages:
                self._idle.last_activity = self._clock()
                admitted = await self._admit(name, uc, messages, reserved)
                # the admitted attempts reach their handler loop now, not after the next
                # receive's request is built (botocore builds it without yielding: at 200
                # jobs/s a handler started ~0.8 ms sooner, bench/e2e.py)
                await asyncio.sleep(0)
            else:
                self._slots.release(reserved)
                self._idle.empty_since[name] = started
            want = self._next_want(name, admitted)

    async def _stalled(self) -> bool:
        """While the loop new handlers would go to is blocked, take no new work (other workers
        take it): true after waiting a watchdog period."""
        if self._loops is None or not self._loops.stalled:
            self.waiting_for(_STALLED, None)
            return False
        self.waiting_for(_STALLED, "a handler is blocking the loop new handlers go to")
        await asyncio.sleep(_WATCHDOG_PERIOD)
        return True

    def _messages_for(self, name: str, slots: int) -> int:
        """How many messages to ask for to fill `slots`, by the last receive's jobs per
        message (packed messages carry several; a guess too low only makes a pack's last
        jobs wait here for slots, heartbeated)."""
        per_message = self._per_message.get(name, 1.0)
        return max(1, min(_RECEIVE_MAX, slots, round(slots / per_message)))

    def _wait(self, burst: bool) -> float:
        # several queues share the slots; a long poll holding one would starve the others
        # when there are fewer slots than queues
        short = burst or self._concurrency < len(self._use_cases)
        return min(self._poll, _BURST_WAIT) if short else self._poll

    def _next_want(self, name: str, got: int) -> int:
        """Slots to reserve for the next receive: as many as its 10 messages may hold."""
        full = max(1, round(_RECEIVE_MAX * self._per_message.get(name, 1.0)))
        if len(self._use_cases) == 1:
            return full
        # an idle queue reserves one slot while it polls; a busy one grows its share
        return max(1, min(full, 2 * got))

    async def _receive_failed(self, name: str, exc: JobsWorkerError, failures: int) -> None:
        low, high = _RECEIVE_BACKOFF
        delay = min(high, low * 2 ** (failures - 1))
        self.waiting_for(f"queue {self._use_cases[name].queue}", exc.message)
        logger.warning(
            "receive failed; retrying",
            extra={"use_case": name, "error": exc.message, "retry_in": delay},
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    async def _admit(
        self, name: str, uc: UseCaseConfig, messages: list[ReceivedMessage], reserved: int
    ) -> int:
        """Start the messages' attempts; each holds a slot until its handler ends: the first
        `reserved` ones hold the slots the receive reserved, the rest of a packed message's
        jobs wait for theirs. Returns how many attempts were admitted."""
        attempts = []
        jobs = 0
        for received in messages:
            found, bad = self._jobs_of(received)
            jobs += len(found) + len(bad)
            delivery = _Delivery(received, open=len(found) + len(bad))
            for body, exc in bad:
                self._malformed(received, delivery, body, exc)
            for job in found:
                attempt = self._attempt_for(job, received, delivery, uc)
                if attempt is not None:
                    self._running[attempt.key] = attempt
                    attempts.append(attempt)
        self.stats.received += jobs
        self._per_message[name] = max(1.0, jobs / len(messages))
        for attempt in attempts[reserved:]:
            attempt.holds_slot = False
        self._slots.release(max(0, reserved - len(attempts)))
        # A first delivery with a fresh lease starts at once: every report is fenced by its
        # lease on the server anyway. A redelivery (its worker died, or SQS duplicated it
        # late) or a delivery whose lease is (nearly) over by the server's clock (SQS held it
        # back) is checked first with one heartbeat for the batch, so a stale copy is not run.
        doubtful = [a.lease for a in attempts if self._doubtful(a)]
        if doubtful and not await self._check_leases(doubtful):
            return len(attempts)  # stopping with the server unreachable: shutdown gives back
        for attempt in attempts:
            if attempt.lease.state is LeaseState.LOST:
                self._skip(attempt)
            else:
                attempt.task = asyncio.create_task(self._run_attempt(attempt))
        return len(attempts)

    def _doubtful(self, attempt: _Attempt) -> bool:
        if attempt.lease.message.receive_count > 1:
            return True
        left = (attempt.job.lease_expires_at - self._api.clock.now()).total_seconds()
        return left < _FRESH_LEASE_MARGIN + self._api.clock.uncertainty

    async def _check_leases(self, leases: list[HeldLease]) -> bool:
        """Ask the server about each lease until it answers for all (while it is unreachable
        the deliveries wait, holding their slots); False if the worker stops first."""
        failures = 0
        while leases := await self._heartbeater.beat(leases):
            failures += 1
            low, high = _CHECK_BACKOFF
            delay = min(high, low * 2 ** (failures - 1))
            if failures == 1:
                logger.warning(
                    "server unreachable: deliveries wait for their lease check",
                    extra={"count": len(leases), "retry_in": delay},
                )
            self.waiting_for("server", "lease check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            if self._stopping.is_set():
                return False
        if failures:
            logger.info("server reachable again: lease check done")
        self.waiting_for("server", None)
        return True

    def _jobs_of(
        self, received: ReceivedMessage
    ) -> tuple[list[JobMessage], list[tuple[str, ValidationError]]]:
        """The message's jobs, one (a JobMessage) or several (a PackedMessage), and the bodies
        that cannot be read, each with why: those fail their attempts (see _malformed), the
        others run."""
        try:
            return jobs_in_body(received.body), []
        except ValidationError as exc:
            items = _pack_items(received.body)
            if items is None:
                return [], [(received.body, exc)]
        jobs: list[JobMessage] = []
        bad: list[tuple[str, ValidationError]] = []
        for item in items:
            try:
                jobs.append(JobMessage.model_validate(item))
            except ValidationError as exc:
                bad.append((json.dumps(item, separators=(",", ":")), exc))
        return jobs, bad

    def _attempt_for(
        self, job: JobMessage, received: ReceivedMessage, delivery: _Delivery, uc: UseCaseConfig
    ) -> _Attempt | None:
        config = self._use_cases.get(job.use_case, uc)
        lease = self._lease(job, received, config)
        attempt = _Attempt(job=job, lease=lease, config=config, delivery=delivery)
        if attempt.key in self._running or attempt.key in self._finished:
            self.stats.skipped += 1
            logger.info("duplicate delivery of a running attempt", extra=job_fields(job))
            self._close_soon(attempt)
            return None
        return attempt

    def _malformed(
        self, received: ReceivedMessage, delivery: _Delivery, body: str, exc: ValidationError
    ) -> None:
        """A body (or a packed job) that is not a job message fails its attempt for good, with
        the reason, when its first fields name the lease; else SQS's redrive moves the
        message to the dead-letter queue."""
        self.stats.malformed += 1
        ref = lease_from_body(body)
        where = {"queue": received.queue, "message_id": received.message_id}
        if ref is None:
            logger.error(
                "message is not a job message; left for the dead-letter queue",
                extra={**where, "error": str(exc)},
            )
            return
        logger.error(
            "message is not a job message; its attempt fails",
            extra={**where, "job_id": str(ref.job_id), "attempt": ref.attempt},
        )
        reason = f"the job's SQS message could not be read: {describe_errors(exc)}"
        report = OutcomeReport(
            **ref.model_dump(),
            outcome=OutcomeKind.FAILED,
            worker_id=self.worker_id,
            failure=FailureInfo(type="InvalidMessage", message=reason[:10_000], retryable=False),
        )
        task = asyncio.create_task(self._reject(delivery, report))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reject(self, delivery: _Delivery, report: OutcomeReport) -> None:
        try:
            await self._reporter.report(report)
        except WorkerApiError as exc:
            # the lease expires instead, and the message comes back to be tried again
            logger.error("outcome not reported", extra={"error": exc.message})
            return
        if delivery.close():
            await self._delete(delivery.message)

    def _lease(self, job: JobMessage, received: ReceivedMessage, uc: UseCaseConfig) -> HeldLease:
        ref = LeaseRef(job_id=job.job_id, attempt=job.attempt, lease_token=job.lease_token)
        lease = HeldLease(ref=ref, message=received, seconds=uc.lease_duration_seconds)
        lease.on_lost = lambda: self._lease_lost(ref)
        return lease

    def _skip(self, attempt: _Attempt) -> None:
        self.stats.skipped += 1
        logger.info("lease already gone; message dropped", extra=job_fields(attempt.job))
        self._free_slot(attempt)
        self._running.pop(attempt.key, None)
        self._close_soon(attempt)

    def _remember_finished(self, key: Key) -> None:
        """A copy of a message that arrives after its attempt ended is dropped without a
        round trip; bounded, so memory stays flat however many jobs run."""
        self._finished[key] = None
        if len(self._finished) > _FINISHED_MEMORY:
            self._finished.popitem(last=False)

    def _lease_lost(self, ref: LeaseRef) -> None:
        attempt = self._running.get((ref.job_id, ref.attempt, ref.lease_token))
        # a beat racing the attempt's own report sees the lease gone because the report
        # landed: the attempt is over, not lost
        if attempt is not None and attempt.task is not None and not attempt.reporting:
            attempt.task.cancel()  # its outcome could not count any more

    # -- one attempt ---------------------------------------------------------------------------

    async def _run_attempt(self, attempt: _Attempt) -> None:
        self._heartbeater.track(attempt.lease)
        self._cancels.track(attempt.lease)
        try:
            if not attempt.holds_slot:  # a packed job past the slots its receive reserved
                await self._slots.take()
                attempt.holds_slot = True
            done = await self._run_handler(attempt)
            if done is not None and isinstance(done[0], Interrupted):
                await self._interrupted(attempt, done[0])
            elif done is not None:
                await self._finish(attempt, *done)
        except asyncio.CancelledError:
            if attempt.lease.state is not LeaseState.LOST or attempt.released:
                raise
            logger.warning("handler stopped: lease lost", extra=job_fields(attempt.job))
            await self._close(attempt)
        except Exception:
            logger.exception("attempt failed inside the worker", extra=job_fields(attempt.job))
        finally:
            self._free_slot(attempt)
            self._heartbeater.untrack(attempt.lease)
            self._cancels.untrack(attempt.lease)
            self._running.pop(attempt.key, None)
            self._remember_finished(attempt.key)
            self._idle.last_activity = self._clock()

    async def _run_handler(self, attempt: _Attempt) -> tuple[Outcome, datetime] | None:
        job = attempt.job
        try:
            if attempt.lease.state is LeaseState.CANCELLED:
                await self._give_back([attempt], reason="cancelled before it started")
                return None
            payload = job.payload
            if payload is None:  # too large for the message
                payload = await self._api.payload(job.job_id)
        except JobGone:
            self._skip_gone(attempt)
            return None
        except WorkerApiError as exc:
            # the message stays and comes back after its visibility timeout
            logger.error("payload not fetched", extra={**job_fields(job), "error": exc.message})
            return None
        self.stats.started += 1
        started_at = datetime.now(UTC)
        if self.metrics is not None:
            self.metrics.observe_start(job.use_case, job.attempt, job.enqueued_at, started_at)
        started = time.perf_counter()
        try:
            with self._tracing.run_span(job) as record:
                outcome = await self._execute(attempt, payload)
                record(outcome_label(outcome))
        finally:
            self._free_slot(attempt)
        self._observe(job, outcome, time.perf_counter() - started)
        return outcome, started_at

    async def _execute(self, attempt: _Attempt, payload: dict[str, Any]) -> Outcome:
        job, config = attempt.job, attempt.config
        if config.isolation is HandlerIsolation.PROCESS and self._processes is not None:
            outcome = await self._processes.run(
                job,
                payload,
                worker_id=self.worker_id,
                timeout_seconds=config.timeout_seconds,
                cancel=attempt.lease.cancel,
            )
            if isinstance(outcome, Failed) and outcome.failure.type == "WorkerCrashed":
                self.stats.crashed += 1
            return outcome
        handler = self.registry.get(job.job_type)
        outcome = await execute(
            handler,
            payload,
            self._context(attempt),
            timeout_seconds=config.timeout_seconds,
            executor=self._executor,
            known=self.registry.names,
            loops=self._loops,
        )
        if _timed_out(outcome) and handler is not None and not handler.is_async:
            self._replace_executor()
        return outcome

    def _replace_executor(self) -> None:
        """A sync handler past its timeout keeps its thread; later handlers get a fresh pool
        rather than queue behind stuck threads (the old pool's threads end as they return)."""
        old = self._executor
        self._executor = ThreadPoolExecutor(self._concurrency, thread_name_prefix="jobs-handler")
        old.shutdown(wait=False)

    async def _interrupted(self, attempt: _Attempt, outcome: Interrupted) -> None:
        self.stats.interrupted += 1
        logger.info(
            "attempt interrupted, not its fault; lease given back",
            extra={**job_fields(attempt.job), "reason": outcome.reason},
        )
        attempt.lease.finishing = True
        await self._give_back([attempt], reason="interrupted")

    def _observe(self, job: JobMessage, outcome: Outcome, seconds: float) -> None:
        if self.metrics is None:
            return
        job_type = job.job_type if job.job_type in self.registry else "unknown"
        self.metrics.observe_handler(job.use_case, job_type, outcome_label(outcome), seconds)

    def _skip_gone(self, attempt: _Attempt) -> None:
        self.stats.skipped += 1
        logger.info("job no longer running; message dropped", extra=job_fields(attempt.job))
        self._close_soon(attempt)

    def _context(self, attempt: _Attempt) -> JobContext:
        handler = self.registry.get(attempt.job.job_type)
        return JobContext.for_message(
            attempt.job,
            worker_id=self.worker_id,
            logger_name=handler.func.__module__ if handler else __name__,
            cancel=attempt.lease.cancel,
            clients=self._clients,
            # where a sync handler's ctx.run_async runs: a handler loop, not the runtime's
            loop=self._loops.current.loop if self._loops else asyncio.get_running_loop(),
            parents=lambda: self._api.parents(attempt.job.job_id),
        )

    async def _finish(self, attempt: _Attempt, outcome: Outcome, started_at: datetime) -> None:
        attempt.reporting = True
        attempt.lease.finishing = True
        report = _report(attempt.job, outcome, worker_id=self.worker_id, started_at=started_at)
        ack = await self._report(attempt, report)
        if ack is None:
            return  # the message stays: it comes back after its visibility, or the lease expires
        if isinstance(outcome, Failed):
            self.stats.failed += 1
        else:
            self.stats.succeeded += 1
        if not ack.applied:
            self.stats.stale += 1
            logger.warning(
                "outcome refused as stale", extra={**job_fields(attempt.job), "status": ack.status}
            )
        # the delete waits for company (delete_linger) in the background, not in the attempt:
        # an attempt still awaiting it at the end of a stop's grace was cancelled with it, and
        # its message, whose outcome was reported, was left to come back
        self._close_soon(attempt)

    async def _report(self, attempt: _Attempt, report: OutcomeReport) -> OutcomeAck | None:
        """The work is done: keep offering its outcome (the lease is still heartbeated) while
        the server is unreachable, up to `report_retry_seconds`."""
        give_up = self._clock() + self._report_retry
        while True:
            try:
                return await self._reporter.report(report)
            except ServerUnavailable as exc:
                if self._clock() >= give_up or self._hurry.is_set():
                    error = exc.message
                    break
                await asyncio.sleep(_REPORT_RETRY_PAUSE)
            except WorkerApiError as exc:
                error = exc.message
                break
        logger.error("outcome not reported", extra={**job_fields(attempt.job), "error": error})
        return None

    def _free_slot(self, attempt: _Attempt) -> None:
        if attempt.holds_slot:
            attempt.holds_slot = False
            self._slots.release()

    # -- deleting ------------------------------------------------------------------------------

    def _closes(self, attempt: _Attempt) -> bool:
        """The attempt is done with (once): True when it was its message's last job."""
        if attempt.closed:
            return False
        attempt.closed = True
        return attempt.delivery.close()

    async def _close(self, attempt: _Attempt) -> None:
        if self._closes(attempt):
            await self._delete(attempt.delivery.message)

    def _close_soon(self, attempt: _Attempt) -> None:
        if self._closes(attempt):
            self._delete_soon(attempt.delivery.message)

    async def _delete(self, message: ReceivedMessage) -> None:
        try:
            deleted = await self._deleter.submit(message)
        except JobsWorkerError as exc:
            deleted = False
            logger.warning("message not deleted", extra={"error": exc.message})
        if not deleted:
            # harmless: when it comes back its lease is gone and it is dropped unrun
            logger.info("message not deleted", extra={"message_id": message.message_id})

    def _delete_soon(self, message: ReceivedMessage) -> None:
        task = asyncio.create_task(self._delete(message))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _delete_batch(self, messages: list[ReceivedMessage]) -> list[bool]:
        failed = await self._consumer.delete(messages)
        return [m.receipt not in failed for m in messages]

    # -- stopping ------------------------------------------------------------------------------

    async def _watchdog(self) -> None:
        """Handler loops blocked by a handler are logged and get no new handlers."""
        while True:
            await asyncio.sleep(_WATCHDOG_PERIOD)
            if self._loops is not None:
                self._loops.check()

    async def _burst_monitor(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(0.05)
            if self._running:
                continue
            idle = self._idle
            all_empty = all(
                idle.empty_since.get(name, -math.inf) >= idle.last_activity
                for name in self._use_cases
            )
            if all_empty and self._clock() - idle.last_activity >= self._burst_idle:
                self.stop()

    async def _shutdown(
        self, loops: list[asyncio.Task[None]], keepers: list[asyncio.Task[None]]
    ) -> None:
        """`keepers` (heartbeats, the cancellation poll) run until every attempt is over."""
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await self._wait_for_handlers()
        # also attempts admitted but not started: the receive loop stopped mid-admission
        unfinished = [a for a in self._running.values() if a.task is None or not a.task.done()]
        for attempt in unfinished:
            attempt.released = True
            if attempt.task is not None:
                attempt.task.cancel()
        await asyncio.gather(*(a.task for a in unfinished if a.task), return_exceptions=True)
        await self._give_back(unfinished, reason="worker stopping")
        # rejections in the background still report, then delete
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._reporter.aclose()
        await self._deleter.aclose()
        for task in keepers:
            task.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._processes is not None:
            await self._processes.close()
        if self._loops is not None:
            await asyncio.to_thread(self._loops.close)  # joins: a blocked loop takes a while

    async def _wait_for_handlers(self) -> None:
        """Until every attempt is done, the grace period is over or `stop(now=True)`."""
        tasks = [a.task for a in self._running.values() if a.task is not None]
        if not tasks or self._hurry.is_set():
            return
        logger.info(
            "waiting for running handlers", extra={"count": len(tasks), "grace": self._grace}
        )
        # waiting on asyncio.wait (not gather) so that giving up does not cancel the attempts
        all_done = asyncio.ensure_future(asyncio.wait(tasks))
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait(
                [all_done, hurry], timeout=self._grace, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            all_done.cancel()
            hurry.cancel()

    async def _give_back(self, attempts: list[_Attempt], *, reason: str) -> None:
        """Release the leases so the jobs run again soon (a cancelled job ends cancelled),
        then drop their messages: the scheduler publishes new ones."""
        if not attempts:
            return
        leases = [a.lease.ref for a in attempts]
        try:
            released = set(await self._api.release(self.worker_id, leases))
        except WorkerApiError as exc:
            logger.error("leases not released; they will expire", extra={"error": exc.message})
            return
        self.stats.released += len(released)
        logger.info("leases released", extra={"count": len(released), "reason": reason})
        await asyncio.gather(*(self._close(a) for a in attempts))


def _pack_items(body: str) -> list[Any] | None:
    """The raw jobs of a packed message's body whose envelope reads but whose jobs may not;
    None when it is no packed message."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or parsed.get("v") != 2:
        return None
    jobs = parsed.get("jobs")
    return jobs if isinstance(jobs, list) and jobs else None


def _check_isolation(use_cases: dict[str, UseCaseConfig], processes: ProcessPool | None) -> None:
    wanting = [n for n, uc in use_cases.items() if uc.isolation is HandlerIsolation.PROCESS]
    if wanting and processes is None:
        raise JobsWorkerError(
            f"use case {', '.join(map(repr, wanting))} runs handlers in processes "
            "(isolation = process): give the worker a ProcessPool (processes=...)"
        )


def _timed_out(outcome: Outcome) -> bool:
    return isinstance(outcome, Failed) and outcome.failure.type == "Timeout"


def _report(
    job: JobMessage, outcome: Outcome, *, worker_id: str, started_at: datetime
) -> OutcomeReport:
    assert not isinstance(outcome, Interrupted)  # given back, never reported
    failed = isinstance(outcome, Failed)
    return OutcomeReport(
        job_id=job.job_id,
        attempt=job.attempt,
        lease_token=job.lease_token,
        outcome=OutcomeKind.FAILED if failed else OutcomeKind.SUCCEEDED,
        worker_id=worker_id,
        result=None if isinstance(outcome, Failed) else outcome.result,
        failure=outcome.failure if isinstance(outcome, Failed) else None,
        started_at=started_at,
    )
