"""Tax of an order from its tenant's region, computed once per order on the basket's subtotal.

| region | tenants       | rate    | prices                                    |
|--------|---------------|---------|-------------------------------------------|
| US-NY  | acme          | 8.875 % | exclusive: sales tax is added at checkout |
| DE     | globex        | 19 %    | inclusive: shelf prices contain VAT       |
| GB     | initech       | 20 %    | inclusive: shelf prices contain VAT       |
| US-OR  | qa, any other | 0 %     | exclusive: no sales tax                   |

Rounded half up to the cent. The customer pays the subtotal plus tax where tax is exclusive, and the subtotal
where it is inclusive; `tax_cents` is the tax part of what they paid either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any


@dataclass(frozen=True)
class Rate:
    percent: Decimal
    inclusive: bool


REGIONS: dict[str, Rate] = {
    "US-NY": Rate(Decimal("8.875"), inclusive=False),
    "US-OR": Rate(Decimal("0"), inclusive=False),
    "DE": Rate(Decimal("19"), inclusive=True),
    "GB": Rate(Decimal("20"), inclusive=True),
}
TENANT_REGIONS: dict[str, str] = {"acme": "US-NY", "globex": "DE", "initech": "GB", "qa": "US-OR"}
DEFAULT_REGION = "US-OR"


@dataclass(frozen=True)
class Tax:
    region: str
    subtotal_cents: int
    tax_cents: int
    total_cents: int


def region_for(tenant: str) -> str:
    return TENANT_REGIONS.get(tenant, DEFAULT_REGION)


def compute(lines: Iterable[Mapping[str, Any]], region: str) -> Tax:
    """Tax and total of basket lines (`unit_cents`, `qty`) in a region."""
    rate = REGIONS[region]
    subtotal = sum(line["unit_cents"] * line["qty"] for line in lines)
    share = rate.percent / 100
    exact = Decimal(subtotal) * share / (1 + share) if rate.inclusive else Decimal(subtotal) * share
    tax = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return Tax(
        region=region,
        subtotal_cents=subtotal,
        tax_cents=tax,
        total_cents=subtotal if rate.inclusive else subtotal + tax,
    )
