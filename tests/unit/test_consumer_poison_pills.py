"""No record stalls a partition: whatever a record makes fail (decoding, the handler, the dead letter itself), the
consumer ends up moving on, and only a record that neither Kafka nor PostgreSQL would take is redelivered."""

from __future__ import annotations

import hashlib
import json

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.message import KafkaMessage
from faststream.kafka.parser import AioKafkaParser

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import DeadLetter
from releasegate_runtime import dead_letters, kafka
from releasegate_runtime.kafka import Consumer, PermanentError
from tests.support.consumers import FakePool, FakeProducer, record, valid_record

GROUP = "releasegate-test"


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch):
    monkeypatch.setattr(kafka, "_retry_delay", lambda attempt: 0)


def consumer(producer: FakeProducer, pool: FakePool) -> Consumer:
    return Consumer(KafkaBroker("127.0.0.1:1", logger=None), GROUP, producer, "test", pool)


class Handler:
    def __init__(self, failure: BaseException | None = None) -> None:
        self.calls, self.failure = 0, failure

    async def __call__(self, envelope: Envelope) -> None:
        self.calls += 1
        if self.failure is not None:
            raise self.failure


class TestDecoding:
    async def test_a_record_whose_decoding_raises_anything_is_dead_lettered_with_the_exception_type(self, monkeypatch):
        def explode(headers, value):
            raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")

        monkeypatch.setattr(kafka, "decode", explode)
        producer, handler = FakeProducer(), Handler()
        await consumer(producer, FakePool())._handle(valid_record(), handler, None)
        (letter,) = producer.letters()
        assert letter.error_type == "RecursionError"
        assert "cannot be decoded (RecursionError)" in letter.reason and handler.calls == 0

    async def test_a_json_value_faststream_would_choke_on_reaches_the_consumer_and_is_dead_lettered_once(self):
        """FastStream parses application/json values itself before any handler runs; a value it cannot parse
        must still be counted, dead-lettered and committed, not NACKed for ever."""
        producer, handler = FakeProducer(), Handler()
        c = consumer(producer, FakePool())
        c.subscribe(topics.ALERTS, handler)
        c.register()
        async with TestKafkaBroker(c._broker) as broker:
            await broker.publish(
                b"[" * 100_000, topics.ALERTS, key=b"deep", headers={"content-type": "application/json"}
            )
        (letter,) = producer.letters()
        assert letter.error_type == "ContractError" and letter.source_topic == topics.ALERTS
        assert handler.calls == 0

    async def test_header_values_that_are_not_utf8_or_null_do_not_stop_the_parser(self):
        original = AioKafkaParser(KafkaMessage, None).parse_message
        hostile = record(b"{}", [("ce_id", b"\xff\xfe"), ("x", None), ("ce_type", b"ok")])
        message = await kafka._parse_leniently(hostile, original)
        assert dict(message.raw_message.headers) == {"ce_id": "\ufffd\ufffd".encode(), "x": b"", "ce_type": b"ok"}
        assert message.raw_message.offset == hostile.offset and message.raw_message.value == b"{}"


class TestBoundedDeadLetters:
    async def test_a_dead_letter_of_a_huge_hostile_record_is_bounded_and_describes_the_original(self):
        value = b"\x00\x01" + b"a" * (1024 * 1024)
        headers = [(f"h{i}\x00", b"\x1b[31m" + b"v" * 5000) for i in range(1000)]
        producer = FakeProducer()
        await consumer(producer, FakePool()).dead_letter(
            record(value, headers, key=b"k\n" * 5000), "r" * 100_000, "ContractError"
        )
        ((_, envelope),) = producer.sent
        letter: DeadLetter = envelope.data
        assert letter.original_value_bytes == len(value)
        assert letter.original_value_digest == "sha256:" + hashlib.sha256(value).hexdigest()
        assert letter.original_header_count == 1000 and letter.truncated
        assert letter.value.startswith("base64:")  # control bytes: not shown as text
        assert len(letter.headers) == dead_letters.HEADER_COUNT_LIMIT
        assert not any(c < " " for k, v in letter.headers.items() for c in k + v)
        assert "\n" not in (letter.key or "")
        assert len(json.dumps(letter.model_dump())) < 200 * 1024  # far below Kafka's 1 MiB record limit

    def test_the_value_stays_text_when_the_cut_splits_a_character(self):
        text, cut = dead_letters.value_text("é".encode() * 10, limit=5)
        assert (text, cut) == ("éé", True)

    def test_a_value_with_bytes_that_are_not_utf8_is_kept_as_base64(self):
        assert dead_letters.value_text(b"\xff\xfeabc") == ("base64://5hYmM=", False)


class TestParking:
    async def test_a_record_whose_dead_letter_the_broker_refuses_is_parked_and_the_consumer_moves_on(self):
        pool = FakePool()
        producer = FakeProducer(MessageSizeTooLargeError("the dead letter is larger than max.message.bytes"))
        await consumer(producer, pool)._handle(record(b"{broken", [("ce_specversion", b"1.0")]), Handler(), None)
        row = pool.parked_row(7)
        assert row["consumer_group"] == GROUP and row["topic"] == topics.ALERTS
        assert "ce_id" in row["reason"] or "ce_source" in row["reason"] or "ce_type" in row["reason"]
        assert row["dead_letter_error"].startswith("MessageSizeTooLargeError")
        assert row["value"] == "{broken" and row["value_bytes"] == 7

    async def test_a_broker_that_does_not_answer_in_time_gets_the_record_parked(self, monkeypatch):
        monkeypatch.setattr(kafka, "DEAD_LETTER_TIMEOUT_SECONDS", 0.01)
        pool = FakePool()
        await consumer(FakeProducer(hang=True), pool)._handle(record(b"{}", []), Handler(), None)
        assert pool.parked_row(7)["dead_letter_error"].startswith("TimeoutError")

    async def test_a_redelivered_parked_record_is_parked_once(self):
        pool = FakePool()
        c = consumer(FakeProducer(RuntimeError("dead-letter topic not authorized")), pool)
        await c._handle(record(b"{}", []), Handler(), None)
        await c._handle(record(b"{}", []), Handler(), None)
        assert len(pool.parked) == 1

    async def test_with_postgres_down_too_the_record_is_redelivered_and_its_handler_not_run_again(self):
        pool, handler = FakePool(), Handler(PermanentError("unknown release"))
        pool.down = True
        c = consumer(FakeProducer(RuntimeError("broker down")), pool)
        for _ in range(3):
            with pytest.raises(ConnectionRefusedError):
                await c._handle(valid_record(), handler, None)
        pool.down = False
        await c._handle(valid_record(), handler, None)
        assert handler.calls == 1
        assert pool.parked_row(7)["reason"] == "unknown release"
        assert len(c._attempts) == 0


class TestAttempts:
    async def test_a_handler_failing_every_time_is_retried_then_dead_lettered(self):
        producer, handler = FakeProducer(), Handler(RuntimeError("database unavailable"))
        c = consumer(producer, FakePool())
        for _ in range(kafka.MAX_ATTEMPTS - 1):
            with pytest.raises(RuntimeError):
                await c._handle(valid_record(), handler, None)
        await c._handle(valid_record(), handler, None)
        (letter,) = producer.letters()
        assert handler.calls == kafka.MAX_ATTEMPTS
        assert letter.reason.startswith(f"gave up after {kafka.MAX_ATTEMPTS} attempts")
        assert len(c._attempts) == 0

    async def test_a_record_handled_after_a_failure_is_forgotten(self):
        producer, handler = FakeProducer(), Handler(RuntimeError("once"))
        c = consumer(producer, FakePool())
        with pytest.raises(RuntimeError):
            await c._handle(valid_record(), handler, None)
        handler.failure = None
        await c._handle(valid_record(), handler, None)
        assert len(c._attempts) == 0 and producer.letters() == []

    def test_the_attempt_ledger_keeps_only_the_most_recent_records(self):
        attempts = kafka._Attempts(limit=3)
        for offset in range(10):
            attempts.failed(("t", 0, offset))
        attempts.failed(("t", 0, 7), ("reason", "Error"))
        assert len(attempts) == 3
        assert attempts.verdict(("t", 0, 7)) == ("reason", "Error") and attempts.verdict(("t", 0, 0)) is None


async def test_a_service_is_not_healthy_before_every_member_of_its_group_has_joined():
    """Health waits for the group join: a caller that trusted an earlier 200 published an approval for a release
    the coordinator had not read yet (the CLI gave up waiting for it, the release waited for approval for ever)."""
    c = Consumer(KafkaBroker("127.0.0.1:1", logger=None), GROUP, FakeProducer(), "test", FakePool(), workers=2)
    c.subscribe(topics.ALERTS, Handler())
    c.register()
    assert not c.joined()
    first, second = c._members
    await first.on_partitions_assigned({kafka.TopicPartition(topics.ALERTS, 0)})
    assert not c.joined()
    await second.on_partitions_assigned(set())  # more members than partitions: joined, with nothing to read
    assert c.joined()
