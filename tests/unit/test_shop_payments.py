"""Card formatting per shop version (overlay modules loaded by path) and the payment sandbox's card rules."""

import importlib.util
import random
from pathlib import Path
from types import ModuleType

import pytest
from aiohttp.test_utils import TestClient, TestServer

from shop.payment_sandbox import brand, create_app, luhn_valid
from shop.shopper import TEST_CARDS

SHOP = Path(__file__).resolve().parents[2] / "shop"


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


v1 = load(SHOP / "bundle_src/storefront/payments.py", "shop_payments_v1")
v3 = load(SHOP / "versions/v3/storefront/payments.py", "shop_payments_v3")
ALL_CARDS = [(b, c) for b, cards in TEST_CARDS.items() for c in cards]


def accepted(number: str) -> bool:
    return brand(number) is not None and luhn_valid(number)


@pytest.mark.parametrize(("card_brand", "card"), ALL_CARDS)
def test_v1_formats_every_brand_to_a_card_the_sandbox_accepts(card_brand, card):
    grouped = " ".join(card[i : i + 4] for i in range(0, len(card), 4))
    assert v1.format_card(grouped) == card
    assert v1.format_card(card.replace("", "-").strip("-")) == card
    assert brand(v1.format_card(card)) == card_brand
    assert accepted(v1.format_card(card))


@pytest.mark.parametrize("card", TEST_CARDS["visa"])
def test_v3_still_formats_visa_correctly(card):
    assert v3.format_card(card) == card
    assert accepted(v3.format_card(card))


@pytest.mark.parametrize("card", TEST_CARDS["mastercard"] + TEST_CARDS["amex"])
def test_v3_mangles_non_visa_cards_so_the_sandbox_rejects_them(card):
    assert v3.format_card(card) != card
    assert not accepted(v3.format_card(card))


def test_sandbox_card_rules():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert brand("2720999999999996") == "mastercard" and brand("2721000000000000") is None
    assert brand("5655555555554444") is None
    assert brand("37828224631000") is None, "amex needs 15 digits"
    assert brand("41111111111111x1") is None


async def test_sandbox_approves_valid_cards_and_rejects_invalid_ones():
    async with TestClient(TestServer(create_app(decline_rate=0.0, rng=random.Random(1)))) as client:
        assert (await client.get("/health")).status == 200
        for card_brand, card in ALL_CARDS:
            response = await client.post(
                "/authorize", json={"card_number": card, "amount_cents": 1900, "currency": "USD", "tenant": "acme"}
            )
            body = await response.json()
            assert response.status == 200 and body["approved"] and body["auth_code"], card
            assert body["brand"] == card_brand
        response = await client.post(
            "/authorize", json={"card_number": "37828224631000", "amount_cents": 1, "currency": "USD", "tenant": "acme"}
        )
        assert response.status == 402
        assert await response.json() == {"approved": False, "reason": "invalid_card"}


async def test_sandbox_declines_a_share_of_valid_cards_for_insufficient_funds():
    async with TestClient(TestServer(create_app(decline_rate=0.5, rng=random.Random(7)))) as client:
        reasons = []
        for _ in range(40):
            body = await (await client.post("/authorize", json={"card_number": "4111111111111111"})).json()
            reasons.append(body.get("reason"))
    assert 5 < reasons.count("insufficient_funds") < 35
    assert set(reasons) == {None, "insufficient_funds"}
