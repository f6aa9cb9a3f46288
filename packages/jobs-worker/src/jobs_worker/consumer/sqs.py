"""SqsConsumer: the worker's only aiobotocore user. ReceiveMessage 10 at a time,
ChangeMessageVisibilityBatch and DeleteMessageBatch 10 entries a call."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import version
from typing import Any

import botocore
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from jobs_worker.consumer.base import ReceivedMessage
from jobs_worker.errors import JobsWorkerError

__all__ = ["SqsConsumer", "SqsUnavailable", "sqs_client"]

logger = logging.getLogger(__name__)

_USER_AGENT = f"jobs-worker/{version('jobs-worker')} botocore/{botocore.__version__}"
_BATCH = 10  # the most SQS takes in one receive or batch call
_MAX_VISIBILITY = 12 * 3600
_MAX_WAIT = 20
_ERRORS = (BotoCoreError, ClientError, OSError)


class SqsUnavailable(JobsWorkerError):
    """SQS could not be reached, or refused a call."""


@asynccontextmanager
async def sqs_client(
    *, region: str, endpoint_url: str | None, max_connections: int = 32
) -> AsyncIterator[Any]:
    config = AioConfig(
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=3,
        read_timeout=_MAX_WAIT + 5,  # above the longest long poll
        max_pool_connections=max_connections,
        # Per call, botocore otherwise checks every request against the service model (ours
        # are built here from typed values, and SQS checks them again) and builds and
        # sanitises its forty-part User-Agent twice; together about 15% of a call's CPU
        # (bench/sqs_call.py)
        parameter_validation=False,
        user_agent=_USER_AGENT,
    )
    session = get_session()
    async with session.create_client(
        "sqs", region_name=region, endpoint_url=endpoint_url, config=config
    ) as client:
        yield client


BatchCall = Callable[..., Awaitable[dict[str, Any]]]


class SqsConsumer:
    def __init__(self, client: Any) -> None:
        self._client = client
        self._urls: dict[str, str] = {}
        self._stack: AsyncExitStack | None = None

    @classmethod
    async def connect(
        cls, *, region: str, endpoint_url: str | None, max_connections: int = 32
    ) -> SqsConsumer:
        stack = AsyncExitStack()
        client = await stack.enter_async_context(
            sqs_client(region=region, endpoint_url=endpoint_url, max_connections=max_connections)
        )
        consumer = cls(client)
        consumer._stack = stack
        return consumer

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()

    async def check_queue(self, queue: str) -> None:
        await self.queue_url(queue)

    async def queue_url(self, queue: str) -> str:
        if queue.startswith(("https://", "http://")):
            return queue
        if queue not in self._urls:
            try:
                resp = await self._client.get_queue_url(QueueName=queue)
            except _ERRORS as exc:
                raise SqsUnavailable(f"cannot find SQS queue {queue!r}: {exc}") from exc
            self._urls[queue] = resp["QueueUrl"]
        return self._urls[queue]

    async def receive(
        self, queue: str, *, max_messages: int, wait_seconds: float
    ) -> list[ReceivedMessage]:
        url = await self.queue_url(queue)
        try:
            resp = await self._client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=max(1, min(max_messages, _BATCH)),
                WaitTimeSeconds=max(0, min(round(wait_seconds), _MAX_WAIT)),
                AttributeNames=["ApproximateReceiveCount"],
            )
        except _ERRORS as exc:
            raise SqsUnavailable(f"ReceiveMessage on {queue!r} failed: {exc}") from exc
        return [_received(queue, m) for m in resp.get("Messages", [])]

    async def extend(self, messages: Sequence[ReceivedMessage], *, seconds: float) -> set[str]:
        timeout = max(0, min(math.ceil(seconds), _MAX_VISIBILITY))
        return await self._batched(
            messages,
            self._client.change_message_visibility_batch,
            lambda m: {"ReceiptHandle": m.receipt, "VisibilityTimeout": timeout},
        )

    async def delete(self, messages: Sequence[ReceivedMessage]) -> set[str]:
        return await self._batched(
            messages, self._client.delete_message_batch, lambda m: {"ReceiptHandle": m.receipt}
        )

    async def _batched(
        self,
        messages: Sequence[ReceivedMessage],
        call: BatchCall,
        entry: Callable[[ReceivedMessage], dict[str, Any]],
    ) -> set[str]:
        by_queue: dict[str, list[ReceivedMessage]] = {}
        for m in messages:
            by_queue.setdefault(m.queue, []).append(m)
        chunks = [
            (queue, msgs[i : i + _BATCH])
            for queue, msgs in by_queue.items()
            for i in range(0, len(msgs), _BATCH)
        ]
        failed = await asyncio.gather(*(self._chunk(q, c, call, entry) for q, c in chunks))
        return set().union(*failed)

    async def _chunk(
        self,
        queue: str,
        chunk: list[ReceivedMessage],
        call: BatchCall,
        entry: Callable[[ReceivedMessage], dict[str, Any]],
    ) -> set[str]:
        entries = {str(i): m for i, m in enumerate(chunk)}
        try:
            url = await self.queue_url(queue)
            resp = await call(
                QueueUrl=url, Entries=[{"Id": k, **entry(m)} for k, m in entries.items()]
            )
        except (*_ERRORS, SqsUnavailable) as exc:
            logger.warning("SQS batch call failed", extra={"queue": queue, "error": str(exc)})
            return {m.receipt for m in chunk}
        failed = resp.get("Failed", [])
        for f in failed:
            logger.warning(
                "SQS refused a batch entry", extra={"queue": queue, "code": f.get("Code")}
            )
        return {entries[f["Id"]].receipt for f in failed}


def _received(queue: str, m: dict[str, Any]) -> ReceivedMessage:
    count = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
    return ReceivedMessage(
        queue=queue,
        message_id=m["MessageId"],
        receipt=m["ReceiptHandle"],
        body=m["Body"],
        receive_count=count,
    )
