"""One job filter (jobs_schema.JobFilter): the SDK's keyword arguments and query strings, the
`jobs` command's options and the store's filter all come from it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_type_hints
from uuid import uuid4

import pytest
import typer.main

from jobs_schema import BulkAction, JobFilter, JobSelection, JobStatus
from jobs_sdk import JobFilters, SelectionFilters, ValidationFailed, _http, _selection
from jobs_sdk.cli import app
from jobs_server.auth import Principal, Role
from jobs_server.service import scoped
from jobs_server.store.base import JobFilter as StoreFilter

FIELDS = set(JobFilter.model_fields)
AT = datetime(2026, 5, 1, 12, tzinfo=UTC)


def test_the_sdk_keywords_are_the_models_fields():
    assert set(get_type_hints(JobFilters)) == FIELDS
    assert set(get_type_hints(SelectionFilters)) == set(JobSelection.model_fields)


def test_a_listing_query_is_built_from_the_model():
    call = _http.list_call({"status": "dead", "created_after": AT}, cursor="c1", limit=20)
    assert call.params == {
        "status": "dead",
        "created_after": AT.isoformat(),
        "cursor": "c1",
        "limit": "20",
    }


@pytest.mark.parametrize(
    "filters",
    [
        {"created_after": datetime(2026, 5, 1)},  # no zone
        {"use_case": ""},
        {"tenant": "x" * 201},
        {"status": "finished"},
    ],
)
def test_a_filter_out_of_the_documented_ranges_is_refused_before_sending(filters):
    with pytest.raises(ValidationFailed):
        _http.list_call(filters, cursor=None, limit=50)
    with pytest.raises(ValidationFailed):
        _selection.count_call(filters, None)


def test_a_page_over_the_limit_is_refused():
    with pytest.raises(ValidationFailed):
        _http.list_call({}, cursor=None, limit=501)


def test_a_count_query_carries_the_action():
    call = _selection.count_call({"job_type": "t"}, BulkAction.RETRY)
    assert call.params == {"job_type": "t", "action": "retry"}


def test_a_time_given_as_text_is_parsed_by_the_model():
    flt = _http.job_filter({"created_before": "2026-05-01T12:00:00Z"})
    assert flt.created_before == AT


@pytest.mark.parametrize("command", ["list", "count", "cancel", "retry"])
def test_the_commands_filter_options_are_the_models_fields(command):
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    names = {p.name for p in click_command.params}
    assert names >= FIELDS
    helps = {p.name: p.help for p in click_command.params if p.name in FIELDS}
    assert helps == {name: field.description for name, field in JobFilter.model_fields.items()}


def test_the_store_filter_keeps_the_models_field_names():
    flt = JobFilter(status=JobStatus.DEAD, use_case="u", dedup_key="k", created_after=AT)
    stored = StoreFilter.of(flt, limit=10)
    assert {name: getattr(stored, name) for name in FIELDS} == flt.model_dump()
    assert stored.limit == 10


def test_a_tenant_scope_narrows_and_another_tenant_matches_nothing():
    tenant = Principal(Role.TENANT, "acme")
    admin = Principal(Role.ADMIN, None)
    selection = JobSelection(use_case="u", max_id=uuid4())
    mine = scoped(tenant, selection)
    assert mine is not None and (mine.tenant, mine.max_id) == ("acme", selection.max_id)
    assert isinstance(mine, JobSelection)  # the caller's model, narrowed
    assert scoped(tenant, JobFilter(tenant="globex")) is None
    assert scoped(tenant, JobFilter(tenant="acme")) == JobFilter(tenant="acme")
    assert scoped(admin, JobFilter(tenant="globex")) == JobFilter(tenant="globex")
    assert scoped(admin, JobFilter()) == JobFilter()
