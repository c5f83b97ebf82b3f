"""How a catalog row is presented to shoppers, with a badge for free shipping; and, new in v12, the product
listing ranked by the recommendation model before it is shown."""

import asyncio
from typing import Any

from storefront import db

FREE_SHIPPING_FROM_CENTS = 5000
# The recommendation model is one session per process that ranks one listing at a time (about 70 ms). One listing
# is only that much slower; but listings now queue behind each other, so an instance lists at most ~14 a second
# where it listed hundreds: under peak load the storefront's capacity falls, while every single request looks fine.
RANK_SECONDS = 0.07
_model = asyncio.Lock()
_unranked = db.products


def present(row: Any) -> dict[str, Any]:
    return {
        "sku": row["sku"],
        "name": row["name"],
        "price_cents": row["price_cents"],
        "currency": row["currency"],
        "in_stock": row["quantity"] > 0,
        "badge": "free-shipping" if row["price_cents"] >= FREE_SHIPPING_FROM_CENTS else None,
    }


async def ranked_products(pool: Any) -> Any:
    rows = await _unranked(pool)
    async with _model:
        await asyncio.sleep(RANK_SECONDS)  # the model's ranking call
    return rows


db.products = ranked_products  # every listing (GET /products, the price pages) goes through the model
