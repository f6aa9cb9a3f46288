"""What one SQS call costs through aiobotocore, and what the SQS hop adds to pickup latency:
the floor under bench/e2e.py's latency phase, which makes one send, one receive and a share of
a delete per message when jobs arrive one at a time.

    infra/localstack/start.sh            # SQS on 127.0.0.1:4566
    uv run python bench/sqs_call.py      # JOBS_BENCH_SQS_ENDPOINT_URL; --calls, --hops, --runs

Per run, for each of two clients, botocore's defaults and ours (the server's `sqs_client`, as
the scheduler and the worker configure it), on a queue of its own: `--calls` SendMessage
calls one after another, then as many SendMessageBatch calls of 10 and ReceiveMessage calls
(WaitTimeSeconds 0), timing this process's CPU (the client's side of a call: building,
signing, sending, parsing) and the wall time. Then, with ours, `--hops` times a long-poll
receive already waiting while a message is sent, timing send -> received, for each of
`--waits` (how long the receive has waited by then: at a low rate a worker's receive has
waited long, at a high one a message is usually there already). Median of the
runs, with min and max, ours / defaults per run, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiobotocore.session import get_session

from _common import SQS_URL, load_average, summary
from jobs_server.publisher.sqs import sqs_client

REGION = "us-east-1"


@asynccontextmanager
async def default_client() -> AsyncIterator[Any]:
    async with get_session().create_client(
        "sqs", region_name=REGION, endpoint_url=SQS_URL
    ) as client:
        yield client


@asynccontextmanager
async def our_client() -> AsyncIterator[Any]:
    async with sqs_client(region=REGION, endpoint_url=SQS_URL) as client:
        yield client


async def calls_cost(client: Any, calls: int) -> dict[str, float]:
    """Per-call CPU (ms) of this process for send, send batch and receive, and send's wall."""
    url = (await client.create_queue(QueueName=f"bench-call-{uuid.uuid4().hex[:6]}"))["QueueUrl"]
    entries = [{"Id": str(i), "MessageBody": "x" * 200} for i in range(10)]
    try:
        for _ in range(20):  # connections open, first-call costs paid
            await client.send_message(QueueUrl=url, MessageBody="warm")
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(calls):
            await client.send_message(QueueUrl=url, MessageBody="x" * 200)
        send_cpu = (time.process_time() - cpu) / calls
        send_wall = (time.perf_counter() - wall) / calls
        cpu = time.process_time()
        for _ in range(calls):
            await client.send_message_batch(QueueUrl=url, Entries=entries)
        batch_cpu = (time.process_time() - cpu) / calls
        cpu = time.process_time()
        for _ in range(calls):
            await client.receive_message(QueueUrl=url, MaxNumberOfMessages=1)
        receive_cpu = (time.process_time() - cpu) / calls
    finally:
        await client.delete_queue(QueueUrl=url)
    return {
        "send_cpu": 1000 * send_cpu,
        "batch_cpu": 1000 * batch_cpu,
        "receive_cpu": 1000 * receive_cpu,
        "send_wall": 1000 * send_wall,
    }


async def hop(client: Any, receiver: Any, hops: int, waited: float) -> float:
    """p50 ms from a send to the return of a long-poll receive that has waited `waited` s."""
    url = (await client.create_queue(QueueName=f"bench-hop-{uuid.uuid4().hex[:6]}"))["QueueUrl"]
    waits: list[float] = []
    try:
        for _ in range(hops):
            waiting = asyncio.create_task(
                receiver.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5)
            )
            await asyncio.sleep(waited)  # the receive is in flight, as a worker's is
            sent = time.perf_counter()
            await client.send_message(QueueUrl=url, MessageBody="hop")
            got = await waiting
            waits.append(time.perf_counter() - sent)
            for m in got.get("Messages", []):
                await receiver.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    finally:
        await client.delete_queue(QueueUrl=url)
    return 1000 * statistics.median(waits)


async def one_run(calls: int, hops: int, waits: list[float]) -> dict[str, float]:
    async with default_client() as client:
        defaults = await calls_cost(client, calls)
    async with our_client() as client, our_client() as receiver:
        ours = await calls_cost(client, calls)
        for waited in waits:
            # fewer hops after the longer waits: each takes as long as its wait
            n = hops if waited <= 0.05 else max(5, hops // 6)
            ours[f"hop_p50_{waited}"] = await hop(client, receiver, n, waited)
    return {f"default_{k}": v for k, v in defaults.items()} | {
        f"ours_{k}": v for k, v in ours.items()
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--hops", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--waits",
        type=float,
        nargs="+",
        default=[0.0, 0.05, 0.2, 1.0],
        help="how long the receive has waited when the message is sent, s",
    )
    args = parser.parse_args()
    print(load_average(), "(before)")
    runs = [await one_run(args.calls, args.hops, args.waits) for _ in range(args.runs)]
    labels = {
        "send_cpu": "SendMessage, this process's CPU per call, ms",
        "batch_cpu": "SendMessageBatch of 10, CPU per call, ms",
        "receive_cpu": "ReceiveMessage, CPU per call, ms",
        "send_wall": "SendMessage, wall per call (no receive waiting), ms",
    }
    print(f"{SQS_URL}, {args.runs} runs of {args.calls} calls of each kind and {args.hops} hops:")
    for key, label in labels.items():
        for who in ("default", "ours"):
            print(f"  {label} ({who}):".ljust(72), summary([r[f"{who}_{key}"] for r in runs]))
        ratios = [r[f"ours_{key}"] / r[f"default_{key}"] for r in runs]
        print(f"  {label}, ours / defaults, same run:".ljust(72), summary(ratios))
    for waited in args.waits:
        label = f"  send -> a long-poll receive waiting {waited:g} s returns, p50, ms:"
        print(label.ljust(72), summary([r[f"ours_hop_p50_{waited}"] for r in runs]))
    print(load_average(), "(after)")


if __name__ == "__main__":
    asyncio.run(main())
