"""A batching consumer (the coordinator's): what one fetch brought is decided inside one scope (one transaction);
when the scope fails, the records are handled again one by one, so a refused record is dead-lettered alone; a
record that must come again rewinds its partition, and nothing after it there is committed before it."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
from aiokafka import TopicPartition
from faststream.kafka import KafkaBroker

from contracts.cloudevents import Envelope, encode
from releasegate_runtime import kafka
from releasegate_runtime.kafka import Consumer, PermanentError
from tests.support.consumers import FakePool, FakeProducer, alert, record

GROUP = "releasegate-test"


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch):
    monkeypatch.setattr(kafka, "_retry_delay", lambda attempt: 0)


class Scope:
    """The unit of work: what the handlers did inside it goes to `committed` only if the block ended well."""

    def __init__(self) -> None:
        self.opened: list[list[str]] = []
        self.committed: list[str] = []
        self.pending: list[str] | None = None

    @asynccontextmanager
    async def __call__(self, envelopes):
        self.opened.append([e.id for e in envelopes])
        self.pending = []
        try:
            yield
            self.committed += self.pending
        finally:
            self.pending = None


class Handler:
    """Applies an event inside the scope when there is one (else on its own); refuses the ids in `refuse` and
    fails the ids in `flaky` the first `flaky[id]` times."""

    def __init__(self, scope: Scope, refuse=(), flaky=None) -> None:
        self.scope, self.refuse, self.flaky = scope, set(refuse), dict(flaky or {})
        self.alone: list[str] = []

    async def __call__(self, envelope: Envelope) -> None:
        if envelope.id in self.refuse:
            raise PermanentError(f"refused {envelope.id}")
        if self.flaky.get(envelope.id, 0) > 0:
            self.flaky[envelope.id] -= 1
            raise ConnectionError("PostgreSQL away")
        if self.scope.pending is not None:
            self.scope.pending.append(envelope.id)
        else:
            self.alone.append(envelope.id)


class FakeKafkaConsumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def assignment(self):
        return {TopicPartition("release.alerts", 0)}


def batch(n: int, first_offset: int = 10) -> tuple[list, list[str]]:
    records, ids = [], []
    for i in range(n):
        envelope = alert()
        key, value, headers = encode(envelope)
        records.append(record(value, headers, key, first_offset + i))
        ids.append(envelope.id)
    return records, ids


def batching(scope: Scope, handler: Handler, producer: FakeProducer) -> Consumer:
    c = Consumer(KafkaBroker("127.0.0.1:1", logger=None), GROUP, producer, "test", FakePool(), client={})
    c.subscribe("release.alerts", handler)
    c.batched(scope, 100)
    return c


def committed(c: Consumer, kafka_consumer: FakeKafkaConsumer) -> int | None:
    _, offsets = c._offsets._pending.get(id(kafka_consumer), (None, {}))
    return offsets.get(TopicPartition("release.alerts", 0))


class TestBatches:
    async def test_a_fetch_is_decided_in_one_scope_and_committed_past_its_last_record(self):
        scope, producer, kc = Scope(), FakeProducer(), FakeKafkaConsumer()
        handler = Handler(scope)
        records, ids = batch(3)
        c = batching(scope, handler, producer)
        await c._handle_batch(kc, records)
        assert scope.opened == [ids] and scope.committed == ids and handler.alone == []
        assert committed(c, kc) == 13 and kc.seeks == [] and producer.letters() == []

    async def test_a_refused_record_undoes_the_scope_and_is_dead_lettered_alone_the_others_applied_once(self):
        scope, producer, kc = Scope(), FakeProducer(), FakeKafkaConsumer()
        records, ids = batch(3)
        handler = Handler(scope, refuse=[ids[1]])
        c = batching(scope, handler, producer)
        await c._handle_batch(kc, records)
        assert scope.committed == [], "the failed scope kept something"
        assert handler.alone == [ids[0], ids[2]], "the other records were not applied one by one"
        assert [letter.offset for letter in producer.letters()] == [11]
        assert committed(c, kc) == 13

    async def test_an_undecodable_record_is_dead_lettered_and_leaves_the_scope_to_the_others(self):
        scope, producer, kc = Scope(), FakeProducer(), FakeKafkaConsumer()
        records, ids = batch(2)
        records.insert(1, record(b"{broken", [("ce_specversion", b"1.0")], offset=99))
        c = batching(scope, Handler(scope), producer)
        await c._handle_batch(kc, records)
        assert scope.committed == ids and [letter.offset for letter in producer.letters()] == [99]

    async def test_a_record_that_must_come_again_rewinds_its_partition_to_it_and_commits_only_before_it(self):
        scope, producer, kc = Scope(), FakeProducer(), FakeKafkaConsumer()
        records, ids = batch(3)
        handler = Handler(scope, flaky={ids[1]: 2})  # fails in the scope, then once more on its own
        c = batching(scope, handler, producer)
        await c._handle_batch(kc, records)
        assert handler.alone == [ids[0]] and scope.committed == []
        assert kc.seeks == [(TopicPartition("release.alerts", 0), 11)], "not rewound to the failed record"
        assert committed(c, kc) == 11, "an offset past the failed record was committed"
        # redelivered from there: this time it takes effect, in a scope, with the one after it
        await c._handle_batch(kc, records[1:])
        assert scope.committed == ids[1:] and committed(c, kc) == 13
