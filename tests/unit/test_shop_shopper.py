"""The synthetic shopper's journey, card mix and ledger, against a fake storefront."""

import json
import random
from collections import Counter

import httpx
import pytest

from shop import shopper
from shop.payment_sandbox import brand, luhn_valid
from shop.shopper import CARD_MIXES, TEST_CARDS, Ledger, Stats, pick_card, read_ledger, run_journey

MAINTENANCE = httpx.Response(503, json={"reason": "maintenance"})  # what HAProxy answers during a data restore


def fake_storefront(
    checkout_status: int = 201, confirmation_status: int = 200, down: dict[str, httpx.Response] | None = None
) -> httpx.MockTransport:
    """A storefront for tenant acme; `down` answers a path with a fixed response instead."""

    def handle(request: httpx.Request) -> httpx.Response:
        headers = {"X-Shop-Version": "v2", "X-Shop-Instance": "i-1"}
        assert request.headers["Host"] == "acme.shop.test" and "X-Tenant" not in request.headers
        if down and request.url.path in down:
            return down[request.url.path]
        if request.url.path == "/products":
            return httpx.Response(200, json={"products": [{"sku": "TEE-001"}, {"sku": "MUG-004"}]}, headers=headers)
        if request.url.path == "/cart":
            assert json.loads(request.content)["items"]
            return httpx.Response(201, json={"cart_id": "c-1"}, headers=headers)
        if request.url.path == "/checkout":
            if checkout_status != 201:
                return httpx.Response(checkout_status, json={"reason": "invalid_card"}, headers=headers)
            return httpx.Response(
                201, json={"order_id": "o-1", "status": "confirmed", "amount_cents": 2052}, headers=headers
            )
        if request.url.path == "/orders/o-1":
            return httpx.Response(confirmation_status, json={"order_id": "o-1", "status": "confirmed"}, headers=headers)
        return httpx.Response(404)

    return httpx.MockTransport(handle)


async def test_successful_journey_records_every_step_and_the_serving_version():
    async with httpx.AsyncClient(transport=fake_storefront()) as client:
        result = await run_journey(client, "http://shop", "acme", "4111111111111111")
    assert result.success and result.order_id == "o-1"
    assert (result.version, result.instance) == ("v2", "i-1")
    assert [(s.name, s.status) for s in result.steps] == [
        ("browse", 200),
        ("cart", 201),
        ("checkout", 201),
        ("confirmation", 200),
    ]


async def test_declined_checkout_is_a_failed_journey_with_the_reason():
    async with httpx.AsyncClient(transport=fake_storefront(402)) as client:
        result = await run_journey(client, "http://shop", "acme", "378282246310005")
    assert not result.success and result.reason == "checkout: invalid_card"
    assert result.steps[-1].name == "checkout"


async def test_transport_errors_do_not_raise():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        result = await run_journey(client, "http://shop", "acme", "4111111111111111")
    assert not result.success and result.steps[0].status is None and result.reason.startswith("browse")


def test_test_cards_are_valid_and_the_mixed_mix_has_the_documented_shares():
    for card_brand, cards in TEST_CARDS.items():
        assert all(luhn_valid(c) and brand(c) == card_brand for c in cards)
    rng = random.Random(3)
    counts = Counter(pick_card("mixed", rng)[0] for _ in range(10_000))
    for card_brand, share in CARD_MIXES["mixed"].items():
        assert abs(counts[card_brand] / 10_000 - share) < 0.03
    assert {pick_card("visa", rng)[0] for _ in range(100)} == {"visa"}


async def test_stats_count_by_version_and_card():
    stats = Stats()
    async with httpx.AsyncClient(transport=fake_storefront()) as client:
        stats.record("visa", await run_journey(client, "http://shop", "acme", "4111111111111111"))
    async with httpx.AsyncClient(transport=fake_storefront(402)) as client:
        stats.record("amex", await run_journey(client, "http://shop", "acme", "378282246310005"))
    data = stats.as_dict()
    assert (data["journeys"], data["successes"], data["failures"]) == (2, 1, 1)
    assert data["by_version"] == {"v2": {"journeys": 2, "successes": 1, "failures": 1}}
    assert data["by_card"]["amex"] == {"journeys": 1, "failures": 1}
    json.dumps(data)


class TestLedger:
    async def test_an_order_is_in_the_ledger_as_soon_as_the_checkout_confirms_it(self, tmp_path):
        ledger = Ledger(tmp_path / "ledger.jsonl")
        # the confirmation page failing afterwards does not unsee the confirmed checkout
        async with httpx.AsyncClient(transport=fake_storefront(confirmation_status=500)) as client:
            result = await run_journey(client, "http://shop", "acme", "4111111111111111", ledger=ledger)
        entries = read_ledger(tmp_path / "ledger.jsonl")  # flushed: readable while the shopper still runs
        assert not result.success
        assert [{k: e[k] for k in ("kind", "order_id", "tenant", "amount_cents", "version")} for e in entries] == [
            {"kind": "order", "order_id": "o-1", "tenant": "acme", "amount_cents": 2052, "version": "v2"}
        ]
        assert entries[0]["requested_at"] <= entries[0]["at"] and entries[0]["at"].endswith("+00:00")
        ledger.close()

    async def test_declined_checkouts_and_errors_write_no_order(self, tmp_path):
        ledger = Ledger(tmp_path / "ledger.jsonl")
        for transport in (
            fake_storefront(402),
            fake_storefront(down={"/checkout": httpx.Response(500)}),
            fake_storefront(down={"/checkout": httpx.Response(201, json={"status": "confirmed"})}),
        ):
            async with httpx.AsyncClient(transport=transport) as client:
                await run_journey(client, "http://shop", "acme", "4111111111111111", ledger=ledger)
        ledger.close()
        assert read_ledger(tmp_path / "ledger.jsonl") == []

    async def test_maintenance_answers_are_logged_and_counted_apart_from_failures(self, tmp_path):
        ledger, stats = Ledger(tmp_path / "ledger.jsonl"), Stats()
        async with httpx.AsyncClient(transport=fake_storefront(down={"/checkout": MAINTENANCE})) as client:
            stats.record("visa", await run_journey(client, "http://shop", "acme", "4111111111111111", ledger=ledger))
        # the shop itself answering 503 (an instance still starting) is a failure, not maintenance
        starting = httpx.Response(503, json={"reason": "starting"})
        async with httpx.AsyncClient(transport=fake_storefront(down={"/products": starting})) as client:
            stats.record("visa", await run_journey(client, "http://shop", "acme", "4111111111111111", ledger=ledger))
        ledger.close()
        assert [(e["kind"], e["tenant"], e["step"]) for e in read_ledger(tmp_path / "ledger.jsonl")] == [
            ("maintenance", "acme", "checkout")
        ]
        data = stats.as_dict()
        assert (data["journeys"], data["maintenance"], data["failures"], data["successes"]) == (2, 1, 1, 0)
        assert data["reasons"] == {"checkout: maintenance": 1, "browse: starting": 1}

    def test_a_line_still_being_written_is_left_for_the_next_read(self, tmp_path):
        path = tmp_path / "ledger.jsonl"
        path.write_text('{"kind": "order", "order_id": "o-1"}\n{"kind": "ord')
        assert read_ledger(path) == [{"kind": "order", "order_id": "o-1"}]
        assert read_ledger(tmp_path / "absent.jsonl") == []


@pytest.mark.parametrize("tenant", ["Acme", "acme.shop.test", "ac me", "-acme", "a" * 33, "acme;x", ""])
def test_a_tenant_the_shop_could_not_resolve_is_refused_before_any_request(tenant):
    with pytest.raises(ValueError, match="not a tenant name"):
        shopper.tenant_host(tenant)
    with pytest.raises(SystemExit):
        shopper.main(["--tenants", f"acme,{tenant}" if tenant else ",", "--duration", "1"])
