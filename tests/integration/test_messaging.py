"""Outbox relay, idempotent consumption and dead-lettering against the real Kafka and PostgreSQL, with the
coordinator as its own OS process."""

from __future__ import annotations

import uuid

import httpx
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from contracts import topics
from contracts.cloudevents import Envelope, encode
from contracts.events import AlertRaised, CandidateSubmitted, DeadLetter, Severity
from releasegate_cli.probes import TopicTail
from releasegate_runtime import outbox
from releasegate_runtime.kafka import Producer, client_options
from releasegate_runtime.outbox import Relay
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
    p = Producer(as_principal(settings, "ci"), "test")
    await p.start()
    yield p
    await p.stop()


class TestTransactionalOutbox:
    async def test_relay_publishes_committed_events_and_never_rolled_back_ones(self, settings, pool):
        producer = Producer(as_principal(settings, "coordinator"), "test-relay")  # the relay of an alert writer
        await producer.start()
        name = f"it-relay-{uuid.uuid4().hex[:8]}"
        kept = Envelope.new(
            AlertRaised(release_id="r-kept", service="s", severity=Severity.INFO, title="kept", detail=name),
            name,
            "r-kept",
        )
        lost = Envelope.new(
            AlertRaised(release_id="r-lost", service="s", severity=Severity.INFO, title="lost", detail=name),
            name,
            "r-lost",
        )
        async with pool.acquire() as conn:
            async with conn.transaction():
                await outbox.add(conn, name, topics.ALERTS, kept)
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await outbox.add(conn, name, topics.ALERTS, lost)
                    raise RuntimeError("handler failed after staging its event")
        tail = await TopicTail(as_principal(settings, "ops"), topics.ALERTS).start()
        try:
            assert await Relay(pool, name, producer.send).publish_pending() == 1
            got = await tail.wait_for(lambda e: e.id == kept.id, timeout=20)
            assert got is not None and got.data.title == "kept"
            assert await tail.wait_for(lambda e: e.id == lost.id, timeout=2) is None
        finally:
            await tail.stop()
            await producer.stop()
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT published_at IS NOT NULL FROM outbox WHERE event_id = $1", kept.id)
            assert await conn.fetchval("SELECT count(*) FROM outbox WHERE event_id = $1", lost.id) == 0


class TestIdempotentCoordinator:
    async def test_redelivered_candidate_has_no_second_effect(self, settings, pool, producer, coordinator):
        c = candidate()
        record = encode(Envelope.new(c, "test", c.release_id))
        await producer.send(topics.CANDIDATES, *record)
        assert await wait_until(lambda: saga_state(pool, c.release_id), 60, "the saga") is not None
        dup = await producer.send(topics.CANDIDATES, *record)  # the same event id again: a redelivery
        await wait_until(lambda: _committed_past(settings, dup), 60, "the coordinator to handle the duplicate")
        async with pool.acquire() as conn:
            gates = await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE key = $1 AND topic = $2", c.release_id, topics.GATE_COMMANDS
            )
            submitted = await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE release_id = $1 AND reason LIKE 'candidate % submitted'",
                c.release_id,
            )
        assert (gates, submitted) == (1, 1)

    async def test_commands_continue_the_trace_of_the_submitted_candidate(self, pool, producer, coordinator):
        c = candidate()
        trace_id = uuid.uuid4().hex
        await producer.send_envelope(
            topics.CANDIDATES,
            Envelope.new(c, "test", c.release_id, trace={"traceparent": f"00-{trace_id}-{'1' * 16}-01"}),
        )

        async def gate_command_headers():
            async with pool.acquire() as conn:
                return await conn.fetchval(
                    "SELECT headers FROM outbox WHERE key = $1 AND topic = $2", c.release_id, topics.GATE_COMMANDS
                )

        headers = await wait_until(gate_command_headers, 60, "the gate command")
        assert headers["traceparent"].split("-")[1] == trace_id
        assert headers["ce_subject"] == c.release_id and headers["ce_source"] == "releasegate/coordinator"

    async def test_unknown_service_is_rejected_with_the_reason(self, pool, producer, coordinator):
        c = candidate(service="no-such-service")
        await producer.send_envelope(topics.CANDIDATES, Envelope.new(c, "test", c.release_id))
        await wait_until(lambda: _is(pool, c.release_id, "rejected"), 60, "the rejection")
        async with pool.acquire() as conn:
            reason = await conn.fetchval(
                "SELECT reason FROM audit_log WHERE release_id = $1 ORDER BY id DESC LIMIT 1", c.release_id
            )
        assert "unknown service 'no-such-service'" in reason


class TestDeadLetters:
    @pytest.mark.parametrize(
        "headers,value,reason",
        [
            (
                [
                    ("ce_specversion", b"1.0"),
                    ("ce_id", b"x"),
                    ("ce_source", b"t"),
                    ("ce_type", CandidateSubmitted.event_type.encode()),
                ],
                b"{broken",
                "not valid JSON",
            ),
            (
                [
                    ("ce_specversion", b"1.0"),
                    ("ce_id", b"y"),
                    ("ce_source", b"t"),
                    ("ce_type", b"dev.releasegate.candidate.submitted.v99"),
                ],
                b"{}",
                "unknown event type or schema version",
            ),
            ([], b'{"service": "shop"}', "ce_specversion"),
        ],
    )
    async def test_bad_record_is_dead_lettered_and_the_next_one_processed(
        self, settings, pool, producer, coordinator, headers, value, reason
    ):
        key = f"bad-{uuid.uuid4().hex[:8]}"
        tail = await TopicTail(as_principal(settings, "ops"), topics.DEADLETTER).start()
        try:
            await producer.send(topics.CANDIDATES, key.encode(), value, headers)
            good = candidate()
            await producer.send_envelope(topics.CANDIDATES, Envelope.new(good, "test", good.release_id))
            letter = await tail.wait_for(lambda e: isinstance(e.data, DeadLetter) and e.data.key == key, 60)
        finally:
            await tail.stop()
        assert letter is not None, "no dead letter"
        assert reason in letter.data.reason
        assert (letter.data.source_topic, letter.data.consumer) == (topics.CANDIDATES, "releasegate-coordinator")
        assert await wait_until(lambda: saga_state(pool, good.release_id), 60, "the valid candidate after it")


class TestBatches:
    """The coordinator decides what one fetch brought in one transaction. A record among them that must be refused
    undoes that transaction, and the batch is handled again one record at a time: the refused record alone is
    dead-lettered, every other record takes effect once."""

    async def test_a_refused_record_in_a_batch_is_dead_lettered_alone_and_the_others_take_effect_once(
        self, settings, pool, producer, coordinator, catalog_dir
    ):
        existing = candidate()
        await producer.send_envelope(topics.CANDIDATES, Envelope.new(existing, "test", existing.release_id))
        assert await wait_until(lambda: saga_state(pool, existing.release_id), 60, "the first candidate")
        before = await _saga_and_audit(pool, existing.release_id)
        a, b = candidate(), candidate()
        first = Envelope.new(a, "test", a.release_id)
        again = Envelope.new(existing, "test", existing.release_id)  # a new submission with a used release id
        coordinator.stop()  # the records wait on the topic, and come to the next coordinator in one fetch
        own = Service("coordinator", {"RG_CATALOG_DIR": str(catalog_dir), "RG_HEALTH_PORT": str(HEALTH_PORT)})
        tail = await TopicTail(as_principal(settings, "ops"), topics.DEADLETTER).start()
        try:
            for envelope in (first, again, Envelope.new(b, "test", b.release_id), first):  # `first` redelivered
                await producer.send_envelope(topics.CANDIDATES, envelope)
            own.start()
            letter = await tail.wait_for(lambda e: isinstance(e.data, DeadLetter) and e.data.key == again.subject, 60)
            for rid in (a.release_id, b.release_id):
                assert await wait_until(lambda rid=rid: saga_state(pool, rid), 60, f"release {rid} started")
            fallbacks = await _metric(HEALTH_PORT, "releasegate_batch_fallbacks_total")
        finally:
            await tail.stop()
            own.stop()
            coordinator.start()
        assert letter is not None and "already exists" in letter.data.reason
        assert fallbacks >= 1, "the refused record was not decided in a batch"
        assert await _saga_and_audit(pool, existing.release_id) == before, "the refused submission changed the saga"
        async with pool.acquire() as conn:
            started = await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE release_id = $1 AND reason LIKE 'candidate % submitted'",
                a.release_id,
            )
        assert started == 1, "the redelivered candidate took effect twice"


HEALTH_PORT = 18695


async def _saga_and_audit(pool, rid) -> tuple:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT state, revision FROM sagas WHERE release_id = $1", rid)
        audit = await conn.fetchval("SELECT count(*) FROM audit_log WHERE release_id = $1", rid)
    return tuple(row), audit


async def _metric(port: int, name: str) -> float:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


async def _committed_past(settings, metadata) -> bool:
    admin = AIOKafkaAdminClient(**client_options(as_principal(settings, "admin")))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets("releasegate-coordinator")
    finally:
        await admin.close()
    committed = offsets.get(TopicPartition(metadata.topic, metadata.partition))
    return committed is not None and committed.offset > metadata.offset


async def _is(pool, rid, state):
    return await saga_state(pool, rid) == state
