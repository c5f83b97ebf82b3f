"""The load gate's load against real storefronts: the shop's bundles (v1, v2, and v12, which ranks every product
listing through one shared model session) as processes on a database of their own, the catalog's profile run by
Locust against each, the database sampled meanwhile, and the judgement on what was measured."""

from pathlib import Path

import pytest
import yaml

from contracts.peak import PeakReadiness
from releasegate_sdk import Verdict

from ..judge import judge
from ..load import run_profile

pytestmark = pytest.mark.integration
CATALOG = Path(__file__).resolve().parents[3] / "catalog" / "shop.yaml"


@pytest.fixture(scope="module")
def peak() -> PeakReadiness:
    """The shop catalog's own profile and SLOs."""
    return PeakReadiness.model_validate(yaml.safe_load(CATALOG.read_text())["peak_readiness"])


async def test_a_version_whose_listings_queue_behind_one_model_session_is_not_ready_for_peak(shop_settings, peak):
    database = shop_settings.shop.database
    v1 = await run_profile((await shop_settings.storefront("v1")).url, "v1", peak, database)
    v2 = await run_profile((await shop_settings.storefront("v2")).url, "v2", peak, database)
    v12 = await run_profile((await shop_settings.storefront("v12")).url, "v12", peak, database)

    passed = judge(v2, v1, peak, instances=1)
    assert passed.verdict is Verdict.PASS, passed.reason
    assert [s.multiple for s in v2.steps] == [1, 2] and all(s.requests > 0 for s in v2.steps)
    assert v2.saturation.db_connections_max > 0  # the sampler saw the storefront's sessions

    blocked = judge(v12, v2, peak, instances=1)
    assert blocked.verdict is Verdict.FAIL, blocked.reason
    assert "lowers capacity" in blocked.reason, blocked.reason
    kpis = {k.name: k for k in blocked.kpis()}
    assert kpis["capacity_rps_per_instance"].verdict is Verdict.FAIL
    assert kpis["capacity_rps_per_instance"].baseline >= peak.expected_peak_rps  # v2 carries the peak alone
