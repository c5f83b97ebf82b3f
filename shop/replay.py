"""The shop's replayer (named by catalog/shop.yaml `dr.replayer`): after a data restore, re-apply every
`shop.order.placed` of the environment since the backup point to the shop database (customer, cart, order,
payment, inventory, ERP export), idempotently, and list what could not be. The platform reads the topic and checks
the source (`releasegate_platform.replay`); this module alone knows the shop's tables.

`python -m services.rollback.replay --since 2026-11-27T10:00:00+00:00 [--environment production] [--service shop]`
runs it by hand.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from contracts.events import Contract, OrderPlaced, ShopEvent
from contracts.names import NAME, check_name, shown
from releasegate_platform.replay import InvalidEvent, ReplayReport

MAX_QTY = 10_000


class ShopReplayer:
    """Orders placed since the backup point, written back the way checkout writes them."""

    def select(self, event: Contract, environment: str) -> ShopEvent | None:
        if not isinstance(event, OrderPlaced) or event.environment != environment:
            return None
        _check_replayable(event)
        return event

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Contract]) -> ReplayReport:
        report = ReplayReport()
        columns = {
            r["column_name"]
            for r in await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'")
        }
        for order in events:
            assert isinstance(order, OrderPlaced) and order.order_id is not None
            if await conn.fetchval("SELECT 1 FROM orders WHERE id = $1", uuid.UUID(order.order_id)):
                report.already_present += 1
                continue
            missing = [f for f in ("items", "customer", "payment_ref") if getattr(order, f) in (None, [])]
            if missing:
                report.not_replayable.add(
                    {"order_id": order.order_id, "tenant": order.tenant, "reason": f"event lacks {', '.join(missing)}"}
                )
                continue
            try:
                async with conn.transaction():
                    await _insert(conn, order, columns)
                report.replayed.append(order.order_id)
            except (asyncpg.PostgresError, KeyError, ValueError) as exc:
                report.not_replayable.add(
                    {
                        "order_id": order.order_id,
                        "tenant": order.tenant,
                        "reason": f"{type(exc).__name__}: {str(exc)[:300]}",
                    }
                )
        return report


def _check_replayable(order: ShopEvent) -> None:
    """What the shop database would refuse or misread: refused here, so one event cannot fail the replay."""
    if _has_nul(order.model_dump(mode="json")):
        raise InvalidEvent("contains a NUL character, which PostgreSQL text cannot hold")
    try:
        if order.order_id is None or str(uuid.UUID(order.order_id)) != order.order_id.lower():
            raise ValueError
    except ValueError:
        raise InvalidEvent(f"order_id {shown(order.order_id)} is not a UUID") from None
    try:
        check_name("tenant", order.tenant, NAME)
    except ValueError as exc:
        raise InvalidEvent(str(exc)) from None
    if type(order.amount_cents) is not int or order.amount_cents < 0:
        raise InvalidEvent(f"amount_cents {shown(order.amount_cents)} is not a non-negative integer")
    for line in order.items or []:
        if not (
            isinstance(line.get("sku"), str)
            and 0 < len(line["sku"]) <= 64
            and type(line.get("qty")) is int
            and 0 < line["qty"] <= MAX_QTY
        ):
            raise InvalidEvent(f"basket line {shown(line)} is not a sku with a quantity of 1 to {MAX_QTY}")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(_has_nul, value))
    return False


async def _insert(conn: asyncpg.Connection, order: ShopEvent, columns: set[str]) -> None:
    customer_id = await conn.fetchval(
        "INSERT INTO customers (id, tenant, email) VALUES ($1, $2, $3) ON CONFLICT (tenant, email)"
        " DO UPDATE SET email = EXCLUDED.email RETURNING id",
        uuid.uuid4(),
        order.tenant,
        order.customer,
    )
    items = [{"sku": i["sku"], "qty": i["qty"]} for i in order.items or []]
    cart_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO carts (id, tenant, items, status) VALUES ($1, $2, $3, 'checked_out')",
        cart_id,
        order.tenant,
        json.dumps(items),
    )
    values: dict[str, Any] = {
        "id": uuid.UUID(order.order_id),
        "tenant": order.tenant,
        "version": order.version,
        "environment": order.environment,
        "customer_id": customer_id,
        "cart_id": cart_id,
        "amount_cents": order.amount_cents,
        "currency": order.currency,
        "status": "confirmed",
    }
    if order.placed_at is not None:
        values["created_at"] = order.placed_at
    optional = {
        "tax_cents": order.tax_cents,
        "region": order.region,
        "lines": json.dumps(order.items) if order.items else None,
    }
    values |= {name: value for name, value in optional.items() if name in columns and value is not None}
    names = list(values)
    await conn.execute(
        f"INSERT INTO orders ({', '.join(names)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(names)))})",
        *values.values(),
    )
    await conn.execute(
        "INSERT INTO payments (order_id, auth_code, amount_cents) VALUES ($1, $2, $3)",
        values["id"],
        order.payment_ref,
        order.amount_cents,
    )
    for item in sorted(items, key=lambda i: i["sku"]):
        # what the shop itself would refuse (an unknown product, stock below zero) is refused here too: the
        # integrity checks after the replay must hold whatever the events say
        if not await conn.fetchval(
            "UPDATE inventory SET quantity = quantity - $2 WHERE sku = $1 AND quantity >= $2 RETURNING true",
            item["sku"],
            item["qty"],
        ):
            raise ValueError(f"sku {shown(item['sku'])} is unknown or has fewer than {item['qty']} in stock")
    # A replayed order still has to reach the ERP: queue its export (the ERP ignores a duplicate delivery).
    if await conn.fetchval("SELECT to_regclass('erp_exports') IS NOT NULL"):
        await conn.execute(
            "INSERT INTO erp_exports (order_id, tenant, version) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            values["id"],
            order.tenant,
            order.version,
        )
