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


@pytest.mark.parametrize(
    "credential",
    [
        "lease.",
        "lease.a.b",
        f"lease.{uuid.uuid4()}.x.{uuid.uuid4()}",
        f"lease.{uuid.uuid4()}.0.{uuid.uuid4()}",
        f"lease.{uuid.uuid4()}.-1.{uuid.uuid4()}",
        f"lease.{uuid.uuid4()}.{10**30}.{uuid.uuid4()}",
        f"lease.{uuid.uuid4()}.1001.{uuid.uuid4()}",
        f"lease.{uuid.uuid4()}.\u00b2.{uuid.uuid4()}",
        f"lease.not-a-uuid.1.{uuid.uuid4()}",
        f"tok.{uuid.uuid4()}.1.{uuid.uuid4()}",
        f"lease.{uuid.uuid4()}.1.{uuid.uuid4()}.extra",
    ],
)
def test_anything_else_is_refused(credential: str):
    with pytest.raises(ValueError):
        LeaseRef.from_credential(credential)
