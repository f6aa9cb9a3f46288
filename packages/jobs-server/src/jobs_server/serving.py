"""jobs-server under uvicorn: open event streams must not keep a stopping server alive.

uvicorn stops by closing its sockets, then waiting for every open response to finish, and only
then runs the lifespan's shutdown; an event stream is an open response until it ends. So the
server ends the streams (`shutdown` event) as soon as uvicorn starts to stop, and whatever
request is still open after `timeout_graceful_shutdown` (JOBS_SHUTDOWN_GRACE_SECONDS) is cut."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from jobs_server.app import JobsServer

__all__ = ["JobsUvicornServer", "jobs_server_of"]


def jobs_server_of(app: object) -> JobsServer | None:
    """The JobsServer of an app create_app built (None for another app)."""
    return getattr(getattr(app, "state", None), "jobs", None)


class JobsUvicornServer(uvicorn.Server):
    """uvicorn's server, ending `jobs`' event streams first when it stops."""

    def __init__(self, config: uvicorn.Config, *, jobs: JobsServer | None) -> None:
        super().__init__(config)
        self._jobs = jobs

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._jobs is not None:
            self._jobs.end_streams()
        await super().shutdown(sockets)
