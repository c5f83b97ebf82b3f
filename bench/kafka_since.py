"""Read what the bus carried since a moment, for the benchmarks: every partition of the chosen topics, from the
first record at or after `since_ms` up to the end offset each had when asked. Read with the broker's admin
credential: no service principal may read both results and commands (least privilege holds for the services,
the benchmark is an operator's tool)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from releasegate_runtime import bus_admin
from releasegate_runtime.kafka import client_options
from releasegate_runtime.settings import ServiceSettings


async def read_since(
    settings: ServiceSettings, chosen: Callable[[str], bool], since_ms: int, note: Callable[[Any], None]
) -> None:
    """`note(record)` for each record of the topics `chosen` accepts (as they exist now, with every partition
    they have now), in partition order within each partition."""
    consumer = AIOKafkaConsumer(
        **client_options(settings.model_copy(update={"principal": "admin"})), enable_auto_commit=False
    )
    admin = bus_admin.admin_client(settings.kafka_bootstrap, settings.secrets_dir, settings.kafka_ca_file)
    listed = (await asyncio.to_thread(admin.list_topics, timeout=30)).topics
    tps = [TopicPartition(t, p) for t in sorted(listed) if chosen(t) for p in sorted(listed[t].partitions)]
    await consumer.start()
    try:
        consumer.assign(tps)
        starts = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp].offset if starts.get(tp) else ends[tp])
        todo = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    note(record)
            todo = {tp for tp in todo if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
