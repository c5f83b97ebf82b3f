"""The core verifier's business-event ingest with several instances in one consumer group, on real Kafka and
PostgreSQL (the verifier's own role): a window may close only once every partition of the topic is ingested past
its end, so an instance that is behind on its partitions holds the other instances' watermark back."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka.admin import NewTopic

from contracts.cloudevents import Envelope, encode
from contracts.events import CheckoutSucceeded
from releasegate_runtime import bus_admin, db
from releasegate_runtime.kafka import client_options
from services.verifier.adapters.ingest import BusinessEventIngest
from services.verifier.adapters.store import KpiStore
from tests.support.services import REPO, as_principal, wait_until

pytestmark = pytest.mark.integration
TIMEOUT = 60.0


class WatchedStore:
    """The real store; says when its instance first recorded a watermark, and can hold its next batch of events
    (as an instance stalled on a slow insert, or a paused process, would be)."""

    def __init__(self, store: KpiStore, *, hold: bool = False) -> None:
        self._store, self._hold = store, hold
        self.wrote_watermark, self.holding, self.release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def add_business_events(self, rows: list[tuple]) -> None:
        if self._hold:
            self.holding.set()
            await self.release.wait()
        await self._store.add_business_events(rows)

    async def caught_up(self, topic: str, partitions: list[int]) -> datetime:
        at = await self._store.caught_up(topic, partitions)
        self.wrote_watermark.set()
        return at

    async def ingested_until(self, topic: str, partitions: int) -> datetime | None:
        return await self._store.ingested_until(topic, partitions)


@pytest.fixture
async def two_partitions(settings, pool):
    admin = bus_admin.admin_client(settings.kafka_bootstrap, settings.secrets_dir, settings.kafka_ca_file)
    name = f"it-ingest-{uuid.uuid4().hex[:10]}"
    admin.create_topics([NewTopic(name, 2, 1)])[name].result(timeout=30)
    try:
        yield name
    finally:
        admin.delete_topics([name])[name].result(timeout=30)
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM ingest_watermarks WHERE topic = $1", name)


@pytest.fixture
async def verifier_pool(settings, pool):  # `pool` applied the schema and grants
    p = await db.create_pool(settings.for_principal("verifier").database_url, max_size=4)
    yield p
    await p.close()


def checkout(tenant: str) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    event = CheckoutSucceeded(
        version="v2",
        environment="production",
        tenant=tenant,
        instance="production-s1-v2",
        checkout_id=str(uuid.uuid4()),
        amount_cents=1000,
        currency="USD",
    )
    return encode(Envelope.new(event, "shop/production/production-s1-v2", tenant=tenant))


async def test_an_instance_behind_on_its_partitions_holds_back_every_instances_watermark(
    settings, verifier_pool, two_partitions
):
    kafka = client_options(as_principal(settings, "admin"))
    group = f"it-ingest-{uuid.uuid4().hex[:10]}"

    async def no_dead_letters(record, reason: str, error_type: str) -> None:
        raise AssertionError(f"a valid event was dead-lettered: {reason}")

    stores = {"a": WatchedStore(KpiStore(verifier_pool)), "b": WatchedStore(KpiStore(verifier_pool), hold=True)}
    ingests = {
        n: BusinessEventIngest(kafka, s, no_dead_letters, topic=two_partitions, group=group)  # type: ignore[arg-type]
        for n, s in stores.items()
    }
    tasks = [asyncio.create_task(ingests["a"].run())]
    await asyncio.wait_for(stores["a"].wrote_watermark.wait(), TIMEOUT)
    tasks.append(asyncio.create_task(ingests["b"].run()))
    producer = AIOKafkaProducer(**kafka, acks="all")
    await producer.start()
    try:
        await asyncio.wait_for(stores["b"].wrote_watermark.wait(), TIMEOUT)  # b was given a partition
        for partition in (0, 1):
            key, value, headers = checkout(f"t{partition}")
            await producer.send_and_wait(two_partitions, value, key=key, headers=headers, partition=partition)
        await asyncio.wait_for(stores["b"].holding.wait(), TIMEOUT)  # b fetched its event and is stuck storing it
        held_at = datetime.now(UTC)

        async def a_recorded_its_partition_since() -> bool:
            async with verifier_pool.acquire() as conn:
                newest = await conn.fetchval(
                    "SELECT max(caught_up_at) FROM ingest_watermarks WHERE topic = $1", two_partitions
                )
            return newest is not None and newest > held_at

        await wait_until(a_recorded_its_partition_since, TIMEOUT, "a to ingest its partition after b stalled")
        assert ingests["a"].caught_up_at is not None and ingests["a"].caught_up_at < held_at, (
            "a's watermark moved past events b has not stored"
        )
        stores["b"].release.set()

        async def a_sees_every_partition_ingested() -> bool:
            return ingests["a"].caught_up_at is not None and ingests["a"].caught_up_at > held_at

        await wait_until(a_sees_every_partition_ingested, TIMEOUT, "the watermark to move once b stored its event")
    finally:
        await producer.stop()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with verifier_pool.acquire() as conn:
            await conn.execute("DELETE FROM business_events WHERE tenant = ANY($1::text[])", ["t0", "t1"])


# The killed instance, as its own process: it ingests until it has written its partitions' watermark, says so,
# and waits to be killed (a SIGKILL sends no LeaveGroup: the group keeps the member until its session expires).
KILLED_INGEST = """
import asyncio, sys
from releasegate_runtime import db
from releasegate_runtime.kafka import client_options
from releasegate_runtime.settings import ServiceSettings
from services.verifier.adapters.ingest import BusinessEventIngest
from services.verifier.adapters.store import KpiStore

class Announcing(KpiStore):
    async def caught_up(self, topic, partitions):
        at = await super().caught_up(topic, partitions)
        print("caught up", flush=True)
        return at

async def main(topic, group, instance, session_ms):
    settings = ServiceSettings()
    pool = await db.create_pool(settings.for_principal("verifier").database_url, max_size=2)
    async def refuse(record, reason, error_type):
        raise AssertionError(reason)
    kafka = client_options(settings.model_copy(update={"principal": "admin"}))
    ingest = BusinessEventIngest(kafka, Announcing(pool), refuse, topic=topic, group=group,
                                 instance=instance or None, session_timeout_ms=int(session_ms))
    await ingest.run()

asyncio.run(main(*sys.argv[1:]))
"""
SESSION_MS = 60_000  # the killed member's session: a restart that had to wait for it would take a minute
RESTARTED_WITHIN = 30.0  # the bound on the restarted instance, half the session: not a measurement


async def test_a_restarted_instance_takes_back_its_partitions_without_waiting_for_the_killed_ones_session(
    settings, verifier_pool, two_partitions
):
    """A killed verifier stops ingesting the shop's events, and every open window waits for them. Restarted, it
    names itself as before (its static group membership) and takes back its partitions at once: were it a new
    member, the group would wait for the killed one's session to expire before giving it any."""
    group, instance = f"it-ingest-{uuid.uuid4().hex[:10]}", f"it-host-{uuid.uuid4().hex[:6]}"
    killed = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_INGEST, two_partitions, group, instance, str(SESSION_MS),
        cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert killed.stdout is not None
        line = await asyncio.wait_for(killed.stdout.readline(), TIMEOUT)
        assert line.strip() == b"caught up", f"the first instance never ingested its partitions: {line!r}"
    finally:
        killed.kill()
        await killed.wait()

    async def no_dead_letters(record, reason: str, error_type: str) -> None:
        raise AssertionError(f"a valid event was dead-lettered: {reason}")

    restarted = BusinessEventIngest(
        client_options(as_principal(settings, "admin")),
        KpiStore(verifier_pool),
        no_dead_letters,
        topic=two_partitions,
        group=group,
        instance=instance,
        session_timeout_ms=SESSION_MS,
    )
    task = asyncio.create_task(restarted.run())

    async def sees_both_partitions_ingested() -> bool:
        return restarted.caught_up_at is not None

    try:
        await wait_until(
            sees_both_partitions_ingested, RESTARTED_WITHIN, "the restarted instance to ingest its partitions again"
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
