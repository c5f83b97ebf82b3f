"""Business events of the storefront on Kafka, as CloudEvents 1.0 in binary mode."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

CHECKOUT_ATTEMPTED = "shop.checkout.attempted.v1"
CHECKOUT_SUCCEEDED = "shop.checkout.succeeded.v1"
CHECKOUT_FAILED = "shop.checkout.failed.v1"
PAYMENT_AUTHORIZED = "shop.payment.authorized.v1"
PAYMENT_DECLINED = "shop.payment.declined.v1"
ORDER_PLACED = "shop.order.placed.v1"
INVENTORY_RESERVED = "shop.inventory.reserved.v1"
INVENTORY_CONFIRMED = "shop.inventory.confirmed.v1"


@dataclass
class Checkout:
    """What every event of one checkout carries; `order_id` is filled in once the order is placed."""

    tenant: str
    checkout_id: str
    amount_cents: int
    currency: str
    order_id: str | None = None


class EventPublisher:
    def __init__(self, producer: AIOKafkaProducer, topic: str, *, version: str, environment: str,
                 instance: str) -> None:
        self._producer = producer
        self._topic = topic
        self._version = version
        self._environment = environment
        self._instance = instance
        self._source = f"shop/{environment}/{instance}"

    async def publish(self, event_type: str, checkout: Checkout, *, latency_ms: float, reason: str | None = None,
                      **fields: Any) -> None:
        """Send one event and wait for the broker's acknowledgement; `fields` are the event type's own fields."""
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
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", str(uuid.uuid4()).encode()),
            ("ce_source", self._source.encode()),
            ("ce_type", event_type.encode()),
            ("ce_time", datetime.now(UTC).isoformat().replace("+00:00", "Z").encode()),
            ("ce_tenant", checkout.tenant.encode()),
            ("content-type", b"application/json"),
        ]
        await self._producer.send_and_wait(self._topic, json.dumps(data).encode(), key=checkout.tenant.encode(),
                                           headers=headers)
