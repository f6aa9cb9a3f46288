"""SqsPublisher: the only aiobotocore user of the server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import version
from typing import Any

import botocore
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from jobs_schema import MAX_SQS_MESSAGE_BYTES
from jobs_server.errors import JobsServerError
from jobs_server.publisher.base import OutgoingMessage, QueueSpec

__all__ = ["SqsPublisher", "SqsUnavailable", "batch_chunks", "sqs_client"]

logger = logging.getLogger(__name__)

_USER_AGENT = f"jobs-server/{version('jobs-server')} botocore/{botocore.__version__}"
_BATCH = 10  # SendMessageBatch takes at most 10 entries
_DLQ_RETENTION = str(14 * 86_400)

# Told of each failed SQS call (operation, count): the metrics' SQS error counter.
ErrorHook = Callable[[str, int], None]


def _ignore(operation: str, count: int) -> None:
    return None


class SqsUnavailable(JobsServerError):
    """SQS could not be reached or refused the call."""


@asynccontextmanager
async def sqs_client(
    *,
    region: str,
    endpoint_url: str | None,
    max_connections: int = 32,
    credentials: tuple[str, str] | None = None,
) -> AsyncIterator[Any]:
    """`credentials` (key id, secret): None leaves them to botocore's chain."""
    config = AioConfig(
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=3,
        read_timeout=25,  # above the 20 s long poll
        max_pool_connections=max_connections,
        # Per call, botocore otherwise checks every request against the service model (ours
        # are built here from typed values, and SQS checks them again) and builds and
        # sanitises its forty-part User-Agent twice; together about 15% of a call's CPU
        # (bench/sqs_call.py)
        parameter_validation=False,
        user_agent=_USER_AGENT,
    )
    session = get_session()
    key_id, secret = credentials or (None, None)
    async with session.create_client(
        "sqs",
        region_name=region,
        endpoint_url=endpoint_url,
        config=config,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    ) as client:
        yield client


class SqsPublisher:
    """SendMessageBatch, 10 a call, several calls in flight; failed entries retried alone."""

    def __init__(
        self,
        client: Any,
        *,
        in_flight: int = 8,
        attempts: int = 3,
        on_error: ErrorHook | None = None,
    ) -> None:
        self._client = client
        self._on_error = on_error or _ignore
        self._slots = asyncio.Semaphore(in_flight)
        self._attempts = attempts
        self._urls: dict[str, str] = {}
        self._stack: AsyncExitStack | None = None

    @classmethod
    async def connect(
        cls,
        *,
        region: str,
        endpoint_url: str | None,
        in_flight: int = 8,
        on_error: ErrorHook | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> SqsPublisher:
        stack = AsyncExitStack()
        client = await stack.enter_async_context(
            sqs_client(
                region=region,
                endpoint_url=endpoint_url,
                max_connections=in_flight * 2,
                credentials=credentials,
            )
        )
        publisher = cls(client, in_flight=in_flight, on_error=on_error)
        publisher._stack = stack
        return publisher

    @property
    def max_message_bytes(self) -> int:
        return MAX_SQS_MESSAGE_BYTES

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()

    async def queue_url(self, queue: str) -> str:
        if queue.startswith(("https://", "http://")):
            return queue
        if queue not in self._urls:
            try:
                resp = await self._client.get_queue_url(QueueName=queue)
            except (ClientError, BotoCoreError) as exc:
                self._on_error("get_queue_url", 1)
                raise SqsUnavailable(f"cannot find SQS queue {queue!r}: {exc}") from exc
            self._urls[queue] = resp["QueueUrl"]
        return self._urls[queue]

    async def publish(self, queue: str, messages: list[OutgoingMessage]) -> set[str]:
        if not messages:
            return set()
        try:
            url = await self.queue_url(queue)
        except SqsUnavailable as exc:
            logger.error("sqs unavailable", extra={"queue": queue, "error": str(exc)})
            return {m.key for m in messages}
        chunks = batch_chunks(messages, max_bytes=self.max_message_bytes)
        failed = await asyncio.gather(*(self._send_chunk(url, c) for c in chunks))
        return set().union(*failed)

    async def _send_chunk(self, url: str, chunk: Sequence[OutgoingMessage]) -> set[str]:
        pending = {f"m{i}": m for i, m in enumerate(chunk)}
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(0.05 * 2**attempt)
            entries = [_entry(k, m) for k, m in pending.items()]
            try:
                async with self._slots:
                    resp = await self._client.send_message_batch(QueueUrl=url, Entries=entries)
            except (ClientError, BotoCoreError, OSError) as exc:
                self._on_error("send_message_batch", 1)
                logger.warning("SendMessageBatch failed", extra={"error": str(exc)})
                continue
            failed = resp.get("Failed", [])
            if failed:
                self._on_error("send_message_batch_entry", len(failed))
            for f in failed:
                if f.get("SenderFault"):
                    logger.error("SQS refused a message", extra={"code": f.get("Code")})
            pending = {f["Id"]: pending[f["Id"]] for f in failed}
            if not pending:
                return set()
        return {m.key for m in pending.values()}

    async def ensure_queues(self, specs: list[QueueSpec]) -> dict[str, str]:
        return {spec.queue: await self._ensure_queue(spec) for spec in specs}

    async def _ensure_queue(self, spec: QueueSpec) -> str:
        name = spec.queue.rstrip("/").rsplit("/", 1)[-1]
        try:
            dlq_url = await self._create(name + "-dlq", {"MessageRetentionPeriod": _DLQ_RETENTION})
            dlq = await self._client.get_queue_attributes(
                QueueUrl=dlq_url, AttributeNames=["QueueArn"]
            )
            redrive = {
                "deadLetterTargetArn": dlq["Attributes"]["QueueArn"],
                "maxReceiveCount": str(spec.max_receive_count),
            }
            attributes = {
                "VisibilityTimeout": str(spec.visibility_timeout_seconds),
                "ReceiveMessageWaitTimeSeconds": "20",
                "RedrivePolicy": json.dumps(redrive),
            }
            url = await self._create(name, attributes)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise SqsUnavailable(f"cannot create SQS queue {name!r}: {exc}") from exc
        self._urls[spec.queue] = url
        return url

    async def _create(self, name: str, attributes: dict[str, str]) -> str:
        try:
            resp = await self._client.create_queue(QueueName=name, Attributes=attributes)
            url: str = resp["QueueUrl"]
        except ClientError as exc:
            if "QueueAlreadyExists" not in str(exc) and "QueueNameExists" not in str(exc):
                raise
            url = (await self._client.get_queue_url(QueueName=name))["QueueUrl"]
            await self._client.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        return url


def batch_chunks(messages: list[OutgoingMessage], *, max_bytes: int) -> list[list[OutgoingMessage]]:
    """SendMessageBatch calls of up to 10 messages whose bodies together stay within
    `max_bytes` (SQS limits a batch's total as it limits one message; packed messages come
    close to it)."""
    chunks: list[list[OutgoingMessage]] = []
    size = 0
    for m in messages:
        n = len(m.body.encode())
        if not chunks or len(chunks[-1]) >= _BATCH or size + n > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(m)
        size += n
    return chunks


def _entry(key: str, m: OutgoingMessage) -> dict[str, Any]:
    return {"Id": key, "MessageBody": m.body}
