"""End to end: the shop team's verifiers in real releases. In production the catalog waits for `erp-export` next
to the core verifier, and records `tax` and `inventory-latency` as advisory. v9 (ERP contract break, otherwise
healthy) and v8 (tax regression) both change storefront files the catalog does not classify, so the gate asks
one approval for them (medium risk); alice and bob sign up front."""

from __future__ import annotations

import pytest

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
APPROVERS = ("alice", "bob")


def production_verdicts(timeline: list[dict]) -> list[dict]:
    """Each passed production verify step's verdicts, by verifier."""
    return [
        t["evidence"]["verdicts"]
        for t in timeline
        if (t["step"] or "").startswith("verify-canary") and " passed: " in t["reason"]
    ]


class TestTeamVerifiers:
    async def test_an_erp_contract_break_is_rolled_back_on_the_required_erp_export_verdict(
        self, services, stable_v1, canary
    ):
        # initech is the catalog's internal tenant: it and the insiders' cookie reach the candidate first
        insiders = [Client("initech", tenant="initech"), Client("canary-cookie", cookie=canary)]
        rid, timeline, sampled = await release_sampled("v9", insiders, promoted=False, approvers=APPROVERS)
        failed = next(
            t for t in timeline if (t["step"] or "").startswith("verify-canary") and " failed: " in t["reason"]
        )
        assert failed["reason"].endswith("(verdict of erp-export)"), failed["reason"]
        assert "the ERP refused" in failed["reason"] and "amount_cents missing" in failed["reason"]
        assert failed["evidence"]["verifier"] == "erp-export"
        refused = next(k for k in failed["evidence"]["kpis"] if k["name"] == "erp_orders_refused")
        assert refused["verdict"] == "fail" and refused["candidate"] >= 1
        # the core verifier found nothing wrong with v9: only the ERP could tell
        assert not any("verdict of business-kpis" in t["reason"] and " failed: " in t["reason"] for t in timeline)
        assert any(t["actor"] == "rollback" and "compensate:production" in t["reason"] for t in timeline)
        assert all(sampled.seen[who.name]["v9"] > 0 for who in insiders), sampled.seen  # the positive control
        await assert_back_on_stable("v1", timeline, canary)

    async def test_a_tax_regression_is_promoted_with_the_advisory_tax_failure_recorded(
        self, services, stable_v1, canary
    ):
        rid, timeline = release("v8", promoted=True, approvers=APPROVERS)
        advisory = [t["reason"] for t in timeline if t["reason"].startswith("advisory verdict of tax on ")]
        assert any(": fail: " in r and "differ from the tax reference; worst: order " in r for r in advisory), advisory
        verdicts = production_verdicts(timeline)
        assert verdicts and all(v["erp-export"]["verdict"] == v["business-kpis"]["verdict"] == "pass" for v in verdicts)
        await assert_only("v8", tenants_and_insider(PRODUCTION_TENANTS, canary))
