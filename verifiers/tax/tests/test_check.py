"""The tax check on fake requests and fake orders: no database."""

import asyncio
import json

from releasegate_sdk import Verdict
from releasegate_sdk.testing import fake_request
from verifiers.tax import reference as tax_reference

from .. import check as module

BASKET = [{"sku": "TEE-001", "qty": 1, "unit_cents": 1900}, {"sku": "HOOD-002", "qty": 1, "unit_cents": 5900}]


def order(
    n: int, tenant: str, tax_cents: int | None = None, region: str | None = None, lines: list[dict] = BASKET
) -> dict:
    region = region or tax_reference.region_for(tenant)
    tax = tax_reference.tax_cents(lines, region) if tax_cents is None else tax_cents
    return {"id": f"order-{n}", "tenant": tenant, "region": region, "tax_cents": tax, "lines": json.dumps(lines)}


def judge(monkeypatch, orders: list[dict]):
    async def fake_orders(req, settings):
        return orders

    monkeypatch.setattr(module, "candidate_orders", fake_orders)
    return asyncio.run(module.check(fake_request(environment="production", candidate_version="v8")))


class TestTaxCheck:
    def test_passes_when_every_order_carries_the_reference_tax(self, monkeypatch):
        result = judge(monkeypatch, [order(n, t) for n, t in enumerate(["acme", "globex", "initech", "qa", "x"] * 2)])
        assert (
            result.verdict is Verdict.PASS
            and result.reason == "all 10 orders of v8 carry the reference tax to the cent"
        )
        assert [k.candidate for k in result.kpis()] == [0, 0, 0]

    def test_fails_on_a_cent_of_difference_naming_the_worst_orders_first(self, monkeypatch):
        # v8 cuts each line's tax to the cent: 168 + 523 = 691 where the reference has 692 on the order
        orders = [order(n, "acme") for n in range(5)] + [
            order(5, "acme", 691),
            order(6, "globex", 1240),
            order(7, "initech", 1302),
        ]
        assert tax_reference.tax_cents(BASKET, "DE") == 1245 and tax_reference.tax_cents(BASKET, "GB") == 1300
        result = judge(monkeypatch, orders)
        assert result.verdict is Verdict.FAIL
        assert result.reason == (
            "3 of 8 orders of v8 differ from the tax reference; worst: order order-6 (globex, DE): 1240 cents, "
            "reference 1245 in DE (-5); order order-7 (initech, GB): 1302 cents, reference 1300 in GB (+2); "
            "order order-5 (acme, US-NY): 691 cents, reference 692 in US-NY (-1)"
        )
        mismatched, worst, net = result.kpis()
        assert (mismatched.candidate, mismatched.candidate_samples, worst.candidate, net.candidate) == (3, 8, 5, -4)

    def test_fails_on_an_order_taxed_in_another_region_than_its_tenants(self, monkeypatch):
        orders = [order(n, "acme") for n in range(5)] + [order(5, "acme", tax_cents=692, region="US-OR")]
        result = judge(monkeypatch, orders)
        assert result.verdict is Verdict.FAIL and "(acme, US-OR): 692 cents, reference 692 in US-NY" in result.reason

    def test_is_inconclusive_on_too_few_orders(self, monkeypatch):
        orders = [order(0, "acme"), order(1, "acme") | {"lines": None}, order(2, "acme") | {"tax_cents": None}]
        result = judge(monkeypatch, orders)
        assert result.verdict is Verdict.INCONCLUSIVE and result.reason.startswith("only 1 orders of v8")
