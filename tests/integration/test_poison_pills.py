"""No poison pill stalls a partition, on the real broker and database with the coordinator as its own OS process:
a record FastStream could not even parse is dead-lettered once, a record whose dead letter the broker refuses is
parked in PostgreSQL, and in both cases the next record on the same partition is handled. The coordinator's
catch-up barrier can read what it needs with the coordinator's own credentials."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import CandidateSubmitted, DeadLetter
from releasegate_cli.probes import TopicTail
from releasegate_runtime import bus_admin
from releasegate_runtime.catch_up import CatchUpBarrier, KafkaOffsets
from releasegate_runtime.kafka import Producer, client_options
from tests.support.releases import candidate, saga_state
from tests.support.services import Service, as_principal, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def coordinator(catalog_dir):
    svc = Service("coordinator", {"RG_CATALOG_DIR": str(catalog_dir)}).start()
    yield svc
    svc.stop()


@pytest.fixture
async def producer(settings):
    """Upstream CI: it may write candidates and nothing else."""
    p = Producer(as_principal(settings, "ci"), "test-poison")
    await p.start()
    yield p
    await p.stop()


def candidate_headers(event_id: str) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", b"test"),
        ("ce_type", CandidateSubmitted.event_type.encode()),
        ("content-type", b"application/json"),
    ]


@pytest.fixture
def tiny_dead_letter_topic(settings):
    """The dead-letter topic refuses records over 1 KiB for the test, as it would refuse a dead letter over its
    limit; set back afterwards."""
    admin = bus_admin.admin_client(settings.kafka_bootstrap, settings.secrets_dir, settings.kafka_ca_file)
    resource = ConfigResource("topic", topics.DEADLETTER)
    before = admin.describe_configs([resource])[resource].result(timeout=10)["max.message.bytes"]

    def alter(op: AlterConfigOpType, value: str | None) -> None:
        entry = ConfigEntry("max.message.bytes", value, incremental_operation=op)
        change = ConfigResource("topic", topics.DEADLETTER, incremental_configs=[entry])
        admin.incremental_alter_configs([change])[change].result(timeout=10)

    alter(AlterConfigOpType.SET, "1024")
    try:
        yield
    finally:
        if ConfigSource(before.source) is ConfigSource.DYNAMIC_TOPIC_CONFIG:  # the topic had its own value
            alter(AlterConfigOpType.SET, before.value)
        else:
            alter(AlterConfigOpType.DELETE, None)


class TestPoisonPills:
    async def test_a_deeply_nested_record_is_dead_lettered_once_and_the_next_on_its_partition_handled(
        self, settings, pool, producer, coordinator
    ):
        good = candidate()
        tail = await TopicTail(as_principal(settings, "ops"), topics.DEADLETTER).start()
        try:
            # same key, so same partition: the good record waits behind the bad one
            await producer.send(
                topics.CANDIDATES,
                good.release_id.encode(),
                b"[" * 60_000 + b"]" * 60_000,
                candidate_headers(f"deep-{uuid.uuid4().hex}"),
            )
            await producer.send_envelope(topics.CANDIDATES, Envelope.new(good, "test", good.release_id))
            assert await wait_until(lambda: saga_state(pool, good.release_id), 60, "the record after the bad one")
            letters = [
                e.data for e in await tail.collect() if isinstance(e.data, DeadLetter) and e.data.key == good.release_id
            ]
        finally:
            await tail.stop()
        assert len(letters) == 1, letters
        assert letters[0].original_value_bytes == 120_000 and letters[0].truncated

    async def test_a_record_whose_dead_letter_the_broker_refuses_is_parked_and_the_next_one_handled(
        self, settings, pool, producer, coordinator, tiny_dead_letter_topic
    ):
        good = candidate()
        key = good.release_id
        await producer.send(
            topics.CANDIDATES, key.encode(), b"{broken" + b" " * 4096, candidate_headers(f"broken-{uuid.uuid4().hex}")
        )
        await producer.send_envelope(topics.CANDIDATES, Envelope.new(good, "test", good.release_id))
        assert await wait_until(lambda: saga_state(pool, good.release_id), 90, "the record after the parked one")

        async def parked():
            async with pool.acquire() as conn:
                return await conn.fetchrow(
                    "SELECT * FROM parked_records WHERE consumer_group = $1 AND key = $2",
                    "releasegate-coordinator",
                    key,
                )

        row = await wait_until(parked, 10, "the parked record")
        assert row["topic"] == topics.CANDIDATES and "not valid JSON" in row["reason"]
        assert "MessageSizeTooLarge" in row["dead_letter_error"] or "TooLarge" in row["dead_letter_error"]
        assert row["value_bytes"] == 4096 + 7


class TestCatchUpBarrier:
    async def test_the_coordinator_may_read_the_offsets_its_deadlines_wait_for(
        self, settings, producer, coordinator, pool
    ):
        c = candidate()
        await producer.send_envelope(topics.CANDIDATES, Envelope.new(c, "test", c.release_id))
        port = KafkaOffsets(client_options(as_principal(settings, "coordinator")))
        barrier = CatchUpBarrier(port, "releasegate-coordinator", [topics.CANDIDATES], timeout=60)
        assert await asyncio.wait_for(barrier.wait(), 90) is True
        assert await saga_state(pool, c.release_id) is not None  # caught up means handled
