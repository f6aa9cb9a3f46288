"""Smoke test and rough send throughput against an SQS endpoint (LocalStack by default).

Run from the workspace (it uses the workspace's aiobotocore):

    cd /work/main && uv run python infra/localstack/check_sqs.py [--seconds 5] [--inflight 8]

It creates a queue, sends a batch of 10, receives 10 and deletes them in a batch, then
runs SendMessageBatch (10 messages per call, --inflight calls at once) for --seconds and
prints messages/s. The queue is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

from aiobotocore.session import get_session


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("AWS_ENDPOINT_URL_SQS")
        or os.environ.get("AWS_ENDPOINT_URL")
        or "http://127.0.0.1:4566",
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--inflight", type=int, default=8)
    args = parser.parse_args()

    session = get_session()
    async with session.create_client(
        "sqs",
        endpoint_url=args.endpoint,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    ) as sqs:
        name = f"localstack-check-{uuid.uuid4().hex[:8]}"
        url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
        print(f"created {url}")
        try:
            entries = [{"Id": str(i), "MessageBody": f"m{i}"} for i in range(10)]
            sent = await sqs.send_message_batch(QueueUrl=url, Entries=entries)
            assert len(sent.get("Successful", [])) == 10, sent
            print("SendMessageBatch: 10 ok")

            got: list[dict] = []
            deadline = time.monotonic() + 10
            while len(got) < 10 and time.monotonic() < deadline:
                r = await sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10 - len(got), WaitTimeSeconds=1
                )
                got.extend(r.get("Messages", []))
            assert len(got) == 10, f"received {len(got)}"
            assert sorted(m["Body"] for m in got) == sorted(e["MessageBody"] for e in entries)
            print("ReceiveMessage: 10 ok")

            deleted = await sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
                ],
            )
            assert len(deleted.get("Successful", [])) == 10, deleted
            print("DeleteMessageBatch: 10 ok")

            count = 0
            stop_at = time.monotonic() + args.seconds

            async def sender() -> None:
                nonlocal count
                while time.monotonic() < stop_at:
                    r = await sqs.send_message_batch(QueueUrl=url, Entries=entries)
                    count += len(r.get("Successful", []))

            t0 = time.monotonic()
            await asyncio.gather(*(sender() for _ in range(args.inflight)))
            elapsed = time.monotonic() - t0
            print(
                f"throughput: {count} messages in {elapsed:.1f}s = {count / elapsed:,.0f} msg/s "
                f"(SendMessageBatch x10, {args.inflight} in flight)"
            )
        finally:
            await sqs.delete_queue(QueueUrl=url)


if __name__ == "__main__":
    asyncio.run(main())
