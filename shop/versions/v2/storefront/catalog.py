"""How a catalog row is presented to shoppers, with a badge for free shipping."""

from typing import Any

FREE_SHIPPING_FROM_CENTS = 5000


def present(row: Any) -> dict[str, Any]:
    return {
        "sku": row["sku"],
        "name": row["name"],
        "price_cents": row["price_cents"],
        "currency": row["currency"],
        "in_stock": row["quantity"] > 0,
        "badge": "free-shipping" if row["price_cents"] >= FREE_SHIPPING_FROM_CENTS else None,
    }
