"""The synthetic shopper's journey and card mix, against a fake storefront."""
import json
import random
from collections import Counter

import httpx

from shop.payment_sandbox import brand, luhn_valid
from shop.shopper import CARD_MIXES, TEST_CARDS, Stats, pick_card, run_journey


def fake_storefront(checkout_status: int = 201) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        headers = {"X-Shop-Version": "v2", "X-Shop-Instance": "i-1"}
        assert request.headers["X-Tenant"] == "acme"
        if request.url.path == "/products":
            return httpx.Response(200, json={"products": [{"sku": "TEE-001"}, {"sku": "MUG-004"}]}, headers=headers)
        if request.url.path == "/cart":
            assert json.loads(request.content)["items"]
            return httpx.Response(201, json={"cart_id": "c-1"}, headers=headers)
        if request.url.path == "/checkout":
            if checkout_status != 201:
                return httpx.Response(checkout_status, json={"reason": "invalid_card"}, headers=headers)
            return httpx.Response(201, json={"order_id": "o-1", "status": "confirmed"}, headers=headers)
        if request.url.path == "/orders/o-1":
            return httpx.Response(200, json={"order_id": "o-1", "status": "confirmed"}, headers=headers)
        return httpx.Response(404)
    return httpx.MockTransport(handle)


async def test_successful_journey_records_every_step_and_the_serving_version():
    async with httpx.AsyncClient(transport=fake_storefront()) as client:
        result = await run_journey(client, "http://shop", "acme", "4111111111111111")
    assert result.success and result.order_id == "o-1"
    assert (result.version, result.instance) == ("v2", "i-1")
    assert [(s.name, s.status) for s in result.steps] == [
        ("browse", 200), ("cart", 201), ("checkout", 201), ("confirmation", 200)]


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
