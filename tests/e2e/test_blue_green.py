"""Blue-green end to end (catalog variant `examples/catalog-blue-green`): green is verified by synthetic
journeys on a preview before customers see it, traffic switches at once, blue stays warm, then retires."""

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
    served,
    tenants_and_insider,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def catalog_env():
    return {"RG_CATALOG_DIR": str(REPO / "examples" / "catalog-blue-green")}


class TestBlueGreen:
    async def test_bad_green_fails_its_preview_and_no_customer_request_ever_reaches_it(self, pool, stable_v1, canary):
        customers = [Client(t, tenant=t) for t in PRODUCTION_TENANTS]
        rid, timeline, sampled = await release_sampled("v3", customers, promoted=False, approvers=("alice", "bob"))
        failed = next(t for t in timeline if t["step"] == "verify-preview" and "failed" in t["reason"])
        # positive control: green was up and answering, on its preview (its journeys were refused as invalid_card)
        assert "invalid_card" in failed["reason"]
        assert not any(t["step"] == "switch" for t in timeline)
        # and HAProxy's log and our probes did record customers in the same window: all on blue
        assert await served(pool, "v1", rid) > 0
        assert all(sampled.seen[who.name]["v1"] > 0 for who in customers), sampled.seen
        assert await served(pool, "v3", rid) == 0
        assert not any(sampled.seen[who.name]["v3"] for who in customers), sampled.seen
        await assert_back_on_stable("v1", timeline, canary)

    async def test_good_green_takes_all_traffic_at_once_and_blue_retires_after_the_warm_period(
        self, pool, stable_v1, canary
    ):
        rid, timeline = release("v2", promoted=True)
        switch = next(t for t in timeline if t["step"] == "switch" and t["reason"].startswith("switch done"))
        assert switch["evidence"]["observed"]["weights"] == {"v1": 0, "v2": 100}
        steps = list(dict.fromkeys(t["step"] for t in timeline if t["step"]))
        assert steps.index("verify-preview") < steps.index("switch") < steps.index("keep-blue-warm")
        assert any(t["step"] == "verify-preview" and " passed: " in t["reason"] for t in timeline)
        await assert_only("v2", tenants_and_insider(PRODUCTION_TENANTS, canary))
