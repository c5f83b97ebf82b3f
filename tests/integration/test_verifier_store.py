"""The core verifier's KPI store on real PostgreSQL, as the verifier's own role: a window's counts per version come
with their segments (tenants), which the stratified test of a rate with `detect` compares tenant by tenant."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from releasegate_runtime import db
from services.verifier.adapters.store import KpiStore

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


@pytest.fixture
async def store(settings, pool):  # `pool` applied the schema and grants; it cleans up, the verifier may not
    environment = f"it-{uuid.uuid4().hex[:10]}"
    verifier = await db.create_pool(settings.for_principal("verifier").database_url, max_size=2)
    try:
        yield KpiStore(verifier), environment
    finally:
        await verifier.close()
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM business_events WHERE environment = $1", environment)


def events(environment: str, version: str, tenant: str, succeeded: int, failed: int, at: datetime) -> list[tuple]:
    return [
        (uuid.uuid4().hex, "shop.checkout.succeeded.v1", environment, version, tenant, at, None, 40.0 + i)
        for i in range(succeeded)
    ] + [
        (uuid.uuid4().hex, "shop.checkout.failed.v1", environment, version, tenant, at, "card declined", None)
        for _ in range(failed)
    ]


async def test_a_windows_counts_carry_each_tenants_checkouts(store):
    kpis, env = store
    await kpis.add_business_events(
        events(env, "v2", "acme", 18, 2, NOW)
        + events(env, "v2", "globex", 5, 0, NOW)
        + events(env, "v1", "acme", 40, 1, NOW)
        + events(env, "v2", "acme", 7, 7, NOW - timedelta(minutes=5))  # before the window
    )
    start, end = NOW - timedelta(seconds=30), NOW + timedelta(seconds=1)
    c = await kpis.counts(env, "v2", start, end)
    assert (c.checkout_succeeded, c.checkout_failed) == (23, 2)
    assert c.checkout_segments == {"acme": (18, 20), "globex": (5, 5)}
    assert sorted(c.checkout_latencies_ms)[:2] == [40.0, 40.0] and len(c.checkout_latencies_ms) == 23
    assert (await kpis.counts(env, "v1", start, end)).checkout_segments == {"acme": (40, 41)}
    only = await kpis.counts(env, "v2", start, end, ["globex"])  # a tenant-phased candidate's own tenants
    assert only.checkout_segments == {"globex": (5, 5)} and only.checkout_succeeded == 5
    assert (await kpis.counts(env, "v9", start, end)).checkout_segments == {}
