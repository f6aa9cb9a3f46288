"""The testing kit's webhooks: the same methods and signatures as the real clients', and the
server's rules for a tenant token (validation, the per-tenant limit, not found)."""

from __future__ import annotations

import inspect
from typing import Any
from uuid import uuid4

import pytest

from jobs_schema.webhooks import MAX_WEBHOOKS_PER_TENANT
from jobs_sdk.errors import Conflict, NotFound, ValidationFailed
from jobs_sdk.testing import FakeJobsClient, FakeSyncJobsClient, FakeSyncWebhooks, FakeWebhooks
from jobs_sdk.webhooks import SyncWebhooks, Webhooks


@pytest.mark.parametrize(
    ("real", "fake"),
    [(Webhooks, FakeWebhooks), (SyncWebhooks, FakeSyncWebhooks)],
    ids=["async", "sync"],
)
def test_the_fakes_have_the_real_clients_methods(real: type, fake: type) -> None:
    def methods(cls: type) -> dict[str, Any]:
        return {n: f for n, f in vars(cls).items() if callable(f) and not n.startswith("_")}

    assert methods(fake).keys() == methods(real).keys()
    for name, method in methods(real).items():
        ours = methods(fake)[name]
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(method), name
        theirs = inspect.signature(method).parameters
        assert list(inspect.signature(ours).parameters.values()) == list(theirs.values()), name


async def test_subscriptions_of_the_fakes_tenant() -> None:
    jobs = FakeJobsClient(tenant="acme")
    made = await jobs.webhooks.create("https://example.com/h", ["dead", "succeeded", "dead"])
    assert made.tenant == "acme" and made.secret.startswith("whsec_")
    assert [t.value for t in made.event_types] == ["dead", "succeeded"]
    assert [h.id for h in await jobs.webhooks.list()] == [made.id]
    assert (await jobs.webhooks.pause(made.id)).paused
    assert not (await jobs.webhooks.resume(made.id)).paused
    assert (await jobs.webhooks.deliveries(made.id)).items == []
    await jobs.webhooks.delete(made.id)
    with pytest.raises(NotFound):
        await jobs.webhooks.get(made.id)
    with pytest.raises(NotFound):
        await jobs.webhooks.delete(uuid4())


def test_the_fake_refuses_what_the_server_refuses() -> None:
    jobs = FakeSyncJobsClient(tenant="acme")
    with pytest.raises(ValidationFailed, match="http or https"):
        jobs.webhooks.create("ftp://example.com/", ["dead"])
    with pytest.raises(ValidationFailed):
        jobs.webhooks.create("https://example.com/", ["exploded"])
    for n in range(MAX_WEBHOOKS_PER_TENANT):
        jobs.webhooks.create(f"https://example.com/{n}", ["dead"])
    with pytest.raises(Conflict, match="the most it may"):
        jobs.webhooks.create("https://example.com/last", ["dead"])
