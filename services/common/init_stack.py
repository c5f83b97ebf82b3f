"""Prepares a running stack for releasegate: Kafka topics (partitioned by release id) and the PostgreSQL
schema. Idempotent: `python -m services.common.init_stack`."""
from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from contracts import topics
from services.common import db
from services.common.settings import ServiceSettings

PARTITIONS = 3


async def create_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics.ALL if t not in existing]
        if missing:
            await admin.create_topics([NewTopic(t, num_partitions=PARTITIONS, replication_factor=1) for t in missing])
        return missing
    finally:
        await admin.close()


async def init(settings: ServiceSettings) -> None:
    created = await create_topics(settings.kafka_bootstrap)
    pool = await db.create_pool(settings.database_url)
    try:
        await db.apply_schema(pool)
    finally:
        await pool.close()
    print(f"topics created: {', '.join(created) or 'none (all present)'}; schema applied")


if __name__ == "__main__":
    asyncio.run(init(ServiceSettings()))
