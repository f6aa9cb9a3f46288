"""The example job types, declared once for the producer (producer_app.py) and the worker
(handlers.py) alike. Importing this module needs jobs-sdk only, not the worker runtime."""

from __future__ import annotations

from pydantic import BaseModel, Field

from jobs_sdk import Task

__all__ = [
    "AnalyseConversation",
    "LabelMessage",
    "SendEmail",
    "SendPush",
    "analyse_conversation",
    "label_message",
    "send_email",
    "send_push",
]


class SendEmail(BaseModel):
    to: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    subject: str = Field(max_length=200)
    body: str = ""


class SendPush(BaseModel):
    device_token: str = Field(min_length=8)
    title: str
    body: str = ""


class LabelMessage(BaseModel):
    message_id: str
    text: str


class AnalyseConversation(BaseModel):
    conversation_id: str
    messages: list[str] = Field(min_length=1)
    label_each: bool = False  # also enqueue a messages.label job per message


send_email = Task("notifications", "notifications.send_email", SendEmail, delay_tolerance=30)
send_push = Task("notifications", "notifications.send_push", SendPush, delay_tolerance=10)
label_message = Task("message_labeling", "messages.label", LabelMessage)
analyse_conversation = Task(
    "message_labeling", "messages.analyse_conversation", AnalyseConversation, delay_tolerance=300
)
