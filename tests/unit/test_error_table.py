"""One table answers domain errors, for the API's envelope and the dashboard's error page."""

from __future__ import annotations

import json
import logging

import pytest

from jobs_schema import ErrorCode
from jobs_server import errors
from jobs_server.api.errors import entry_for, response_for
from jobs_server.dashboard.routes import _refusal

CASES = [
    (errors.JobConflict("job is running", status="running"), 409),
    (errors.QuotaExceeded("acme", 10), 429),
    (errors.StoreUnavailable("connection refused"), 503),
    (errors.ConfigError("unmapped on purpose"), 500),
]


@pytest.mark.parametrize(("exc", "status"), CASES)
def test_the_api_and_the_dashboard_answer_from_the_same_entry(exc, status):
    entry = entry_for(exc)
    api, page = response_for(exc), _refusal(exc)
    assert entry.status == api.status_code == page.status == status
    assert api.headers.get("Retry-After") == page.retry_after == entry.retry_after
    assert json.loads(api.body)["error"]["code"] == entry.code.value


def test_the_page_says_its_own_words_where_the_entry_has_them():
    down = errors.StoreUnavailable("connection refused")
    assert "cannot be reached" in _refusal(down).message
    conflict = errors.JobConflict("job is running")
    assert _refusal(conflict).message == "job is running"


def test_an_unmapped_error_hides_its_message_and_is_logged(caplog):
    with caplog.at_level(logging.ERROR, logger="jobs_server.api.errors"):
        body = json.loads(response_for(errors.ConfigError("secret detail")).body)
    assert body["error"] == {
        "code": ErrorCode.INTERNAL.value,
        "message": "internal error",
        "details": {},
    }
    assert "secret detail" not in _refusal(errors.ConfigError("secret detail")).message
    assert any(r.message == "unmapped domain error" for r in caplog.records)
