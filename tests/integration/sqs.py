"""Test-side SQS access through aiobotocore, as a worker would have it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from jobs_schema import JobMessage, jobs_in_body
from jobs_server.publisher.sqs import sqs_client


class SqsProbe:
    def __init__(self, client: Any) -> None:
        self.client = client

    async def url(self, queue: str) -> str:
        return str((await self.client.get_queue_url(QueueName=queue))["QueueUrl"])

    async def receive(
        self, queue: str, *, max_messages: int = 10, wait: int = 0
    ) -> list[dict[str, Any]]:
        resp = await self.client.receive_message(
            QueueUrl=await self.url(queue),
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait,
            VisibilityTimeout=300,
        )
        return list(resp.get("Messages", []))

    async def drain(self, queue: str, *, delete: bool = True) -> list[JobMessage]:
        """Every message now in the queue, in receive order."""
        out: list[JobMessage] = []
        url = await self.url(queue)
        while True:
            msgs = await self.receive(queue)
            if not msgs:
                return out
            out += [job for m in msgs for job in jobs_in_body(m["Body"])]
            if delete:
                await self.client.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(msgs)
                    ],
                )


@asynccontextmanager
async def sqs_probe(endpoint: str) -> AsyncIterator[SqsProbe]:
    async with sqs_client(region="us-east-1", endpoint_url=endpoint) as client:
        yield SqsProbe(client)
