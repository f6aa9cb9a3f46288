"""The worker's own small HTTP port (JOBS_HEALTH_PORT): `GET /healthz` for container liveness
checks (200 while running, 503 once stopping or a loop is dead or hung), `GET /readyz` for
readiness (503 also while the worker waits for the server, SQS or a queue) and `GET /metrics`
(Prometheus text: the worker's WorkerMetrics, or only its own counters when metrics are off).
Plain asyncio: a worker needs no web framework for two paths."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from jobs_worker.metrics import CONTENT_TYPE, stats_text
from jobs_worker.runtime import Worker

__all__ = ["metrics_text", "serve_health"]

logger = logging.getLogger(__name__)

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def serve_health(worker: Worker, *, host: str, port: int) -> asyncio.Server:
    """Start serving; close the returned server when the worker has stopped."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            status, ctype, body = _answer(worker, request.split(b"\r\n", 1)[0])
            writer.write(_response(status, ctype, body))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port)
    logger.info("health port open", extra={"host": host, "port": port})
    return server


def _answer(worker: Worker, request_line: bytes) -> tuple[int, str, bytes]:
    method, _, rest = request_line.decode("latin-1").partition(" ")
    path = rest.split(" ", 1)[0].split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return 405, "text/plain", b"GET only\n"
    if path in ("/healthz", "/readyz"):
        health = worker.health()
        body = {
            "ok": health.ok,
            "ready": health.ready,
            "problems": health.problems,
            "waiting_for": health.waiting_for,
            "worker_id": worker.worker_id,
        }
        good = health.ok if path == "/healthz" else health.ready
        return 200 if good else 503, "application/json", json.dumps(body).encode()
    if path == "/metrics":
        return 200, CONTENT_TYPE, metrics_text(worker).encode()
    return 404, "text/plain", b"try /healthz, /readyz or /metrics\n"


def _response(status: int, ctype: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def metrics_text(worker: Worker) -> str:
    """The worker's metrics in Prometheus' text format."""
    text = worker.metrics.render() if worker.metrics is not None else stats_text(worker)
    return text.decode()
