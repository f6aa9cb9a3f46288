"""Consumers of job messages: `SqsConsumer` for SQS, `InMemoryConsumer` for tests."""

from jobs_worker.consumer.base import Consumer, ReceivedMessage
from jobs_worker.consumer.memory import InMemoryConsumer
from jobs_worker.consumer.sqs import SqsConsumer

__all__ = ["Consumer", "InMemoryConsumer", "ReceivedMessage", "SqsConsumer"]
