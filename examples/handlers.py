"""Example handlers for the job types of `jobs-server dev` (its dev_config.toml):

    notifications      notifications.send_email, notifications.send_push
    message_labeling   messages.label, messages.analyse_conversation

The job types and their payload models are declared once, in examples/tasks.py, which the
producer imports too. The work is fake and deterministic (a short sleep, a hash, keyword
matching) so the examples run anywhere. Run them with:

    jobs-worker run examples.handlers:registry --use-case notifications \
        --use-case message_labeling
"""

from __future__ import annotations

import asyncio
import hashlib
import re

from examples import tasks
from examples.tasks import AnalyseConversation, LabelMessage, SendEmail, SendPush

from jobs_worker import JobContext, PermanentFailure, Registry, Retry

__all__ = [
    "AnalyseConversation",
    "LabelMessage",
    "SendEmail",
    "SendPush",
    "registry",
]

registry = Registry()

_LABELS = {
    "billing": ("invoice", "refund", "payment", "charge"),
    "bug": ("error", "crash", "broken", "bug"),
    "praise": ("thanks", "great", "love"),
}


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


@registry.task(tasks.send_email)
async def send_email(payload: SendEmail, ctx: JobContext) -> dict[str, str]:
    await asyncio.sleep(0.05)  # stands in for the mail provider's API call
    if payload.to.endswith("@throttled.example"):
        # the provider asked us to slow down: try again in 5 s, not on the usual backoff
        raise Retry("mail provider throttled us", delay=5)
    # idempotent: the same job gets the same message id, so a retry does not send twice
    message_id = _digest(ctx.job_id, payload.to)
    ctx.logger.info("email sent", extra={"message_id": message_id})
    return {"message_id": message_id}


@registry.task(tasks.send_push)
async def send_push(payload: SendPush, ctx: JobContext) -> dict[str, str]:
    await asyncio.sleep(0.02)
    if payload.device_token.startswith("revoked"):
        raise PermanentFailure("the device token was revoked; retrying cannot help")
    return {"push_id": _digest(ctx.job_id, payload.device_token)}


@registry.task(tasks.label_message)
def label_message(payload: LabelMessage, ctx: JobContext) -> dict[str, object]:
    """A sync handler (CPU-bound work): it runs in the worker's thread pool."""
    words = set(re.findall(r"[a-z]+", payload.text.lower()))
    labels = sorted(label for label, keys in _LABELS.items() if words & set(keys))
    return {"message_id": payload.message_id, "labels": labels or ["other"]}


@registry.task(tasks.analyse_conversation)
async def analyse_conversation(payload: AnalyseConversation, ctx: JobContext) -> dict[str, object]:
    words = 0
    for i, text in enumerate(payload.messages):
        ctx.raise_if_cancelled()  # stop early when the job was cancelled
        await asyncio.sleep(0.01)
        words += len(text.split())
        if payload.label_each:
            await tasks.label_message.enqueue(
                ctx.jobs,
                LabelMessage(message_id=f"{payload.conversation_id}:{i}", text=text),
                dedup_key=f"label:{payload.conversation_id}:{i}",
            )
    return {
        "conversation_id": payload.conversation_id,
        "messages": len(payload.messages),
        "words": words,
    }
