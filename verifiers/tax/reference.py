"""Reference tax calculation of the shop's orders, for a verifier to compare with what a release computed.

Deliberately independent of the storefront's `tax.py` (its own table, exact fractions instead of decimals), so a
release that changes the storefront's tax code cannot change the reference with it. The rules:

| region | tenants       | rate    | prices                                    |
|--------|---------------|---------|-------------------------------------------|
| US-NY  | acme          | 8.875 % | exclusive: sales tax is added at checkout |
| DE     | globex        | 19 %    | inclusive: shelf prices contain VAT       |
| GB     | initech       | 20 %    | inclusive: shelf prices contain VAT       |
| US-OR  | qa, any other | 0 %     | exclusive: no sales tax                   |

Tax is computed once per order on the subtotal of its lines and rounded half up to the cent; the amount paid is
subtotal + tax where tax is exclusive and the subtotal where it is inclusive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

# region → (rate, prices include the tax)
RATES: dict[str, tuple[Fraction, bool]] = {
    "US-NY": (Fraction(8875, 100_000), False),
    "US-OR": (Fraction(0), False),
    "DE": (Fraction(19, 100), True),
    "GB": (Fraction(20, 100), True),
}
TENANT_REGIONS: dict[str, str] = {"acme": "US-NY", "globex": "DE", "initech": "GB", "qa": "US-OR"}
DEFAULT_REGION = "US-OR"


class UnknownRegion(ValueError):
    """The region has no entry in the reference table."""


def region_for(tenant: str) -> str:
    """The tax region a tenant's orders must carry."""
    return TENANT_REGIONS.get(tenant, DEFAULT_REGION)


def subtotal_cents(lines: Iterable[Mapping[str, Any]]) -> int:
    total = 0
    for line in lines:
        qty, unit = line["qty"], line["unit_cents"]
        if type(qty) is not int or type(unit) is not int or qty <= 0 or unit < 0:
            raise ValueError(f"basket line needs a positive int qty and a non-negative int unit_cents: {line!r}")
        total += qty * unit
    return total


def tax_cents(lines: Iterable[Mapping[str, Any]], region: str) -> int:
    """The tax of basket lines (`qty`, `unit_cents`) in a region, in cents."""
    if region not in RATES:
        raise UnknownRegion(f"no tax rate for region {region!r}")
    rate, inclusive = RATES[region]
    subtotal = subtotal_cents(lines)
    exact = subtotal * rate / (1 + rate) if inclusive else subtotal * rate
    return int(exact + Fraction(1, 2))  # half up; exact is never negative


def total_cents(lines: Iterable[Mapping[str, Any]], region: str) -> int:
    """What the customer pays for basket lines in a region, tax included."""
    lines = list(lines)
    tax = tax_cents(lines, region)
    return subtotal_cents(lines) + (0 if RATES[region][1] else tax)
