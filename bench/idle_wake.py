"""How long a process that has slept takes to act on a message, by how long it slept: the part
of pickup latency at a low rate that is the host's, not the code's. No service needed.

    uv run python bench/idle_wake.py        # --waits, --samples, --runs

A server process gets a request naming a wait, sleeps that long, and answers with the
CLOCK_MONOTONIC instant it sends; the client (this process) times from that instant to the
moment it has the answer. The client is, in turn: a blocking socket; an asyncio stream; the
same with a task waking every 10 ms beside it (a process kept busy); and an aiohttp request
(the code path of an HTTP client such as aiobotocore's, whose long polls wait the same way).
Median of `--runs` runs of the per-run median, with min and max, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import threading
import time
from collections.abc import Awaitable, Callable

import aiohttp

from _common import load_average, summary


def _serve(listener: socket.socket) -> None:
    """The server process: each line read is a wait in seconds; each answer the monotonic
    instant it is sent, as a line, or as an HTTP response's body for an HTTP request."""

    def handle(conn: socket.socket) -> None:
        buf = b""
        while True:
            while b"\n" not in buf:
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
            if buf.startswith(b"GET "):
                while b"\r\n\r\n" not in buf:
                    buf += conn.recv(4096)
                head, buf = buf.split(b"\r\n\r\n", 1)
                time.sleep(float(head.split(b" ")[1].strip(b"/")))
                body = b"%.9f" % time.perf_counter()
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            else:
                line, buf = buf.split(b"\n", 1)
                time.sleep(float(line))
                conn.send(b"%.9f\n" % time.perf_counter())

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


Probe = Callable[[float], Awaitable[float]]


async def measure(port: int, waits: list[float], samples: int) -> dict[str, dict[float, float]]:
    """Per client and wait, the median ms from the server's send to the client having it."""
    out: dict[str, dict[float, float]] = {}

    blocking = socket.create_connection(("127.0.0.1", port))

    async def blocking_probe(wait: float) -> float:
        blocking.send(f"{wait}\n".encode())
        sent = float(blocking.recv(64))
        return time.perf_counter() - sent

    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def stream_probe(wait: float) -> float:
        writer.write(f"{wait}\n".encode())
        sent = float(await reader.readline())
        return time.perf_counter() - sent

    session = aiohttp.ClientSession()

    async def http_probe(wait: float) -> float:
        async with session.get(f"http://127.0.0.1:{port}/{wait}") as r:
            sent = float(await r.read())
        return time.perf_counter() - sent

    async def ticking() -> None:
        while True:
            await asyncio.sleep(0.01)

    async def run(name: str, probe: Probe) -> None:
        out[name] = {}
        for wait in waits:
            n = samples if wait < 0.5 else max(3, samples // 2)
            out[name][wait] = 1000 * statistics.median([await probe(wait) for _ in range(n)])

    try:
        await run("blocking socket", blocking_probe)
        await run("asyncio stream", stream_probe)
        ticker = asyncio.create_task(ticking())
        await run("asyncio stream, a 10-ms task beside it", stream_probe)
        ticker.cancel()
        await run("aiohttp request", http_probe)
    finally:
        await session.close()
        writer.close()
        blocking.close()
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--waits", type=float, nargs="+", default=[0.0, 0.05, 0.2, 1.0])
    parser.add_argument("--samples", type=int, default=6, help="probes per wait and client")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(load_average(), "(before)")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    child = os.fork()
    if child == 0:
        _serve(listener)
    try:
        runs = [
            await measure(listener.getsockname()[1], args.waits, args.samples)
            for _ in range(args.runs)
        ]
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    print(f"send -> the client has it, ms, after the client slept that long ({args.runs} runs):")
    for name in runs[0]:
        for wait in args.waits:
            label = f"  {name}, slept {wait:g} s:"
            print(label.ljust(56), summary([r[name][wait] for r in runs]))
    print(load_average(), "(after)")


if __name__ == "__main__":
    asyncio.run(main())
