"""What the API tests send: tokens as headers, and a valid job body to vary."""

from __future__ import annotations

ACME = {"Authorization": "Bearer tok-acme"}
GLOBEX = {"Authorization": "Bearer tok-globex"}
TINY = {"Authorization": "Bearer tok-tiny"}
ADMIN = {"Authorization": "Bearer tok-admin"}
READONLY = {"Authorization": "Bearer tok-readonly"}
WORKER = {"Authorization": "Bearer tok-worker"}


def job(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "use_case": "notifications",
        "job_type": "notifications.send_email",
        "payload": {"to": "a@example.com"},
    }
    body.update(overrides)
    return body
