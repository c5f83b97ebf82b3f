"""The erp-export check against real storefronts of v2 and v9 exporting to the local stack's ERP sandbox (which
fails 5% of the exports on its own, and more on request), on a shop database of their own."""

import asyncio
from datetime import UTC, datetime

import pytest

from releasegate_sdk import Verdict
from tests.support.shop import tenant, wait_for

from .. import check as module

pytestmark = pytest.mark.integration


async def test_passes_when_the_orders_arrive_despite_failures_and_throttling(shop_settings):
    who, erp = tenant(), shop_settings.shop.erp
    await erp.faults(tenant=who, fail_next=3, throttle_next=2, retry_after_s=1)
    since = datetime.now(UTC)
    placed = await shop_settings.orders("v2", [who], 6)
    await erp.wait_for_orders(who, set(placed), timeout=30)

    result = await module.check(shop_settings.request("v2", since))
    assert result.verdict is Verdict.PASS, result.reason
    assert result.reason.startswith("all 6 orders of v2 reached the ERP within 15s")
    retried = next(k for k in result.kpis() if k.name == module.RETRIED)
    assert retried.candidate >= 1  # the injected 503s and 429s cost those orders at least one retry


async def test_fails_on_v9s_contract_break_naming_the_violations(shop_settings):
    who, erp = tenant(), shop_settings.shop.erp
    since = datetime.now(UTC)
    placed = await shop_settings.orders("v9", [who], 5)

    async def all_refused() -> bool:
        return {r["order_id"] for r in await erp.rejections(who)} >= set(placed)

    await wait_for(all_refused, 30, "the ERP refusing v9's exports")

    result = await module.check(shop_settings.request("v9", since))
    assert result.verdict is Verdict.FAIL
    assert result.reason.startswith(
        "the ERP refused 5 of 5 orders of v9 (amount extra_forbidden, amount_cents "
        "missing, tax extra_forbidden, tax_cents missing)"
    ), result.reason
    assert " sent by v9/verifiers-v9" in result.reason


async def test_fails_when_the_erp_keeps_failing_orders_past_the_sla(shop_settings, monkeypatch):
    monkeypatch.setattr(module, "SLA_SECONDS", 2.0)
    who, erp = tenant(), shop_settings.shop.erp
    await erp.faults(tenant=who, fail_next=10_000)
    try:
        since = datetime.now(UTC)
        placed = await shop_settings.orders("v2", [who], 5)
        await asyncio.sleep(2.5)
        result = await module.check(shop_settings.request("v2", since))
    finally:
        await erp.faults(tenant=who, fail_next=0)
    assert result.verdict is Verdict.FAIL
    assert result.reason.startswith("5 of 5 orders of v2 not in the ERP within 2s: ")
    assert set(result.reason.split(": ")[1].split(", ")) <= set(placed)
