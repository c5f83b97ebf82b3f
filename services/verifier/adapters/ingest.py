"""Ingests the shop's business events from Kafka in batches (bulk, idempotent inserts, commit after) and keeps
a watermark: the last moment by which every partition of the topic had been ingested, so a verdict never closes a
window whose events are still in flight. With several verifier instances each ingests the partitions it was
given; each records its own partitions' watermark in PostgreSQL and reads back the topic's (the oldest), so an
instance that is behind, or gone until its partitions move, holds every instance's windows open.

A process that names itself (`instance`, stable across its restarts) is a static member of the group (KIP-345):
killed and started again, it takes back its partitions at once, where a new member would wait for the killed
one's session to expire (10 s) and a rebalance, and every open window would wait with it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer

from contracts import topics
from contracts.cloudevents import ContractError, decode
from contracts.events import ShopEvent
from services.verifier.adapters.store import KpiStore

DeadLetter = Callable[[Any, str, str], Awaitable[None]]
GROUP = "releasegate-verifier-ingest"


FETCH_WAIT_MS = 100  # a partition left out of the fetch in flight waits at most this long (see releasegate_runtime)


class BusinessEventIngest:
    def __init__(
        self,
        kafka: dict[str, Any],
        store: KpiStore,
        dead_letter: DeadLetter,
        on_ingested: Callable[[], None] = lambda: None,
        *,
        topic: str = topics.SHOP_EVENTS,
        group: str = GROUP,
        instance: str | None = None,
        session_timeout_ms: int = 10_000,
    ) -> None:
        """`on_ingested`: called after each batch of business events is stored (the looks judge it at once)."""
        self._kafka, self._store, self._dead_letter = kafka, store, dead_letter
        self._on_ingested = on_ingested
        self._topic, self._group, self._instance = topic, group, instance
        self._session_timeout_ms = session_timeout_ms
        self.caught_up_at: datetime | None = None  # every partition ingested up to then (any instance's)

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            self._topic,
            **self._kafka,
            group_id=self._group,
            group_instance_id=self._instance,
            session_timeout_ms=self._session_timeout_ms,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                rows = []
                for records in batches.values():
                    for record in records:
                        try:
                            env = decode(record.headers, record.value)
                            if not isinstance(env.data, ShopEvent):
                                raise ContractError(f"{env.type} is not a shop business event")
                        except ContractError as exc:
                            await self._dead_letter(record, str(exc), "ContractError")
                            continue
                        except Exception as exc:  # decode promises ContractError; never let one record stall
                            await self._dead_letter(record, f"cannot decode: {type(exc).__name__}", type(exc).__name__)
                            continue
                        e = env.data
                        rows.append(
                            (env.id, env.type, e.environment, e.version, e.tenant, env.time, e.reason, e.latency_ms)
                        )
                if rows:
                    await self._store.add_business_events(rows)
                    self._on_ingested()
                if batches:
                    await consumer.commit()
                mine = sorted(tp.partition for tp in consumer.assignment())
                if mine and (not batches or await _at_end(consumer)):
                    await self._store.caught_up(self._topic, mine)
                partitions = consumer.partitions_for_topic(self._topic)
                if partitions:
                    self.caught_up_at = await self._store.ingested_until(self._topic, len(partitions))
        finally:
            await consumer.stop()


async def _at_end(consumer: AIOKafkaConsumer) -> bool:
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True
