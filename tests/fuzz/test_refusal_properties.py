"""Properties of the refusal path, in process (no stack): the contract check every consumer runs before its
handler refuses each hostile record with a `ContractError` and nothing else (anything else is retried, then
stalls the partition), and the dead letter of any hostile record fits in a Kafka record, so it can always be
produced. The same strategies feed the live campaign (`test_hostile_records.py`, `make bench-fuzz`)."""

from __future__ import annotations

import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, Phase, given, settings

from contracts.cloudevents import ContractError, Envelope, decode, encode
from releasegate_runtime.bus import BusPolicy
from releasegate_runtime.kafka import Consumer
from tests.support.fuzz.hostile import HostileRecord, hostile_records
from tests.support.fuzz.targets import BASES, Target, targets

TARGETS = targets(BusPolicy.load())
BY_TOPIC = {t.topic: t for t in TARGETS}
# Kafka's default limit on a produced record (the producer's max.request.size).
RECORD_LIMIT = 1_048_576
# Deterministic (CI reproduces any failure), no example database, no `explain` phase (it needs libcst and adds
# nothing to a shrunk hostile record).
PROPERTY = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.generate, Phase.shrink],
)


def contract_check(record: HostileRecord) -> Envelope:
    """What a consumer does before its handler: decode, then refuse a type the topic does not carry."""
    envelope = decode(list(record.headers), record.value)
    accepted = BY_TOPIC[record.topic].accepted
    if not isinstance(envelope.data, accepted):
        raise ContractError(f"{envelope.type} is not accepted on {record.topic}")
    return envelope


class _CapturingProducer:
    """Stands in for the service's producer: keeps what the dead-letter path produces."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.sent.append((topic, key, value, headers))

    async def send_envelope(self, topic: str, envelope: Envelope) -> None:
        await self.send(topic, *encode(envelope))


def _consumer_record(record: HostileRecord) -> ConsumerRecord:
    return ConsumerRecord(
        topic=record.topic,
        partition=0,
        offset=42,
        timestamp=0,
        timestamp_type=0,
        key=record.key,
        value=record.value,
        checksum=None,
        serialized_key_size=len(record.key or b""),
        serialized_value_size=len(record.value or b""),
        headers=list(record.headers),
    )


class TestEveryBaseIsValid:
    """Each refusal below is the mutation's doing, not a stale base."""

    @pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.topic)
    def test_the_unmutated_events_of_a_topic_pass_its_contract_check(self, target: Target):
        for model in target.accepted:
            env = Envelope.new(model.model_validate(BASES[model]), "releasegate/fuzz", subject="shop-v2-1a2b3c4d")
            key, value, headers = encode(env)
            record = HostileRecord(target.topic, target.writer, key, value, tuple(headers), "base", "none")
            assert isinstance(contract_check(record).data, model)


class TestHostileRecordsAreRefused:
    @PROPERTY
    @given(hostile_records(TARGETS))
    def test_the_contract_check_refuses_every_hostile_record_with_a_contract_error(self, record: HostileRecord):
        with pytest.raises(ContractError):
            contract_check(record)

    @PROPERTY
    @given(hostile_records(TARGETS))
    async def test_the_dead_letter_of_any_hostile_record_fits_in_a_kafka_record(self, record: HostileRecord):
        try:
            contract_check(record)
            reason = "accepted by the contract check"
        except Exception as exc:  # the reason a consumer would give, whatever raised it
            reason = str(exc) or repr(exc)
        producer = _CapturingProducer()
        consumer = Consumer(None, "releasegate-fuzz", producer, "fuzz", None)  # type: ignore[arg-type]
        await consumer.dead_letter(_consumer_record(record), reason, "ContractError")
        [(_, key, value, headers)] = producer.sent
        size = len(key or b"") + len(value) + sum(len(k) + len(v) for k, v in headers)
        assert size < RECORD_LIMIT, f"a dead letter of {size} bytes cannot be produced ({record.mutation[:200]})"
