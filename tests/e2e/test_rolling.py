"""Rolling update end to end (catalog variant `examples/catalog-rolling`: 3 instances, 1 per batch): both
versions serve while the roll goes on; a bad version's rollback replaces its instances with stable ones until
only stable serves again."""

from __future__ import annotations

import pytest

from tests.conftest import REPO
from tests.e2e.conftest import (
    PRODUCTION_TENANTS,
    Client,
    assert_back_on_stable,
    assert_only,
    release,
    release_sampled,
    tenants_and_insider,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def catalog_env():
    return {"RG_CATALOG_DIR": str(REPO / "examples" / "catalog-rolling")}


async def serving(pool, version: str) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval(
            "SELECT count(*) FROM instances WHERE environment = 'production' AND version = $1 AND state = 'serving'",
            version,
        )


class TestRolling:
    async def test_bad_version_rollback_converges_to_all_stable_instances(self, pool, stable_v1, canary):
        assert await serving(pool, "v1") == 3
        customers = [Client(t, tenant=t) for t in PRODUCTION_TENANTS]
        rid, timeline, sampled = await release_sampled("v3", customers, promoted=False, approvers=("alice", "bob"))
        assert any(t["step"] == "verify-roll-1" and "failed" in t["reason"] for t in timeline)
        assert any(t["actor"] == "deployer" and "compensate:production done" in t["reason"] for t in timeline)
        assert (await serving(pool, "v1"), await serving(pool, "v3")) == (3, 0)
        # positive control: while one of three instances ran v3, our customers' probes did reach it
        assert sum(sampled.seen[who.name]["v3"] for who in customers) > 0, sampled.seen
        await assert_back_on_stable("v1", timeline, canary)

    async def test_good_version_rolls_batch_by_batch_with_both_versions_serving_meanwhile(
        self, pool, stable_v1, canary
    ):
        rid, timeline = release("v2", promoted=True)
        first = next(t for t in timeline if t["step"] == "roll-1" and t["reason"].startswith("roll-1 done"))
        assert first["evidence"]["observed"]["weights"] == {"v1": 67, "v2": 33}
        assert any(t["step"] == "verify-roll-1" and " passed: " in t["reason"] for t in timeline)
        assert (await serving(pool, "v2"), await serving(pool, "v1")) == (3, 0)
        await assert_only("v2", tenants_and_insider(PRODUCTION_TENANTS, canary))
