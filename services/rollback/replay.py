"""Order replay after a data restore: re-apply every `shop.order.placed` event of an environment since a point in
time to the shop database (customer, cart, order, payment, inventory), idempotently, and list what could not be.

`python -m services.rollback.replay --since 2026-11-27T10:00:00+00:00 [--environment production]`
"""
from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts import topics
from contracts.cloudevents import ContractError, decode
from contracts.events import OrderPlaced
from services.common.kafka import client_options
from services.common.settings import ServiceSettings
from services.dr_checker import postgres


class ReplayError(Exception):
    """The business-event topic cannot be read completely; replaying part of it would lose orders silently."""


@dataclass
class ReplayReport:
    seen: int = 0
    replayed: list[str] = field(default_factory=list)
    already_present: int = 0
    not_replayable: list[dict[str, str]] = field(default_factory=list)

    def as_evidence(self) -> dict[str, Any]:
        return {"orders_in_topic": self.seen, "replayed": len(self.replayed), "already_present": self.already_present,
                "replayed_order_ids": self.replayed, "not_replayable": self.not_replayable}


async def placed_orders(settings: ServiceSettings, environment: str, since: datetime) -> list[OrderPlaced]:
    """Every order.placed of `environment` from `since` up to the end of the topic as it is now."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        # load the cluster metadata first: without it the topic's partitions are not known yet
        await consumer._client.force_metadata_update()
        known = consumer.partitions_for_topic(topics.SHOP_EVENTS)
        if not known:
            raise ReplayError(f"topic {topics.SHOP_EVENTS} has no partitions in the cluster metadata")
        partitions = [TopicPartition(topics.SHOP_EVENTS, p) for p in known]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
        pending = {}
        for tp in partitions:
            start = starts[tp].offset if starts.get(tp) is not None else ends[tp]
            if start < ends[tp]:
                consumer.seek(tp, start)
                pending[tp] = ends[tp]
        orders: list[OrderPlaced] = []
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= pending.get(tp, 0):
                        continue
                    try:
                        env = decode(record.headers, record.value)
                    except ContractError:
                        continue
                    if isinstance(env.data, OrderPlaced) and env.data.environment == environment \
                            and env.data.order_id:
                        orders.append(env.data)
                if records and records[-1].offset >= pending[tp] - 1:
                    del pending[tp]
        return orders
    finally:
        await consumer.stop()


async def replay(conn: asyncpg.Connection, orders: list[OrderPlaced]) -> ReplayReport:
    report = ReplayReport(seen=len(orders))
    columns = {r["column_name"] for r in await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'")}
    for order in orders:
        if await conn.fetchval("SELECT 1 FROM orders WHERE id = $1", uuid.UUID(order.order_id)):
            report.already_present += 1
            continue
        missing = [f for f in ("items", "customer", "payment_ref") if getattr(order, f) in (None, [])]
        if missing:
            report.not_replayable.append({"order_id": order.order_id, "tenant": order.tenant,
                                          "reason": f"event lacks {', '.join(missing)}"})
            continue
        try:
            async with conn.transaction():
                await _insert(conn, order, columns)
            report.replayed.append(order.order_id)
        except (asyncpg.PostgresError, KeyError, ValueError) as exc:
            report.not_replayable.append({"order_id": order.order_id, "tenant": order.tenant,
                                          "reason": f"{type(exc).__name__}: {exc}"})
    return report


async def _insert(conn: asyncpg.Connection, order: OrderPlaced, columns: set[str]) -> None:
    customer_id = await conn.fetchval(
        "INSERT INTO customers (id, tenant, email) VALUES ($1, $2, $3) ON CONFLICT (tenant, email)"
        " DO UPDATE SET email = EXCLUDED.email RETURNING id", uuid.uuid4(), order.tenant, order.customer)
    items = [{"sku": i["sku"], "qty": int(i["qty"])} for i in order.items or []]
    cart_id = uuid.uuid4()
    await conn.execute("INSERT INTO carts (id, tenant, items, status) VALUES ($1, $2, $3, 'checked_out')",
                       cart_id, order.tenant, json.dumps(items))
    values: dict[str, Any] = {"id": uuid.UUID(order.order_id), "tenant": order.tenant, "version": order.version,
                              "environment": order.environment, "customer_id": customer_id, "cart_id": cart_id,
                              "amount_cents": order.amount_cents, "currency": order.currency, "status": "confirmed"}
    if order.placed_at is not None:
        values["created_at"] = order.placed_at
    optional = {"tax_cents": order.tax_cents, "region": order.region,
                "lines": json.dumps(order.items) if order.items else None}
    values |= {name: value for name, value in optional.items() if name in columns and value is not None}
    names = list(values)
    await conn.execute(f"INSERT INTO orders ({', '.join(names)}) VALUES "
                       f"({', '.join(f'${i + 1}' for i in range(len(names)))})", *values.values())
    await conn.execute("INSERT INTO payments (order_id, auth_code, amount_cents) VALUES ($1, $2, $3)",
                       values["id"], order.payment_ref, order.amount_cents)
    for item in sorted(items, key=lambda i: i["sku"]):
        await conn.execute("UPDATE inventory SET quantity = quantity - $2 WHERE sku = $1", item["sku"], item["qty"])
    # A replayed order still has to reach the ERP: queue its export (the ERP ignores a duplicate delivery).
    if await conn.fetchval("SELECT to_regclass('erp_exports') IS NOT NULL"):
        await conn.execute("INSERT INTO erp_exports (order_id, tenant, version) VALUES ($1, $2, $3)"
                           " ON CONFLICT DO NOTHING", values["id"], order.tenant, order.version)


async def run(settings: ServiceSettings, database: str, environment: str, since: datetime) -> ReplayReport:
    orders = await placed_orders(settings, environment, since)
    conn = await asyncpg.connect(postgres.dsn_for(settings.database_url, database))
    try:
        return await replay(conn, orders)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.rollback.replay", description=__doc__.splitlines()[0])
    parser.add_argument("--since", type=datetime.fromisoformat, required=True)
    parser.add_argument("--environment", default="production")
    parser.add_argument("--database", default="shop")
    args = parser.parse_args()
    report = asyncio.run(run(ServiceSettings(), args.database, args.environment, args.since))
    print(json.dumps(report.as_evidence(), indent=2))


if __name__ == "__main__":
    main()
