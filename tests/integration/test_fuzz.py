"""Property-based tests of the whole API from its own OpenAPI document (schemathesis), with a
tenant, the admin and the worker token, against jobs-server on a loopback port.

Every answer must be documented for its operation, match its documented schema, and never be
a server error; a request the document says is valid must not be refused as invalid. Bounded
and deterministic: derandomized Hypothesis, a few examples per operation."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from jobs_server.app import create_app, openapi_schema
from tests.conftest import ADMIN_TOKEN, USE_CASES, WORKER_TOKEN, free_port, make_settings

EXAMPLES = 10
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    positive_data_acceptance,
]
# A valid request may still be refused for what no schema can say: 400 is a rule on the values
# (a deadline already past, a cursor this server never gave), 401/403 the token, 404 the job,
# 409 its state, 429 the quota. 422, a value the document allows but the server does not, is
# the inconsistency this check exists to find.
ACCEPTED = ["2xx", "400", "401", "403", "404", "409", "429"]
USE_CASE = "notifications"
JOB_TYPE = USE_CASES[USE_CASE]["job_types"][0]

# The document /openapi.json serves (test_openapi checks they are the same), loaded at
# collection so that each operation is a test of its own.
schema = schemathesis.openapi.from_dict(
    openapi_schema(),
    config=schemathesis.config.SchemathesisConfig.from_dict(
        {
            # The API stores no NUL (U+0000) in any text, the payload's included, and says so;
            # a schema can say it of named strings only (their pattern), not of free JSON.
            "generation": {"allow-x00": False},
            "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
        }
    ),
)


@pytest.fixture(scope="module")
async def fuzz_database_url(pg_server_url: str, template_db: str) -> AsyncIterator[str]:
    from tests.conftest import with_database

    name = f"jobs_fuzz_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_server_url)
    await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    await conn.close()
    yield with_database(pg_server_url, name)
    conn = await asyncpg.connect(pg_server_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


@pytest.fixture(scope="module")
def fuzz_server(fuzz_database_url: str) -> Iterator[str]:
    """jobs-server in a thread of its own: schemathesis calls it synchronously."""
    port = free_port()
    app = create_app(make_settings(fuzz_database_url))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "jobs-server did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def _configured(case: Any) -> None:
    """What the document states in words only: a generated enqueue names a use case and job
    type this deployment configures, and a deadline no earlier than its run_at (JSON Schema
    cannot compare two fields), so `positive_data_acceptance` judges the rest of the body."""
    bodies = []
    if isinstance(case.path_parameters, dict) and "use_case" in case.path_parameters:
        case.path_parameters["use_case"] = USE_CASE  # a use case this deployment configures
    if case.operation.label == "POST /v1/jobs" and isinstance(case.body, dict):
        bodies = [case.body]
    elif case.operation.label == "POST /v1/jobs/batch" and isinstance(case.body, dict):
        bodies = [b for b in case.body.get("jobs") or [] if isinstance(b, dict)]
    elif case.operation.label in _BATCHES and isinstance(case.body, dict):
        bodies = [b for b in case.body.get("jobs") or [] if isinstance(b, dict)]
        if isinstance(case.body.get("callback"), dict):
            bodies.append(case.body["callback"])
    if case.operation.label in _PAUSES and isinstance(case.body, dict):
        _configured_scope(case.body)
    elif case.operation.label == "POST /v1/schedules" and isinstance(case.body, dict):
        bodies = [case.body]
    for body in bodies:
        if "use_case" in body:
            body["use_case"] = USE_CASE
        if "job_type" in body:
            body["job_type"] = JOB_TYPE
        _deadline_after_run_at(body)


_PAUSES = ("POST /v1/pauses", "POST /v1/pauses/resume")
_BATCHES = ("POST /v1/batches", "POST /v1/batches/{batch_id}/jobs")


def _configured_scope(body: dict[str, Any]) -> None:
    """A pause names a configured use case and tenant (the latter the tenant token's own)."""
    if isinstance(body.get("use_case"), str):
        body["use_case"] = USE_CASE
    if isinstance(body.get("tenant"), str):
        body["tenant"] = "acme"


def _deadline_after_run_at(body: dict[str, Any]) -> None:
    run_at, deadline = body.get("run_at"), body.get("deadline")
    if not (isinstance(run_at, str) and isinstance(deadline, str)):
        return
    try:
        if datetime.fromisoformat(deadline) < datetime.fromisoformat(run_at):
            body["run_at"], body["deadline"] = deadline, run_at
    except ValueError:
        return  # not a time: the server's answer is judged as it is


def _fuzz(token: str) -> Any:
    @schema.parametrize()
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def test(case: Any, fuzz_server: str) -> None:
        _configured(case)
        case.call_and_validate(
            base_url=fuzz_server,
            headers={"Authorization": f"Bearer {token}"},
            checks=CHECKS,
            timeout=30,
        )

    return test


test_as_a_tenant = _fuzz("tok-acme")
test_as_the_admin = _fuzz(ADMIN_TOKEN)
test_as_the_worker = _fuzz(WORKER_TOKEN)
