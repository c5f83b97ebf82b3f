"""How a catalog row is presented to shoppers: the free-shipping badge, and the seasonal sale's prices (15% off)."""

from typing import Any

FREE_SHIPPING_FROM_CENTS = 5000
SALE_PERCENT_OFF = 15


def present(row: Any) -> dict[str, Any]:
    price_cents = row["price_cents"] * (100 - SALE_PERCENT_OFF) // 100
    return {
        "sku": row["sku"],
        "name": row["name"],
        "price_cents": price_cents,
        "currency": row["currency"],
        "in_stock": row["quantity"] > 0,
        "badge": "free-shipping" if price_cents >= FREE_SHIPPING_FROM_CENTS else None,
    }
