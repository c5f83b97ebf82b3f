"""The shop's synthetic journey for releasegate's synthetic verifier (catalog: `journey: shop.synthetic:journey`):
one browse → cart → checkout → confirmation journey for a tenant, paying with a card of the given brand."""
from __future__ import annotations

import random

import httpx

from shop.shopper import TEST_CARDS, JourneyResult, run_journey


async def journey(client: httpx.AsyncClient, base_url: str, tenant: str, profile: str) -> JourneyResult:
    rng = random.Random(f"{tenant}:{profile}")
    return await run_journey(client, base_url, tenant, rng.choice(TEST_CARDS[profile]), rng)
