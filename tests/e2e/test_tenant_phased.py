"""Tenant-phased end to end (catalog variant `examples/catalog-tenant-phased`): tenants move to the candidate
wave by wave through HAProxy's tenant map; each wave is judged on its own tenants; a failure sends back only
the tenants already moved — the others never see the candidate."""

from __future__ import annotations

import pytest

from tests.conftest import REPO
from tests.e2e.conftest import (
    PRODUCTION_TENANTS,
    assert_back_on_stable,
    assert_only,
    release,
    release_sampled,
    served,
    tenants_and_insider,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def catalog_env():
    return {"RG_CATALOG_DIR": str(REPO / "examples" / "catalog-tenant-phased")}


class TestTenantPhased:
    async def test_bad_version_is_rolled_back_for_moved_tenants_and_the_others_never_saw_it(
        self, pool, stable_v1, canary
    ):
        clients = tenants_and_insider(PRODUCTION_TENANTS, canary)
        rid, timeline, sampled = await release_sampled("v3", clients, promoted=False, approvers=("alice", "bob"))
        failed = next(t for t in timeline if t["step"] == "verify-wave-internal" and "failed" in t["reason"])
        assert "payment_authorization_rate" in failed["reason"]
        assert any("tenants initech routed back" in t["reason"] for t in timeline if t["actor"] == "rollback")
        # positive controls, in the same window: the moved tenant and the insiders' cookie did reach v3, in HAProxy's
        # log (the shoppers' requests) and in our own probes
        assert await served(pool, "v3", rid, "initech") > 0
        assert sampled.seen["initech"]["v3"] > 0 and sampled.seen["canary-cookie"]["v3"] > 0, sampled.seen
        # the tenants not moved never did, by either account
        assert await served(pool, "v3", rid, "acme") == 0
        assert await served(pool, "v3", rid, "globex") == 0
        assert sampled.seen["acme"]["v3"] == sampled.seen["globex"]["v3"] == 0, sampled.seen
        assert await assert_back_on_stable("v1", timeline, canary) == {"initech"}

    async def test_good_version_moves_wave_by_wave_then_everyone(self, pool, stable_v1, canary):
        rid, timeline = release("v2", promoted=True)
        steps = list(dict.fromkeys(t["step"] for t in timeline if t["step"]))
        assert steps.index("verify-wave-internal") < steps.index("wave-pilot") < steps.index("wave-everyone")
        pilot = next(t for t in timeline if t["step"] == "wave-pilot" and t["reason"].startswith("wave-pilot done"))
        assert pilot["evidence"]["observed"]["tenants_on_candidate"] == ["acme", "initech"]
        await assert_only("v2", tenants_and_insider(PRODUCTION_TENANTS, canary))
