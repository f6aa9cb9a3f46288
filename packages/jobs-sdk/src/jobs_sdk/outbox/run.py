"""What `jobs outbox init` and `jobs outbox relay` run: a pool on the producer's database and
a JobsClient, for as long as the command does."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from jobs_sdk._profiles import Connection
from jobs_sdk.client import JobsClient
from jobs_sdk.outbox import Outbox
from jobs_sdk.outbox.relay import RelayPass

__all__ = ["create_table", "relay"]


async def create_table(database_url: str, table: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        await Outbox(table).create_table(conn)
    finally:
        await conn.close()


async def relay(
    database_url: str, table: str, connection: Connection, *, once: bool, **options: Any
) -> RelayPass | None:
    """Drain once (and say what was done), or relay until SIGTERM/SIGINT."""
    import asyncpg

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        async with JobsClient(connection.url, connection.token) as jobs:
            outbox_relay = Outbox(table).relay(pool, jobs, **options)
            if once:
                return await outbox_relay.drain()
            await outbox_relay.run(stop=_stop_on_signals())
            return None
    finally:
        await pool.close()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
