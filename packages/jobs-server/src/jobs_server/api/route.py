"""The route class of every jobs-server endpoint.

Everything that makes a request ours happens inside our own routes, so an application that
includes them keeps its exception handlers, its error shapes and its own body sizes:

- any exception raised while serving the route becomes our error envelope here (no app-level
  handler is involved, and an unexpected error answers 500 without the connection being dropped,
  which is what Starlette's ServerErrorMiddleware does after answering);
- a route with a body counts it against the server's limit while it streams in;
- a method the path does not serve answers 405 with `Allow`;
- the server starts on the first request when no lifespan started it (an app mounted with
  `app.mount(...)` gets no lifespan from Starlette).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from jobs_schema import SERVER_TIME_HEADER, ErrorCode
from jobs_server.api.errors import (
    COMMON_ERRORS,
    BodyTooLarge,
    documented_errors,
    error_response,
    response_for,
)
from jobs_server.api.limits import declared_over, limited
from jobs_server.errors import JobsServerError

if TYPE_CHECKING:
    from jobs_server.app import JobsServer

__all__ = ["JobsRoute", "api_router", "operation_id", "server_in"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def operation_id(route: APIRoute) -> str:
    """Stable OpenAPI operation ids: the route's name (`enqueue_job`, `list_jobs`, ...)."""
    return route.name


def server_in(scope: Scope) -> JobsServer:
    """The JobsServer serving this request (`include_in` and `create_app` put it there)."""
    server: JobsServer | None = getattr(scope["app"].state, "jobs_server", None)
    if server is None:
        raise RuntimeError("no JobsServer serves this app: add the routes with include_in")
    return server


def stamp_server_time(response: Response, server: JobsServer) -> None:
    """The server's clock on the answer (SERVER_TIME_HEADER): workers judge leases by it."""
    response.headers[SERVER_TIME_HEADER] = f"{server.clock.now().timestamp():.3f}"


class JobsRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        handler = self.inner_handler()

        async def run(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as exc:
                response = response_for(exc)
            stamp_server_time(response, server_in(request.scope))
            return response

        return run

    def inner_handler(self) -> Handler:
        """FastAPI's handler of this route; subclasses may answer some requests faster."""
        return super().get_route_handler()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().handle(scope, receive, send)
            return
        server = server_in(scope)
        refusal = await self._refusal(server, scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if self.body_field is not None:
            receive = limited(receive, server.body_limit(self.name))
        await super().handle(scope, receive, send)

    async def _refusal(self, server: JobsServer, scope: Scope) -> Response | None:
        if scope["method"] not in (self.methods or ()):
            allow = ", ".join(server.allowed_methods(self.path))
            return error_response(
                405,
                ErrorCode.VALIDATION,
                f"method {scope['method']} is not allowed on this path; allowed: {allow}",
                headers={"Allow": allow},
            )
        limit = server.body_limit(self.name)
        if self.body_field is not None and declared_over(scope, limit):
            return response_for(BodyTooLarge(limit))
        try:
            await server.ensure_started()
        except JobsServerError as exc:
            return response_for(exc)
        return None


def api_router(tag: str, *, prefix: str = "/v1") -> APIRouter:
    """A router of the public API: its routes are JobsRoutes (error envelope, limits, server
    time), named by operation_id and documented with the errors every route can answer."""
    return APIRouter(
        prefix=prefix,
        tags=[tag],
        responses=documented_errors(*COMMON_ERRORS),
        route_class=JobsRoute,
        generate_unique_id_function=operation_id,
    )
