"""tax: the tax the candidate charged on each order it placed must be what `shop.tax_reference` computes for the
same basket lines in the tenant's region. Advisory: a mismatch is recorded, it does not stop the release.

The reference already rounds (half up, once per order, from exact fractions), so a correct storefront agrees
with it to the cent: any difference in whole cents, or an order taxed in another region than its tenant's, is a
mismatch. There is no floating-point slack to allow for."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from releasegate_sdk import Measurement, Result, VerificationRequest, Verifier
from verifiers.shop_data import ShopSettings, candidate_orders

from . import reference as tax_reference

TOLERANCE_CENTS = 0
MIN_ORDERS = 5
SHOWN = 3
MISMATCHED, WORST, NET = "tax_mismatched_orders", "tax_worst_difference_cents", "tax_net_difference_cents"

verifier = Verifier(
    name="tax", version="1.0.0", services=["shop"], environments=["production"], kpis=[MISMATCHED, WORST, NET]
)


@dataclass(frozen=True)
class Taxed:
    """One order's tax as charged and as the reference has it."""

    order_id: str
    tenant: str
    region: str
    charged: int
    reference: int
    reference_region: str

    @property
    def difference(self) -> int:
        return self.charged - self.reference

    @property
    def mismatched(self) -> bool:
        return abs(self.difference) > TOLERANCE_CENTS or self.region != self.reference_region

    def __str__(self) -> str:
        return (
            f"order {self.order_id} ({self.tenant}, {self.region}): {self.charged} cents, reference "
            f"{self.reference} in {self.reference_region} ({self.difference:+d})"
        )

    @classmethod
    def of(cls, order: Mapping[str, Any]) -> Taxed:
        region = tax_reference.region_for(order["tenant"])
        return cls(
            order["id"],
            order["tenant"],
            order["region"],
            order["tax_cents"],
            tax_reference.tax_cents(json.loads(order["lines"]), region),
            region,
        )


@verifier.check
async def check(req: VerificationRequest) -> Result:
    orders = [
        Taxed.of(o)
        for o in await candidate_orders(req, ShopSettings())
        if o["lines"] is not None and o["tax_cents"] is not None
    ]
    wrong = sorted((t for t in orders if t.mismatched), key=lambda t: -abs(t.difference))
    who = f"{len(orders)} orders of {req.candidate_version}"
    found = [
        Measurement(MISMATCHED, len(wrong), threshold=0, unit="orders", samples=len(orders), passed=not wrong),
        Measurement(
            WORST,
            max((abs(t.difference) for t in orders), default=None),
            threshold=TOLERANCE_CENTS,
            unit="cents",
            samples=len(orders),
        ),
        Measurement(NET, sum(t.difference for t in orders), unit="cents", samples=len(orders)),
    ]
    if wrong:
        return Result.failed(
            f"{len(wrong)} of {who} differ from the tax reference; worst: " + "; ".join(map(str, wrong[:SHOWN])), found
        )
    if len(orders) < MIN_ORDERS:
        return Result.inconclusive(f"only {who} in {req.environment} during the window; need {MIN_ORDERS}", found)
    return Result.passed(f"all {who} carry the reference tax to the cent", found)
