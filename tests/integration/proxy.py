"""A TCP proxy on loopback that a test can cut and restore: the way to make a real service
unreachable without stopping it for everyone else."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class TcpProxy:
    """Listens on a loopback TCP port; forwards to host:port, or to a unix socket path (when
    `target_host` starts with a slash, as PostgreSQL's socket directories do)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopped = False

    async def start(self) -> None:
        self._stopped = False
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        self._stopped = True
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.close()
        for t in list(self._pipes):
            t.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.target
        try:
            if host.startswith("/"):
                path = f"{host}/.s.PGSQL.{port}"
                up_reader, up_writer = await asyncio.open_unix_connection(path)
            else:
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        if self._stopped:  # stopped while this connection was being opened: cut it too
            writer.close()
            up_writer.close()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()
            self._writers.discard(dst)


async def start_database_proxy(database_url: str) -> tuple[TcpProxy, str]:
    """A running proxy in front of the test database, and the URL that goes through it (TCP on
    loopback, whether the database listens on TCP or, embedded, on a unix socket)."""
    parts = urlsplit(database_url)
    query = dict(parse_qsl(parts.query))
    host = query.pop("host", None) or parts.hostname or "127.0.0.1"
    proxy = TcpProxy(host, parts.port or 5432)
    await proxy.start()
    user = parts.username or "postgres"
    auth = f"{user}:{parts.password}" if parts.password else user
    url = urlunsplit(
        parts._replace(netloc=f"{auth}@127.0.0.1:{proxy.port}", query=urlencode(query))
    )
    return proxy, url
