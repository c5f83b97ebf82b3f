"""How a catalog row is presented to shoppers."""

from typing import Any


def present(row: Any) -> dict[str, Any]:
    return {
        "sku": row["sku"],
        "name": row["name"],
        "price_cents": row["price_cents"],
        "currency": row["currency"],
        "in_stock": row["quantity"] > 0,
    }
