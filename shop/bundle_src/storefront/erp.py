"""Client of the ERP's order-export API: the payload an order becomes and what the ERP's answer means."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

DEFAULT_RETRY_AFTER_S = 1.0


@dataclass(frozen=True)
class Answer:
    """What became of one export: accepted (now or before), throttled, or failed, transiently or not."""

    accepted: bool
    retryable: bool = True
    retry_after_s: float | None = None
    error: str | None = None


def payload(order: Mapping[str, Any]) -> dict[str, Any]:
    """The ERP's order document for an `orders` row (with `lines` as stored)."""
    return {
        "order_id": str(order["id"]),
        "tenant": order["tenant"],
        "region": order["region"],
        "currency": order["currency"],
        "amount_cents": order["amount_cents"],
        "tax_cents": order["tax_cents"],
        "lines": json.loads(order["lines"]),
        "placed_at": order["created_at"].astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


async def send(session: aiohttp.ClientSession, base_url: str, document: dict[str, Any], *, exporter: str) -> Answer:
    try:
        async with session.post(f"{base_url}/orders", json=document, headers={"X-Exporter": exporter}) as response:
            status, text = response.status, await response.text()
            retry_after = response.headers.get("Retry-After")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Answer(accepted=False, error=f"unreachable: {str(exc) or type(exc).__name__}")
    if status in (200, 201):  # 201 accepted now, 200 a duplicate of what the ERP already has
        return Answer(accepted=True)
    error = f"{status} {text[:500]}"
    if status == 429:
        return Answer(accepted=False, retry_after_s=_seconds(retry_after), error=error)
    return Answer(accepted=False, retryable=status >= 500 or status == 408, error=error)


def _seconds(retry_after: str | None) -> float:
    """Retry-After as seconds: delay-seconds or an HTTP date."""
    if not retry_after:
        return DEFAULT_RETRY_AFTER_S
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(retry_after) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_S
