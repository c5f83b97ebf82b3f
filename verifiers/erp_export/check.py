"""erp-export: every order the candidate places must reach the ERP, under its contract, within the SLA.

Orders come from the shop database of the request's environment, arrivals and refusals from the ERP's own record
(`GET /orders`, `GET /rejections` of the ERP sandbox). The ERP answers some exports 503 or 429 on purpose, so
orders that arrive in time prove the exporter's retries work; a refused export (422 contract violation, 409
conflict) fails the step with the violations named."""

from __future__ import annotations

import time
from datetime import datetime

import httpx

from releasegate_sdk import Measurement, Result, TransientError, VerificationRequest, Verifier
from verifiers.shop_data import ShopSettings, candidate_orders

SLA_SECONDS = 15.0  # placement → accepted by the ERP; the exporter retries with backoff capped at 30 s
MIN_ORDERS = 5
SHOWN = 3
REFUSED, LAG, RETRIED = "erp_orders_refused", "erp_export_lag_max_s", "erp_orders_accepted_after_retries"

verifier = Verifier(
    name="erp-export",
    version="1.0.0",
    services=["shop"],
    environments=["production"],
    kpis=[REFUSED, LAG, RETRIED],
    looks_every=2.0,
)


async def erp_view(since: datetime, settings: ShopSettings) -> tuple[dict[str, dict], list[dict]]:
    """What the ERP accepted (order id → its record, with `received_at_epoch` and `attempts`) and refused since."""
    params = {"since": since.timestamp()}
    async with httpx.AsyncClient(base_url=settings.shop_erp_url, timeout=5) as client:
        orders, rejections = await client.get("/orders", params=params), await client.get("/rejections", params=params)
    for answer in (orders, rejections):
        if answer.status_code >= 500:
            raise TransientError(f"ERP sandbox answered {answer.status_code}")
        answer.raise_for_status()
    return {o["order_id"]: o for o in orders.json()["orders"]}, rejections.json()["rejections"]


def refusal(refused: list[dict]) -> str:
    """The distinct contract violations of refused exports (e.g. `amount_cents missing`) and one refused order."""
    named = ", ".join(sorted({f"{v['field']} {v['type']}" for r in refused for v in r["violations"]})) or "none named"
    return f"({named}), e.g. order {refused[0]['order_id']} sent by {refused[0]['exporter']}"


@verifier.check
async def check(req: VerificationRequest) -> Result:
    settings = ShopSettings()
    placed = {o["id"]: o["created_at"].timestamp() for o in await candidate_orders(req, settings)}
    received, rejections = await erp_view(req.window_start, settings)
    now, who = time.time(), f"{len(placed)} orders of {req.candidate_version}"
    refused = [r for r in rejections if r["order_id"] in placed]
    lag = {o: received[o]["received_at_epoch"] - at for o, at in placed.items() if o in received}
    late = sorted(o for o, at in placed.items() if lag.get(o, now - at) > SLA_SECONDS)
    waiting = [o for o in placed if o not in lag and o not in late]
    retried = sum(received[o]["attempts"] > 1 for o in lag)
    refused_ids, slowest = {r["order_id"] for r in refused}, max(lag.values(), default=None)
    found = [
        Measurement(REFUSED, len(refused_ids), threshold=0, unit="orders", samples=len(placed), passed=not refused),
        Measurement(LAG, slowest, threshold=SLA_SECONDS, unit="s", samples=len(lag), passed=not late if lag else None),
        Measurement(RETRIED, retried, unit="orders", samples=len(lag)),
    ]
    if refused:
        return Result.failed(f"the ERP refused {len(refused_ids)} of {who} {refusal(refused)}", found)
    if late:
        return Result.failed(
            f"{len(late)} of {who} not in the ERP within {SLA_SECONDS:g}s: {', '.join(late[:SHOWN])}", found
        )
    if len(placed) < MIN_ORDERS:
        return Result.inconclusive(f"only {who} in {req.environment} during the window; need {MIN_ORDERS}", found)
    if waiting or not req.is_final_look:
        return Result.pending(f"{len(waiting)} of {who} still on their way to the ERP", found)
    return Result.passed(
        f"all {who} reached the ERP within {SLA_SECONDS:g}s (slowest {slowest:.1f}s, {retried} accepted after retries)",
        found,
    )
