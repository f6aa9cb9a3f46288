"""The lease credential's format, defined once in jobs-schema for the worker and the server."""

from __future__ import annotations

import uuid

import pytest

from jobs_schema import LeaseRef


def test_a_credential_names_its_lease_and_reads_back():
    lease = LeaseRef(job_id=uuid.uuid4(), attempt=3, lease_token=uuid.uuid4())
    credential = lease.credential()
    assert credential == f"lease.{lease.job_id}.3.{lease.lease_token}"
    assert LeaseRef.from_credential(credential) == lease


# fixed ids: parametrized ids must be the same in every collecting process
_JOB = uuid.UUID("0b9d7a5e-3f0c-4d2a-9a61-4a8f3c2e1d10")
_TOKEN = uuid.UUID("6f1e2d3c-4b5a-4978-8a9b-0c1d2e3f4a5b")


@pytest.mark.parametrize(
    "credential",
    [
        "lease.",
        "lease.a.b",
        f"lease.{_JOB}.x.{_TOKEN}",
        f"lease.{_JOB}.0.{_TOKEN}",
        f"lease.{_JOB}.-1.{_TOKEN}",
        f"lease.{_JOB}.{10**30}.{_TOKEN}",
        f"lease.{_JOB}.1001.{_TOKEN}",
        f"lease.{_JOB}.\u00b2.{_TOKEN}",
        f"lease.not-a-uuid.1.{_JOB}",
        f"tok.{_JOB}.1.{_TOKEN}",
        f"lease.{_JOB}.1.{_TOKEN}.extra",
    ],
)
def test_anything_else_is_refused(credential: str):
    with pytest.raises(ValueError):
        LeaseRef.from_credential(credential)
