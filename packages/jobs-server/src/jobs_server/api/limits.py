"""Request body limit, counted while the body streams in (with or without a Content-Length).

FastAPI's own `max_body_size` answers in plain text, and when the Content-Length alone is over
the limit it replaces whatever the route answers with that text: our clients switch on the
error envelope, so our routes count bytes here and raise `BodyTooLarge`, which the route turns
into the envelope (api/route.py)."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope

from jobs_server.api.errors import BodyTooLarge

__all__ = ["declared_over", "limited"]


def declared_over(scope: Scope, limit: int) -> bool:
    """The Content-Length header alone says the body is over `limit`."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.isdigit() and int(value) > limit
    return False


def limited(receive: Receive, limit: int) -> Receive:
    """`receive`, raising the 413 as soon as the body read so far is over `limit`."""
    size = 0

    async def counting() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise BodyTooLarge(limit)
        return message

    return counting
