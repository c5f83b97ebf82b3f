"""Order replay after a data restore: re-apply every `shop.order.placed` event of an environment since a point in
time to the shop database (customer, cart, order, payment, inventory), idempotently, and list what could not be.

It cannot be wedged: a record that is not a valid order of the shop (undecodable, another source, a bad id, a NUL
byte) is skipped and listed with its partition, offset and reason; reading the topic has a deadline; and before
anything is restored, `check_replayable` proves the topic still holds every event since the backup point.

`python -m services.rollback.replay --since 2026-11-27T10:00:00+00:00 [--environment production] [--service shop]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from contracts import topics
from contracts.cloudevents import ContractError, decode
from contracts.events import OrderPlaced
from contracts.names import NAME, check_name, shown
from releasegate_platform.catalog import Catalog
from releasegate_runtime.kafka import client_options
from releasegate_runtime.settings import ServiceSettings
from services.dr_checker import postgres

READ_SECONDS = 60.0
STOP_SECONDS = 10.0
# Entries of each list kept in the incident report; the totals count them all (the report must fit one record).
LISTED = 100
MAX_QTY = 10_000


class ReplayError(Exception):
    """The business-event topic cannot be read completely; replaying part of it would lose orders silently."""


class InvalidEvent(ValueError):
    """A record on the business-event topic that cannot be a replayable order of the shop."""


class Record(Protocol):
    partition: int
    offset: int
    headers: Any
    value: bytes | None


@dataclass
class Bounded:
    """A list for the incident report: the first LISTED entries, and how many there were."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0

    def add(self, entry: dict[str, Any]) -> None:
        self.total += 1
        if len(self.entries) < LISTED:
            self.entries.append(entry)


@dataclass
class Scan:
    """The topic read from the backup point: the environment's valid orders in topic order, the invalid records."""

    orders: list[OrderPlaced] = field(default_factory=list)
    invalid: Bounded = field(default_factory=Bounded)
    records: int = 0

    def take(self, record: Record, environment: str) -> None:
        self.records += 1
        try:
            order = classify(record.headers, record.value, environment)
        except InvalidEvent as exc:
            self.invalid.add(
                {
                    "topic": topics.SHOP_EVENTS,
                    "partition": record.partition,
                    "offset": record.offset,
                    "reason": str(exc)[:500],
                }
            )
            return
        if order is not None:
            self.orders.append(order)


def classify(headers: Any, value: bytes | None, environment: str) -> OrderPlaced | None:
    """The record's order if it is a replayable `order.placed` of `environment`; None for any other valid shop
    event; InvalidEvent with the reason otherwise. Never raises anything else, whatever the record holds."""
    try:
        envelope = decode(headers, value)
    except ContractError as exc:
        raise InvalidEvent(str(exc)) from None
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:
        raise InvalidEvent(f"cannot be decoded: {type(exc).__name__}") from None
    order = envelope.data
    if not isinstance(order, OrderPlaced) or order.environment != environment:
        return None
    if not envelope.source.startswith(f"shop/{environment}/"):
        raise InvalidEvent(f"order.placed from source {shown(envelope.source)}, not the shop's {environment} instances")
    _check_replayable(order)
    return order


def _check_replayable(order: OrderPlaced) -> None:
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


def retention_gaps(begins: Mapping[int, int], ends: Mapping[int, int], found: Mapping[int, int | None]) -> list[str]:
    """Partitions that may have lost events since the backup point to retention, with why. Per partition:
    `begins`/`ends` its earliest and next offsets, `found` the first offset at or after the backup point (None if
    no retained event is that recent). Complete when nothing was ever deleted (earliest offset 0), or when an
    event older than the backup point is still retained (retention deletes the oldest first)."""
    gaps = []
    for p in sorted(ends):
        begin, first = begins[p], found.get(p)
        if begin == 0:
            continue
        if first is None and begin < ends[p]:
            continue  # every retained event is older than the backup point, so every deleted one is too
        if first is not None and first > begin:
            continue
        gaps.append(
            f"partition {p}: events up to offset {begin} were deleted by retention"
            + (
                " and none is retained"
                if first is None
                else f" and the earliest retained one (offset {begin}) is already after the backup point"
            )
        )
    return gaps


def _require_complete(
    since: datetime, begins: Mapping[int, int], ends: Mapping[int, int], found: Mapping[int, int | None]
) -> None:
    gaps = retention_gaps(begins, ends, found)
    if gaps:
        raise ReplayError(
            f"{topics.SHOP_EVENTS} no longer holds every event since {since.isoformat()}: " + "; ".join(gaps)
        )


class _Topic:
    """The business-event topic, read as the rollback principal (no consumer group, nothing committed)."""

    def __init__(self, settings: ServiceSettings) -> None:
        # auto_offset_reset none: events deleted while they are read are an error, never silently skipped
        self._consumer = AIOKafkaConsumer(
            **client_options(settings),
            enable_auto_commit=False,
            auto_offset_reset="none",
            request_timeout_ms=int(READ_SECONDS * 1000) // 2,
        )
        self.partitions: list[TopicPartition] = []

    async def __aenter__(self) -> _Topic:
        try:
            await self._consumer.start()
            # load the cluster metadata first: without it the topic's partitions are not known yet
            await self._consumer._client.force_metadata_update()
            known = self._consumer.partitions_for_topic(topics.SHOP_EVENTS)
            if not known:
                raise ReplayError(f"topic {topics.SHOP_EVENTS} has no partitions in the cluster metadata")
            self.partitions = [TopicPartition(topics.SHOP_EVENTS, p) for p in sorted(known)]
            self._consumer.assign(self.partitions)
        except BaseException:  # also cancelled at the deadline: the client must not outlive the read
            await self._stop()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        try:
            await asyncio.wait_for(self._consumer.stop(), STOP_SECONDS)
        except TimeoutError:
            pass  # a broker gone away: the client is abandoned, the replay's outcome stands

    async def offsets(self, since: datetime) -> tuple[dict[int, int], dict[int, int], dict[int, int | None]]:
        c, ms = self._consumer, int(since.timestamp() * 1000)
        begins = await c.beginning_offsets(self.partitions)
        ends = await c.end_offsets(self.partitions)
        found = await c.offsets_for_times({tp: ms for tp in self.partitions})
        return (
            {tp.partition: o for tp, o in begins.items()},
            {tp.partition: o for tp, o in ends.items()},
            {tp.partition: (None if f is None else f.offset) for tp, f in found.items()},
        )

    async def scan(self, since: datetime, environment: str) -> Scan:
        begins, ends, found = await self.offsets(since)
        _require_complete(since, begins, ends, found)
        scan, pending = Scan(), {}
        for tp in self.partitions:
            start = ends[tp.partition] if found[tp.partition] is None else found[tp.partition]
            if start < ends[tp.partition]:
                self._consumer.seek(tp, start)
                pending[tp] = ends[tp.partition]
        while pending:
            batches = await self._consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < pending.get(tp, 0):
                        scan.take(record, environment)
            for tp in list(pending):
                # the position, not the last offset seen: control records and gaps have no record of their own
                if await self._consumer.position(tp) >= pending[tp]:
                    del pending[tp]
        return scan


async def _bounded(what: str, coro: Any) -> Any:
    try:
        return await asyncio.wait_for(coro, READ_SECONDS)
    except TimeoutError:
        raise ReplayError(f"{what}: {topics.SHOP_EVENTS} could not be read within {READ_SECONDS:g}s") from None
    except KafkaError as exc:
        raise ReplayError(f"{what}: {topics.SHOP_EVENTS} cannot be read: {type(exc).__name__}: {exc}") from None


async def check_replayable(settings: ServiceSettings, since: datetime) -> dict[str, Any]:
    """Before a restore: ReplayError unless the topic still holds every event since `since` (read-only)."""

    async def check() -> dict[str, Any]:
        async with _Topic(settings) as topic:
            begins, ends, found = await topic.offsets(since)
        _require_complete(since, begins, ends, found)
        return {
            "partitions": len(ends),
            "events_since_backup_point": sum(ends[p] - (ends[p] if found[p] is None else found[p]) for p in ends),
        }

    return await _bounded("checking that every event since the backup point is still there", check())


async def placed_orders(settings: ServiceSettings, environment: str, since: datetime) -> Scan:
    """Every order.placed of `environment` from `since` up to the end of the topic as it is now."""

    async def read() -> Scan:
        async with _Topic(settings) as topic:
            return await topic.scan(since, environment)

    return await _bounded("reading the orders since the backup point", read())


@dataclass
class ReplayReport:
    seen: int = 0
    replayed: list[str] = field(default_factory=list)
    already_present: int = 0
    not_replayable: Bounded = field(default_factory=Bounded)
    invalid_events: Bounded = field(default_factory=Bounded)

    def as_evidence(self) -> dict[str, Any]:
        return {
            "orders_in_topic": self.seen,
            "replayed": len(self.replayed),
            "already_present": self.already_present,
            "replayed_order_ids": self.replayed[:LISTED],
            "not_replayable": self.not_replayable.entries,
            "not_replayable_total": self.not_replayable.total,
            "invalid_events": self.invalid_events.entries,
            "invalid_events_total": self.invalid_events.total,
        }


async def replay(conn: asyncpg.Connection, scan: Scan) -> ReplayReport:
    report = ReplayReport(seen=len(scan.orders), invalid_events=scan.invalid)
    columns = {
        r["column_name"]
        for r in await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'")
    }
    for order in scan.orders:
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


async def _insert(conn: asyncpg.Connection, order: OrderPlaced, columns: set[str]) -> None:
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


async def run(settings: ServiceSettings, database: str, environment: str, since: datetime) -> ReplayReport:
    scan = await placed_orders(settings, environment, since)
    conn = await postgres.connect(settings.database_url, database)
    try:
        return await replay(conn, scan)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.rollback.replay", description=__doc__.splitlines()[0])
    parser.add_argument("--since", type=datetime.fromisoformat, required=True)
    parser.add_argument("--environment", default="production")
    parser.add_argument("--service", default="shop", help="catalog service whose database receives the orders")
    args = parser.parse_args()
    settings = ServiceSettings()
    database = postgres.database_of(Catalog(settings.catalog_dir).get(args.service))
    report = asyncio.run(run(settings, database, check_name("environment", args.environment), args.since))
    print(json.dumps(report.as_evidence(), indent=2))


if __name__ == "__main__":
    main()
