"""Shop bundles exporting orders to the ERP sandbox, as real processes on real PostgreSQL and Kafka.

Each module run gets its own shop database, created the way an earlier release left it, so the storefronts
upgrade it in place. Two v2 instances, a v8 (tax regression) and a v9 (ERP contract break) share it, with a
payment sandbox and an ERP sandbox of their own that fails 10% of the exports and throttles on request.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest

from contracts.cloudevents import decode, header_dict
from contracts.events import OrderPlaced
from shop.build_bundles import build_all
from shop.shopper import run_journey
from tests.support.shop import (
    BASKET,
    EARLIER_ORDER,
    SUCCESS_TYPES,
    VISA,
    Erp,
    Events,
    Shop,
    checkout,
    fresh_database,
    host,
    sandbox,
    tenant,
    wait_for,
)
from verifiers.tax import reference as tax_reference

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def shop(tmp_path_factory, topic) -> AsyncIterator[Shop]:
    work = tmp_path_factory.mktemp("erp-export")
    digests = build_all(work / "store")
    async with fresh_database() as database:
        payment = sandbox("shop.payment_sandbox", ["--decline-rate", "0"], work)
        erp = Erp(sandbox("shop.erp_sandbox", ["--fail-rate", "0.1", "--latency-ms", "1,5"], work))
        shop = Shop(work, digests, database, topic, payment, erp, {})
        # v2 takes over other versions' pending exports after 8 s; v9 retries what the ERP refused after 5 s.
        shop.storefronts = {
            name: shop.start(name, version, adopt_after_s=adopt)
            for name, version, adopt in (
                ("erp-v2-a", "v2", 8),
                ("erp-v2-b", "v2", 8),
                ("erp-v8", "v8", 60),
                ("erp-v9", "v9", 5),
            )
        }
        processes = [payment, erp.process, *shop.storefronts.values()]
        try:
            await asyncio.gather(*(p.wait_healthy() for p in processes))
            yield shop
        finally:
            codes = {p.name: p.terminate() for p in processes if p.popen.poll() is None}
        assert codes == {p.name: 0 for p in processes}, f"unclean shutdown: {codes}"


async def events_of(events: Events, checkout_ids: set[str], count: int, timeout: float = 20) -> list:
    """Shop events of the given checkouts (the tenant key alone is shared with other traffic)."""
    found: list = []

    async def enough() -> bool:
        batches = await events.consumer.getmany(timeout_ms=200)
        found.extend(
            r for batch in batches.values() for r in batch if json.loads(r.value).get("checkout_id") in checkout_ids
        )
        return len(found) >= count

    await wait_for(enough, timeout, f"{count} events of checkouts {sorted(checkout_ids)}")
    return found


def of_type(records: list, ce_type: str, checkout_id: str) -> dict:
    [data] = [
        json.loads(r.value)
        for r in records
        if header_dict(r.headers)["ce_type"] == ce_type and json.loads(r.value)["checkout_id"] == checkout_id
    ]
    return data


def priced(items: list[dict]) -> list[dict]:
    prices = {"TEE-001": 1900, "HOOD-002": 5900, "MUG-004": 1200}
    return [item | {"unit_cents": prices[item["sku"]]} for item in items]


class TestErpExport:
    async def test_orders_reach_the_erp_exactly_once_despite_failures_and_throttling(self, shop):
        who = tenant()
        await shop.erp.faults(tenant=who, fail_next=4, throttle_next=2, retry_after_s=1)
        instances = [shop.storefronts["erp-v2-a"], shop.storefronts["erp-v2-b"]]
        async with httpx.AsyncClient(timeout=10) as client:
            results = await asyncio.gather(*(run_journey(client, instances[i % 2].url, who, VISA) for i in range(10)))
        assert all(r.success for r in results), [r.reason for r in results if not r.success]
        placed = {r.order_id for r in results}

        received = await shop.erp.wait_for_orders(who, placed)
        assert set(received) == placed
        assert [o["duplicates"] for o in received.values()] == [0] * len(placed)
        rows = {
            str(r["order_id"]): r
            for r in await shop.fetch(
                "SELECT order_id, attempts, exported_at, exported_by FROM erp_exports WHERE tenant = $1", who
            )
        }
        assert set(rows) == placed
        assert all(
            rows[o]["exported_at"] is not None and rows[o]["exported_by"] == received[o]["exporter"] for o in placed
        )
        assert {received[o]["exporter"] for o in placed} <= {"v2/erp-v2-a", "v2/erp-v2-b"}
        # every attempt the exporter recorded reached the ERP, and the injected failures cost one attempt each
        assert sum(r["attempts"] for r in rows.values()) == sum(o["attempts"] for o in received.values())
        assert sum(r["attempts"] for r in rows.values()) >= len(placed) + 6

    async def test_a_throttled_export_waits_out_the_retry_after(self, shop):
        who = tenant()
        await shop.erp.faults(tenant=who, throttle_next=1, retry_after_s=3)
        response = await checkout(shop.storefronts["erp-v2-a"], who)
        order_id = response.json()["order_id"]
        received = await shop.erp.wait_for_orders(who, {order_id})
        [placed] = await shop.fetch("SELECT created_at FROM orders WHERE id = $1", order_id)
        assert received[order_id]["attempts"] >= 2
        assert received[order_id]["received_at_epoch"] - placed["created_at"].timestamp() >= 3

    async def test_an_exporter_stopped_mid_outage_leaves_the_orders_to_its_successor(self, shop):
        who = tenant()
        await shop.erp.faults(tenant=who, fail_next=10_000)
        async with fresh_database() as database:
            first = shop.start(f"erp-restart-{who}-1", "v2", database)
            try:
                await first.wait_healthy()
                order_ids = {(await checkout(first, who)).json()["order_id"] for _ in range(3)}

                async def retried() -> bool:
                    answers = [await shop.erp.call("GET", f"/orders/{o}") for o in order_ids]
                    return all(a.status_code == 404 and a.json()["attempts"] >= 2 for a in answers)

                await wait_for(retried, 30, "the ERP refusing each order twice")
            finally:
                assert first.terminate() == 0
            pending = await shop.fetch("SELECT exported_at, attempts FROM erp_exports", database=database)
            assert len(pending) == 3 and all(r["exported_at"] is None and r["attempts"] >= 2 for r in pending)

            await shop.erp.faults(tenant=who, fail_next=0)
            second = shop.start(f"erp-restart-{who}-2", "v2", database)
            try:
                await second.wait_healthy()
                received = await shop.erp.wait_for_orders(who, order_ids)
                rows = await shop.fetch("SELECT exported_by, attempts FROM erp_exports", database=database)
            finally:
                assert second.terminate() == 0
        assert set(received) == order_ids and all(o["duplicates"] == 0 for o in received.values())
        assert {r["exported_by"] for r in rows} == {f"v2/erp-restart-{who}-2"}
        assert sum(r["attempts"] for r in rows) == sum(o["attempts"] for o in received.values())

    async def test_v9_exports_are_refused_until_the_stable_version_takes_them_over(self, shop):
        who = tenant()
        response = await checkout(shop.storefronts["erp-v9"], who)
        assert response.status_code == 201 and response.headers["X-Shop-Version"] == "v9"
        order_id = response.json()["order_id"]
        refused: list[dict] = []

        async def rejected() -> bool:
            refused[:] = [r for r in await shop.erp.rejections(who) if r["order_id"] == order_id]
            return bool(refused)

        await wait_for(rejected, 20, "the ERP refusing v9's export")
        assert refused[0]["exporter"] == "v9/erp-v9" and refused[0]["reason"] == "contract_violation"
        assert {"amount", "amount_cents", "tax", "tax_cents"} <= {v["field"] for v in refused[0]["violations"]}
        assert (await shop.erp.call("GET", f"/orders/{order_id}")).status_code == 404
        [row] = await shop.fetch(
            "SELECT exported_at, last_error, refused_by FROM erp_exports WHERE order_id = $1", order_id
        )
        assert (row["exported_at"], row["last_error"][:3], row["refused_by"]) == (None, "422", "v9")

        received = await shop.erp.wait_for_orders(who, {order_id}, timeout=60)
        assert received[order_id]["exporter"].startswith("v2/") and received[order_id]["duplicates"] == 0

    async def test_the_erp_rejects_a_contract_violation_with_the_reason(self, shop):
        document = {
            "order_id": str(uuid.uuid4()),
            "tenant": "acme",
            "region": "US-NY",
            "currency": "USD",
            "amount": 8492,
            "tax_cents": 692,
            "placed_at": "2025-05-16T14:02:03Z",
        }
        for _ in range(20):  # the sandbox fails 10% of the exports before looking at them
            response = await shop.erp.call("POST", "/orders", json=document)
            if response.status_code != 503:
                break
        body = response.json()
        assert response.status_code == 422 and body["reason"] == "contract_violation"
        assert {(v["field"], v["type"]) for v in body["violations"]} == {
            ("amount", "extra_forbidden"),
            ("amount_cents", "missing"),
            ("lines", "missing"),
        }


class TestTaxAndInventory:
    async def test_tax_and_region_are_on_the_order_its_event_and_its_erp_export(self, shop, events):
        shop_a, lines = shop.storefronts["erp-v2-a"], priced(BASKET)
        placed = {}
        for who in ("acme", "globex", "initech", tenant()):
            response = await checkout(shop_a, who)
            assert response.status_code == 201, response.text
            placed[who] = response.json()
        records = await events_of(events, {p["checkout_id"] for p in placed.values()}, len(placed) * len(SUCCESS_TYPES))

        for who, answer in placed.items():
            region, order_id = tax_reference.region_for(who), answer["order_id"]
            tax, total = tax_reference.tax_cents(lines, region), tax_reference.total_cents(lines, region)
            assert (answer["region"], answer["tax_cents"], answer["amount_cents"]) == (region, tax, total)
            async with httpx.AsyncClient(timeout=10) as client:
                order = (await client.get(f"{shop_a.url}/orders/{order_id}", headers=host(who))).json()
            assert (order["region"], order["tax_cents"], order["amount_cents"]) == (region, tax, total)
            [row] = await shop.fetch("SELECT tax_cents, region, lines, created_at FROM orders WHERE id = $1", order_id)
            assert (row["tax_cents"], row["region"], json.loads(row["lines"])) == (tax, region, lines)

            [record] = [
                r
                for r in records
                if header_dict(r.headers)["ce_type"] == "shop.order.placed.v1"
                and json.loads(r.value)["checkout_id"] == answer["checkout_id"]
            ]
            event = decode(record.headers, record.value).data
            assert isinstance(event, OrderPlaced)
            assert (event.order_id, event.amount_cents, event.tax_cents, event.region) == (order_id, total, tax, region)
            assert (event.items, event.customer, event.payment_ref) == (
                lines,
                f"buyer@{who}.example",
                order["auth_code"],
            )
            assert event.placed_at == row["created_at"]
            assert VISA not in record.value.decode()

            exported = (await shop.erp.wait_for_orders(who, {order_id}))[order_id]
            assert (exported["amount_cents"], exported["tax_cents"], exported["region"], exported["lines"]) == (
                total,
                tax,
                region,
                lines,
            )
            assert datetime.fromisoformat(exported["placed_at"]) == row["created_at"]

    async def test_v8_charges_less_tax_than_the_reference(self, shop, events):
        response = await checkout(shop.storefronts["erp-v8"], "acme")
        answer = response.json()
        records = await events_of(events, {answer["checkout_id"]}, len(SUCCESS_TYPES))
        event = of_type(records, "shop.order.placed.v1", answer["checkout_id"])
        assert event["version"] == "v8" and event["items"] == priced(BASKET)
        assert event["tax_cents"] == answer["tax_cents"] == 691
        assert tax_reference.tax_cents(event["items"], event["region"]) == 692
        # the ERP cannot tell: the export is consistent with itself
        exported = (await shop.erp.wait_for_orders("acme", {answer["order_id"]}))[answer["order_id"]]
        assert (exported["tax_cents"], exported["exporter"]) == (691, "v8/erp-v8")

    async def test_stock_is_reserved_before_payment_and_confirmed_after(self, shop, events):
        shop_b, who = shop.storefronts["erp-v2-b"], tenant()
        stock = "SELECT sku, quantity FROM inventory WHERE sku = ANY($1::text[])"
        skus = [item["sku"] for item in BASKET]
        before = dict(await shop.fetch(stock, skus))
        paid = (await checkout(shop_b, who)).json()
        declined = await checkout(shop_b, who, card="4111111111111112")
        assert declined.status_code == 402 and declined.json()["reason"] == "invalid_card"
        records = await events.for_tenant(who, len(SUCCESS_TYPES) + 4)

        def types(checkout_id: str) -> list[str]:
            return [
                header_dict(r.headers)["ce_type"] for r in records if json.loads(r.value)["checkout_id"] == checkout_id
            ]

        assert types(paid["checkout_id"]) == SUCCESS_TYPES
        assert types(declined.json()["checkout_id"]) == [
            "shop.checkout.attempted.v1",
            "shop.inventory.reserved.v1",
            "shop.payment.declined.v1",
            "shop.checkout.failed.v1",
        ]
        reserved = of_type(records, "shop.inventory.reserved.v1", paid["checkout_id"])
        confirmed = of_type(records, "shop.inventory.confirmed.v1", paid["checkout_id"])
        succeeded = of_type(records, "shop.checkout.succeeded.v1", paid["checkout_id"])
        assert reserved["items"] == confirmed["items"] == BASKET
        assert (reserved["order_id"], confirmed["order_id"]) == (None, paid["order_id"])
        # reservation → confirmation happens inside the checkout
        assert 0 < confirmed["latency_ms"] < succeeded["latency_ms"]

        reservations = await shop.fetch("SELECT status, order_id FROM inventory_reservations WHERE tenant = $1", who)
        assert sorted((r["status"], r["order_id"] and str(r["order_id"])) for r in reservations) == [
            ("confirmed", paid["order_id"]),
            ("released", None),
        ]
        after = dict(await shop.fetch(stock, skus))
        assert after == {sku: before[sku] - 1 for sku in skus}


async def test_an_earlier_database_is_upgraded_and_its_export_state_never_runs_ahead_of_orders(shop):
    [earlier] = await shop.fetch("SELECT tax_cents, region, lines FROM orders WHERE id = $1", EARLIER_ORDER)
    assert tuple(earlier) == (None, None, None)
    assert await shop.fetch("SELECT 1 FROM erp_exports WHERE order_id = $1", EARLIER_ORDER) == []
    [counts] = await shop.fetch(
        "SELECT (SELECT count(*) FROM erp_exports e LEFT JOIN orders o ON o.id = e.order_id WHERE o.id IS NULL)"
        " AS exports_without_order,"
        " (SELECT count(*) FROM orders o LEFT JOIN erp_exports e ON e.order_id = o.id WHERE e.order_id IS NULL)"
        " AS orders_without_export,"
        " (SELECT count(*) FROM orders) AS orders"
    )
    assert (counts["exports_without_order"], counts["orders_without_export"]) == (0, 1)
    assert counts["orders"] > 1
