"""The tax check against real storefronts of v2 and v8 (itemised, truncated tax) on a shop database of their own."""

from datetime import UTC, datetime

import pytest

from releasegate_sdk import Verdict

from .. import check as module

pytestmark = pytest.mark.integration
TENANTS = ["acme", "globex", "initech"]  # New York sales tax, German and British VAT


async def test_passes_when_the_candidate_taxes_like_the_reference(shop_settings):
    since = datetime.now(UTC)
    await shop_settings.orders("v2", TENANTS, 6)
    result = await module.check(shop_settings.request("v2", since))
    assert result.verdict is Verdict.PASS, result.reason
    assert result.reason == "all 6 orders of v2 carry the reference tax to the cent"


async def test_fails_on_v8s_tax_regression_naming_the_orders(shop_settings):
    since = datetime.now(UTC)
    placed = await shop_settings.orders("v8", TENANTS, 6)
    result = await module.check(shop_settings.request("v8", since))
    assert result.verdict is Verdict.FAIL
    # 19.00 + 59.00: New York's 8.875% is 692.25 cents on the order, v8 cuts each line (168 + 523); in Britain
    # 1300 is VAT, v8 says 316 + 983; Germany's 303 + 942 happens to match 1245
    assert result.reason.startswith("4 of 6 orders of v8 differ from the tax reference; worst: order ")
    assert "(acme, US-NY): 691 cents, reference 692 in US-NY (-1)" in result.reason
    assert "(initech, GB): 1299 cents, reference 1300 in GB (-1)" in result.reason
    mismatched, worst, net = result.kpis()
    assert (mismatched.candidate, worst.candidate, net.candidate) == (4, 1, -4)
    assert any(order_id in result.reason for order_id in placed)
