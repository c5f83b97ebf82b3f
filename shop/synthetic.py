"""The shop's synthetic journey for releasegate's synthetic verifier (catalog: `journey: shop.synthetic:journey`):
one browse → cart → checkout → confirmation journey for a tenant, paying with a card of the given brand."""

from __future__ import annotations

import random

import httpx

from shop.shopper import TEST_CARDS, JourneyResult, run_journey

# The issuer said no (the sandbox declines a share of valid cards at random, as banks do): the shop did its job, so
# the journey is tried once more instead of counting against the release. A candidate's own failures
# (`invalid_card` for a brand it mishandles, errors, timeouts) are never retried.
ISSUER_DECLINES = {"insufficient_funds"}


async def journey(client: httpx.AsyncClient, base_url: str, tenant: str, profile: str) -> JourneyResult:
    rng = random.Random(f"{tenant}:{profile}")
    card = rng.choice(TEST_CARDS[profile])
    result = await run_journey(client, base_url, tenant, card, rng)
    if not result.success and result.reason is not None and any(d in result.reason for d in ISSUER_DECLINES):
        result = await run_journey(client, base_url, tenant, card, rng)
    return result
