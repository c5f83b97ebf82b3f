"""Rolling update end to end (catalog variant `examples/catalog-rolling`: 3 instances, 1 per batch): both
versions serve while the roll goes on; a bad version's rollback replaces its instances with stable ones until
only stable serves again."""
from __future__ import annotations

import pytest

from releasegate_cli.probes import versions_served
from tests.conftest import REPO
from tests.e2e.conftest import PRODUCTION, release

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def catalog_env():
    return {"RG_CATALOG_DIR": str(REPO / "examples" / "catalog-rolling")}


async def serving(pool, version: str) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM instances WHERE environment = 'production'"
                                   " AND version = $1 AND state = 'serving'", version)


class TestRolling:
    async def test_bad_version_rollback_converges_to_all_stable_instances(self, pool, stable_v1):
        assert await serving(pool, "v1") == 3
        rid, timeline = release("v3", promoted=False, approvers=("alice", "bob"))
        assert any(t["step"] == "verify-roll-1" and "failed" in t["reason"] for t in timeline)
        assert any(t["actor"] == "deployer" and "compensate:production done" in t["reason"] for t in timeline)
        assert (await serving(pool, "v1"), await serving(pool, "v3")) == (3, 0)
        assert set(await versions_served(PRODUCTION, 40)) == {"v1"}

    async def test_good_version_rolls_batch_by_batch_with_both_versions_serving_meanwhile(self, pool, stable_v1):
        rid, timeline = release("v2", promoted=True)
        first = next(t for t in timeline if t["step"] == "roll-1" and t["reason"].startswith("roll-1 done"))
        assert first["evidence"]["observed"]["weights"] == {"v1": 67, "v2": 33}
        assert any(t["step"] == "verify-roll-1" and " passed: " in t["reason"] for t in timeline)
        assert (await serving(pool, "v2"), await serving(pool, "v1")) == (3, 0)
        assert set(await versions_served(PRODUCTION, 40)) == {"v2"}
