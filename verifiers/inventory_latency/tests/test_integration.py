"""The inventory-latency check reading real Kafka: business events published as the storefront publishes them,
and real storefronts of two versions checking out side by side."""

import random
import uuid
from datetime import UTC, datetime

import pytest

from contracts.cloudevents import Envelope, encode
from contracts.events import InventoryConfirmed, InventoryReserved
from releasegate_runtime.kafka import Producer
from releasegate_runtime.settings import ServiceSettings
from releasegate_sdk import Verdict

from .. import check as module

pytestmark = pytest.mark.integration
ITEMS = [{"sku": "TEE-001", "qty": 1}]


async def publish(topic: str, version: str, latencies_ms: list[float]) -> None:
    """Each checkout's reservation and its confirmation, as a storefront of `version` in production sends them."""
    producer = Producer(ServiceSettings(principal="shop"), "verifiers-inventory-it")  # as a storefront
    await producer.start()
    try:
        for n, latency in enumerate(latencies_ms):
            who, checkout = ("acme", "globex", "initech")[n % 3], str(uuid.uuid4())
            common = {
                "version": version,
                "environment": "production",
                "tenant": who,
                "instance": f"{version}-s1",
                "checkout_id": checkout,
                "amount_cents": 2069,
                "currency": "USD",
                "items": ITEMS,
            }
            for event in (
                InventoryReserved(**common, latency_ms=3.0),
                InventoryConfirmed(**common, order_id=str(uuid.uuid4()), latency_ms=latency),
            ):
                _, value, headers = encode(Envelope.new(event, f"shop/production/{version}-s1", tenant=who))
                await producer.send(topic, who.encode(), value, headers)
    finally:
        await producer.stop()


def lognormal(n: int, median_ms: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [median_ms * rng.lognormvariate(0, 0.35) for _ in range(n)]


async def test_passes_when_the_candidate_confirms_like_stable(shop_settings):
    since = datetime.now(UTC)
    await publish(shop_settings.topic, "v1", lognormal(150, 12, 1))
    await publish(shop_settings.topic, "v5", lognormal(40, 12, 2))
    result = await module.check(shop_settings.request("v5", since, stable="v1"))
    assert result.verdict is Verdict.PASS, result.reason
    assert "(40 confirmations of v5, 150 of v1)" in result.reason


async def test_fails_when_the_candidate_confirms_clearly_slower(shop_settings):
    since = datetime.now(UTC)
    await publish(shop_settings.topic, "v1", lognormal(150, 12, 3))
    await publish(shop_settings.topic, "v5", lognormal(40, 24, 4))
    result = await module.check(shop_settings.request("v5", since, stable="v1"))
    assert result.verdict is Verdict.FAIL and result.reason.startswith("reservations confirm clearly slower")


async def test_reads_the_confirmations_real_storefronts_publish(shop_settings):
    await shop_settings.storefront("v2"), await shop_settings.storefront("v8")
    since = datetime.now(UTC)
    for _ in range(25):  # side by side, so both versions see the same machine
        for version in ("v2", "v8"):
            await shop_settings.orders(version, ["acme"], 1)
    await shop_settings.published()
    result = await module.check(shop_settings.request("v8", since, stable="v2"))
    assert result.verdict is Verdict.PASS, result.reason
    assert "(25 confirmations of v8, 25 of v2)" in result.reason
    p95 = result.kpis()[0]
    assert 0 < p95.baseline < 1000 and 0 < p95.candidate < 1000
