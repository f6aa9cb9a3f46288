"""A cheap enqueue client for latency benchmarks: the SDK's request (POST /v1/jobs with its
headers and a fresh Idempotency-Key) written as bytes on kept-alive HTTP/1.1 connections, and
the answer read back with no HTTP library. A call costs tens of microseconds of this process's
CPU where the SDK's costs about a millisecond (httpx, pydantic), so a latency run measures the
system, not its client, and leaves the machine's cores to the system.

Not a general HTTP client: one request at a time per connection, Content-Length bodies only
(what jobs-server answers for these calls), errors raised with the status and the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from urllib.parse import urlsplit

from jobs_sdk import __version__


class RawEnqueuer:
    """`await enqueue()` -> the stored job's id. Up to `connections` calls in flight."""

    def __init__(self, url: str, token: str, body: dict[str, object], connections: int = 8):
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        payload = json.dumps(body, separators=(",", ":")).encode()
        self._head = (
            f"POST /v1/jobs HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: application/json\r\n"
            f"User-Agent: jobs-sdk/{__version__}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nIdempotency-Key: "
        ).encode()
        self._body = payload
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._size = connections
        self._all: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> RawEnqueuer:
        for _ in range(self._size):
            reader, writer = await asyncio.open_connection(self._host, self._port)
            self._all.append(writer)
            self._idle.put_nowait((reader, writer))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._all:
            writer.close()
        for writer in self._all:
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def enqueue(self) -> str:
        key = str(uuid.uuid4()).encode()
        try:
            status, answer = await self._call(key)
        except (asyncio.IncompleteReadError, ConnectionError):
            # the server closed a connection left idle past its keep-alive (a low rate): sent
            # again on a fresh one, under the same Idempotency-Key, so at most one job is stored
            status, answer = await self._call(key, fresh=True)
        if status >= 300:
            raise RuntimeError(f"POST /v1/jobs answered {status}: {answer[:300]!r}")
        return str(json.loads(answer)["job"]["id"])

    async def _call(self, key: bytes, *, fresh: bool = False) -> tuple[int, bytes]:
        reader, writer = await self._idle.get()
        try:
            if fresh:  # the others may have been left idle as long
                writer.close()
                reader, writer = await asyncio.open_connection(self._host, self._port)
                self._all.append(writer)
            writer.write(self._head + key + b"\r\n\r\n" + self._body)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
        except BaseException:
            writer.close()  # a half-read answer leaves the connection unusable
            reader, writer = await asyncio.open_connection(self._host, self._port)
            self._all.append(writer)
            raise
        finally:
            self._idle.put_nowait((reader, writer))
        return status, answer
