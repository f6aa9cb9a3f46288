"""What one SQS call costs through aiobotocore, and what the SQS hop adds to pickup latency:
the floor under bench/e2e.py's latency phase, which makes one send, one receive and a share of
a delete per message when jobs arrive one at a time.

    infra/localstack/start.sh            # SQS on 127.0.0.1:4566
    uv run python bench/sqs_call.py      # JOBS_BENCH_SQS_ENDPOINT_URL; --calls, --hops, --runs

Per run, on one queue of its own: `--calls` SendMessage calls one after another, then as many
ReceiveMessage calls (WaitTimeSeconds 0), timing this process's CPU (the client's side of a
call: building, signing, sending, parsing) and the wall time; then `--hops` times a long-poll
receive already waiting while a message is sent, timing send -> received. Median of the runs,
with min and max, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from aiobotocore.session import get_session

from _common import SQS_URL, load_average, summary


async def one_run(calls: int, hops: int) -> dict[str, float]:
    session = get_session()
    async with (
        session.create_client("sqs", region_name="us-east-1", endpoint_url=SQS_URL) as client,
        session.create_client("sqs", region_name="us-east-1", endpoint_url=SQS_URL) as receiver,
    ):
        url = (await client.create_queue(QueueName=f"bench-call-{uuid.uuid4().hex[:6]}"))[
            "QueueUrl"
        ]
        try:
            for _ in range(20):  # connections open, first-call costs paid
                await client.send_message(QueueUrl=url, MessageBody="warm")
            await client.purge_queue(QueueUrl=url)
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(calls):
                await client.send_message(QueueUrl=url, MessageBody="x" * 200)
            send_cpu = (time.process_time() - cpu) / calls
            send_wall = (time.perf_counter() - wall) / calls
            cpu = time.process_time()
            for _ in range(calls):
                await client.receive_message(QueueUrl=url, MaxNumberOfMessages=1)
            receive_cpu = (time.process_time() - cpu) / calls
            await client.purge_queue(QueueUrl=url)
            waits: list[float] = []
            for _ in range(hops):
                waiting = asyncio.create_task(
                    receiver.receive_message(
                        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5
                    )
                )
                await asyncio.sleep(0.05)  # the receive is in flight, as a worker's is
                sent = time.perf_counter()
                await client.send_message(QueueUrl=url, MessageBody="hop")
                got = await waiting
                waits.append(time.perf_counter() - sent)
                for m in got.get("Messages", []):
                    await receiver.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        finally:
            await client.delete_queue(QueueUrl=url)
    return {
        "send_cpu": 1000 * send_cpu,
        "send_wall": 1000 * send_wall,
        "receive_cpu": 1000 * receive_cpu,
        "hop_p50": 1000 * statistics.median(waits),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--hops", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(load_average(), "(before)")
    runs = [await one_run(args.calls, args.hops) for _ in range(args.runs)]
    labels = {
        "send_cpu": "SendMessage, this process's CPU per call, ms",
        "send_wall": "SendMessage, wall per call (no receive waiting), ms",
        "receive_cpu": "ReceiveMessage, this process's CPU per call, ms",
        "hop_p50": "send -> a waiting long-poll receive returns, p50, ms",
    }
    print(f"{SQS_URL}, {args.runs} runs of {args.calls} calls and {args.hops} hops:")
    for key, label in labels.items():
        print(f"  {label:<58} {summary([r[key] for r in runs])}")
    print(load_average(), "(after)")


if __name__ == "__main__":
    asyncio.run(main())
