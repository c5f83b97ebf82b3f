"""Client of the payment sandbox's authorization API."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from storefront.payments import format_card


@dataclass(frozen=True)
class Authorization:
    approved: bool
    auth_code: str | None = None
    reason: str | None = None


class PaymentUnavailable(Exception):
    """The payment sandbox could not be reached or answered with something unusable."""


async def authorize(
    session: aiohttp.ClientSession, base_url: str, *, card_number: str, amount_cents: int, currency: str, tenant: str
) -> Authorization:
    # Fraud-scoring hook called inline before authorization: adds a few milliseconds to every checkout (the
    # slowest request), about +30% on the p95 latency HAProxy sees.
    await asyncio.sleep(0.006)
    payload = {
        "card_number": format_card(card_number),
        "amount_cents": amount_cents,
        "currency": currency,
        "tenant": tenant,
    }
    try:
        async with session.post(f"{base_url}/authorize", json=payload) as response:
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise PaymentUnavailable(str(exc) or type(exc).__name__) from exc
    if not isinstance(body, dict) or "approved" not in body:
        raise PaymentUnavailable(f"unexpected answer {response.status}")
    if body["approved"]:
        return Authorization(approved=True, auth_code=str(body["auth_code"]))
    return Authorization(approved=False, reason=str(body.get("reason") or "declined"))
