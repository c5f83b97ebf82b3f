"""Business events of the storefront, as CloudEvents 1.0 in binary mode, staged in the shop database's outbox.

An event is built completely (id, time, headers, value) when it happens; the outbox relay later sends those exact
bytes, so what reaches `shop.events` does not depend on when, or by which instance, it was relayed."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from storefront import outbox
from storefront.outbox import OutgoingEvent

CHECKOUT_ATTEMPTED = "shop.checkout.attempted.v1"
CHECKOUT_SUCCEEDED = "shop.checkout.succeeded.v1"
CHECKOUT_FAILED = "shop.checkout.failed.v1"
PAYMENT_AUTHORIZED = "shop.payment.authorized.v1"
PAYMENT_DECLINED = "shop.payment.declined.v1"
ORDER_PLACED = "shop.order.placed.v1"
INVENTORY_RESERVED = "shop.inventory.reserved.v1"
INVENTORY_CONFIRMED = "shop.inventory.confirmed.v1"


@dataclass(frozen=True)
class Checkout:
    """What every event of one checkout carries; `order_id` is filled in once the order is placed."""

    tenant: str
    checkout_id: str
    amount_cents: int
    currency: str
    order_id: str | None = None


class EventPublisher:
    """Builds the storefront's events and stages them in the outbox (never waits for Kafka)."""

    def __init__(self, pool: asyncpg.Pool, topic: str, *, version: str, environment: str, instance: str) -> None:
        self._pool = pool
        self._topic = topic
        self._version = version
        self._environment = environment
        self._instance = instance
        self._source = f"shop/{environment}/{instance}"

    def build(
        self, event_type: str, checkout: Checkout, *, latency_ms: float, reason: str | None = None, **fields: Any
    ) -> OutgoingEvent:
        """One event as it will be on the topic; `fields` are the event type's own fields."""
        data: dict[str, Any] = {
            "version": self._version,
            "environment": self._environment,
            "tenant": checkout.tenant,
            "instance": self._instance,
            "checkout_id": checkout.checkout_id,
            "order_id": checkout.order_id,
            "amount_cents": checkout.amount_cents,
            "currency": checkout.currency,
            "reason": reason,
            "latency_ms": round(latency_ms, 3),
            **fields,
        }
        headers = (
            ("ce_specversion", b"1.0"),
            ("ce_id", str(uuid.uuid4()).encode()),
            ("ce_source", self._source.encode()),
            ("ce_type", event_type.encode()),
            ("ce_time", datetime.now(UTC).isoformat().replace("+00:00", "Z").encode()),
            ("ce_tenant", checkout.tenant.encode()),
            ("content-type", b"application/json"),
        )
        return OutgoingEvent(
            topic=self._topic, key=checkout.tenant.encode(), value=json.dumps(data).encode(), headers=headers
        )

    async def publish(
        self, event_type: str, checkout: Checkout, *, latency_ms: float, reason: str | None = None, **fields: Any
    ) -> None:
        """Stage an event that describes no change of the shop's own data, in a transaction of its own."""
        await outbox.enqueue(
            self._pool, [self.build(event_type, checkout, latency_ms=latency_ms, reason=reason, **fields)]
        )
