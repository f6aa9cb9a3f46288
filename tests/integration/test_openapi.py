"""The OpenAPI document: committed, stable operation ids, bearer auth declared, documented
errors; and the docs pages work with no internet (assets served by the server itself)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from jobs_server.app import openapi_schema

REGENERATE = "uv run jobs-server openapi > docs/openapi.json"
OPERATIONS = {
    "enqueue_job",
    "enqueue_batch",
    "get_job",
    "list_jobs",
    "cancel_job",
    "retry_job",
    "count_jobs",
    "cancel_jobs",
    "retry_jobs",
    "list_rate_keys",
    "get_forecast",
    "report_outcomes",
    "send_heartbeats",
    "release_leases",
    "poll_cancellations",
    "get_job_payload",
    "list_pauses",
    "pause_queue",
    "resume_queue",
    "healthz",
    "readyz",
    "metrics",
    "create_schedule",
    "list_schedules",
    "get_schedule",
    "pause_schedule",
    "resume_schedule",
    "delete_schedule",
    "create_webhook",
    "list_webhooks",
    "get_webhook",
    "list_webhook_deliveries",
    "pause_webhook",
    "resume_webhook",
    "delete_webhook",
    "get_webhook_target",
    "get_job_parents",
    "get_job_graph",
    "get_worker_job_parents",
    "create_batch",
    "add_to_batch",
    "get_batch",
    "stream_job_events",
    "stream_events",
}
UNAUTHENTICATED = {"healthz", "readyz", "metrics"}


def _operations(spec: dict[str, object]) -> dict[str, dict[str, object]]:
    paths = spec["paths"]
    assert isinstance(paths, dict)
    return {op["operationId"]: op for item in paths.values() for op in item.values()}


def test_committed_spec_is_current(repo_root: Path):
    committed = json.loads((repo_root / "docs" / "openapi.json").read_text())
    assert committed == openapi_schema(), f"docs/openapi.json is stale: run `{REGENERATE}`"


def test_operation_ids_tags_and_bearer_auth():
    spec = openapi_schema()
    operations = _operations(spec)
    assert set(operations) == OPERATIONS
    assert spec["components"]["securitySchemes"]["bearer"] == {  # type: ignore[index]
        "type": "http",
        "scheme": "bearer",
        "description": "A tenant token, the admin (or read-only admin) token, or the worker token.",
    }
    for name, op in operations.items():
        assert op["tags"], name
        if name not in UNAUTHENTICATED:
            assert op["security"] == [{"bearer": []}], name
            assert {"401", "403", "422", "503"} <= set(op["responses"]), name  # type: ignore[arg-type]


def test_errors_are_documented_with_the_envelope():
    operations = _operations(openapi_schema())
    enqueue = operations["enqueue_job"]["responses"]
    assert isinstance(enqueue, dict)
    assert {"200", "201", "400", "409", "413", "422", "429", "503"} <= set(enqueue)
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    assert enqueue["429"]["content"]["application/json"]["schema"] == envelope
    assert "404" in operations["get_job"]["responses"]  # type: ignore[operator]
    assert "413" not in operations["get_job"]["responses"]  # type: ignore[operator]


async def test_docs_pages_need_no_internet(live_server):
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as c:
        for page in ("/docs", "/redoc"):
            html = (await c.get(page)).text
            urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", html)
            assert urls, page
            assert not [u for u in urls if not u.startswith("/")], (page, urls)
            assert "//cdn" not in html and "https://" not in html, page
            for url in urls:
                assert (await c.get(url)).status_code == 200, url
        spec = (await c.get("/openapi.json")).json()
        assert spec == openapi_schema()


def test_the_document_states_the_rules_the_server_checks():
    """What schemathesis (test_fuzz.py) generates as valid must be valid: rules the models check
    beyond types are stated in the document too."""
    schemas = openapi_schema()["components"]["schemas"]
    enqueue = schemas["EnqueueRequest"]
    assert enqueue["allOf"] == [
        {"not": {"required": ["deadline", "delay_tolerance_seconds"]}},
        {"not": {"required": ["dedup_key", "unique"]}},
        {
            "if": {"required": ["on_parent_failure"]},
            "then": {"required": ["depends_on"], "properties": {"depends_on": {"type": "array"}}},
        },
        {"not": {"required": ["depends_on", "dedup_key"]}},
        {"not": {"required": ["depends_on", "unique"]}},
        {
            "not": {
                "properties": {"miss_policy": {"const": "run_late"}},
                "required": ["miss_policy", "expire_grace_seconds"],
            }
        },
    ]
    grace = enqueue["properties"]["expire_grace_seconds"]["anyOf"][0]
    assert (grace["minimum"], grace["maximum"]) == (0, 30 * 86_400)
    assert schemas["MissPolicy"]["enum"] == ["run_late", "expire"]
    assert "expired" in schemas["JobStatus"]["enum"]
    period, states = schemas["UniqueRule"]["allOf"]
    assert period["then"]["required"] == ["seconds"]
    assert states["then"]["properties"]["states"]["uniqueItems"] is True
    run_at = enqueue["properties"]["run_at"]["anyOf"][0]
    assert run_at["format"] == "date-time" and run_at["pattern"].startswith("^(197[1-9]")
    assert enqueue["properties"]["job_type"]["pattern"] == "^[^\\u0000]*$"
    assert enqueue["properties"]["max_attempts"]["anyOf"][0]["maximum"] == 1000
    report = schemas["OutcomeReport"]
    assert report["if"] == {"properties": {"outcome": {"const": "failed"}}, "required": ["outcome"]}
    assert report["properties"]["attempt"]["maximum"] == 2**31 - 1


def test_every_bound_reaches_the_document_as_json_schema():
    """A pydantic bound put outside an `X | None` lands as `ge`/`le`, which JSON Schema
    ignores: the document would then allow what the server refuses."""
    text = json.dumps(openapi_schema())
    for keyword in ("ge", "gt", "le", "lt"):
        assert f'"{keyword}":' not in text, keyword
