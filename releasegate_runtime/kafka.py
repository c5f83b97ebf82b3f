"""Kafka wiring shared by all services: a FastStream broker whose subscribers validate contracts, commit only
after handling, retry transient errors and dead-letter (or park) what can never succeed; an aiokafka producer."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.security import SASLScram512

from contracts import topics
from contracts.cloudevents import ContractError, Envelope, decode, encode
from releasegate_runtime import dead_letters
from releasegate_runtime.settings import ServiceSettings

log = structlog.get_logger()
Handler = Callable[[Envelope], Awaitable[None]]
MAX_ATTEMPTS = 5
ATTEMPTS_TRACKED = 1024
# how long a dead letter may wait for the broker before the record is parked in PostgreSQL instead
DEAD_LETTER_TIMEOUT_SECONDS = 30.0


class PermanentError(Exception):
    """A message that can never be handled (bad reference, unknown service...): dead-lettered, not retried."""


MECHANISM = "SCRAM-SHA-512"


def client_options(settings: ServiceSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for an authenticated client of `settings.principal`: SASL/SCRAM-SHA-512, over
    TLS when a CA file is configured (any listener that is not loopback-only)."""
    user, password = settings.kafka_credentials()
    tls = _tls(settings)
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
        "sasl_mechanism": MECHANISM,
        "sasl_plain_username": user,
        "sasl_plain_password": password,
        "ssl_context": tls,
    }


def _tls(settings: ServiceSettings) -> ssl.SSLContext | None:
    if settings.kafka_ca_file is None:
        return None
    return ssl.create_default_context(cafile=str(settings.kafka_ca_file))


class Producer:
    """Producer with acks=all; `send` returns once the broker has the record.

    Idempotent unless told otherwise. An idempotent aiokafka producer retries for ever and cannot recover a
    partition after the broker refused one of its batches (aiokafka does not reset the producer id, so every
    later batch is out of sequence): dead letters, which may be refused, go through a producer of their own that
    is not idempotent (a duplicate dead letter is harmless)."""

    def __init__(self, settings: ServiceSettings, client_id: str, *, idempotent: bool = True) -> None:
        self._producer = AIOKafkaProducer(
            **client_options(settings), client_id=client_id, acks="all", enable_idempotence=idempotent, linger_ms=0
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    def connected(self) -> bool:
        return bool(self._producer.client.cluster.brokers())

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> Any:
        """Returns the record's metadata (partition, offset)."""
        return await self._producer.send_and_wait(topic, value=value, key=key, headers=headers)

    async def send_envelope(self, topic: str, envelope: Envelope) -> None:
        key, value, headers = encode(envelope)
        await self.send(topic, key, value, headers)


def make_broker(settings: ServiceSettings, client_id: str) -> KafkaBroker:
    user, password = settings.kafka_credentials()
    tls = _tls(settings)
    security = SASLScram512(user, password, use_ssl=tls is not None, ssl_context=tls)
    return KafkaBroker(settings.kafka_bootstrap, client_id=client_id, logger=None, security=security)


class _Attempts:
    """How often each record (topic, partition, offset) failed, and the dead-letter verdict of a record whose fate
    is decided but not yet recorded. Bounded: the least recently touched entries go first (a record whose
    partition moved to another group member is never redelivered here)."""

    def __init__(self, limit: int = ATTEMPTS_TRACKED) -> None:
        self._limit = limit
        self._entries: OrderedDict[tuple[str, int, int], tuple[int, tuple[str, str] | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def verdict(self, where: tuple[str, int, int]) -> tuple[str, str] | None:
        return self._entries.get(where, (0, None))[1]

    def failed(self, where: tuple[str, int, int], verdict: tuple[str, str] | None = None) -> int:
        """Count one more failure of the record (keeping `verdict`, if given); returns the count."""
        count, kept = self._entries.pop(where, (0, None))
        self._entries[where] = (count + 1, verdict or kept)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)
        return count + 1

    def forget(self, where: tuple[str, int, int]) -> None:
        self._entries.pop(where, None)


def _retry_delay(attempt: int) -> float:
    return min(0.2 * 2.0**attempt, 3.0)


async def _parse_leniently(record: ConsumerRecord, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """FastStream decodes every header value as UTF-8 before any handler runs: a record with one that is not
    (or with a null header value) would fail there, outside the attempt counting, on every redelivery. Such
    values are replaced (U+FFFD) in what the handler sees; `decode` would read them so anyway."""
    if all(isinstance(v, bytes) and _is_utf8(v) for _, v in record.headers):
        return await original(record)
    headers = tuple((k, (v or b"").decode("utf-8", "replace").encode()) for k, v in record.headers)
    return await original(dataclasses.replace(record, headers=headers))


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


async def _undecoded(message: Any) -> Any:
    """The record's value as bytes: FastStream's own decoder would parse JSON before any handler runs, where a
    deeply nested document or a huge number fails outside the attempt counting; `decode` parses it instead."""
    return message.body


class Consumer:
    """Registers contract-validating subscribers for one consumer group (one service). No record can stall a
    partition: a record that cannot be decoded or handled is dead-lettered, and one whose dead letter cannot be
    produced is parked in PostgreSQL; only when PostgreSQL refuses too is it redelivered."""

    def __init__(
        self, broker: KafkaBroker, group: str, dead_letter_producer: Producer, source: str, pool: asyncpg.Pool
    ) -> None:
        """`dead_letter_producer`: not idempotent (see `Producer`); `pool`: where records are parked."""
        self._broker, self._group, self._producer, self._source = broker, group, dead_letter_producer, source
        self._pool = pool
        self._attempts = _Attempts()
        self._routes: dict[str, tuple[Handler, tuple[type, ...] | None]] = {}

    @property
    def group(self) -> str:
        return self._group

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self._routes)

    def subscribe(self, topic: str, handler: Handler, *, accept: tuple[type, ...] | None = None) -> None:
        """Deliver each valid record of `topic` to `handler`; `accept` limits the event types it takes."""
        self._routes[topic] = (handler, accept)

    def register(self) -> None:
        """One subscriber (one group member) for all routed topics, so a service joins its group once."""

        @self._broker.subscriber(
            *self._routes,
            group_id=self._group,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            auto_offset_reset="earliest",
            max_poll_interval_ms=300_000,
            title=self._group,
            parser=_parse_leniently,
            decoder=_undecoded,
        )
        async def _consume(msg: KafkaMessage) -> None:
            record: Any = msg.raw_message  # one ConsumerRecord (not a batch subscriber)
            handler, accept = self._routes[record.topic]
            await self._handle(record, handler, accept)

    async def _handle(self, record: Any, handler: Handler, accept: tuple[type, ...] | None) -> None:
        """Returns once the record is handled, dead-lettered or parked (its offset may be committed); raises to
        have it redelivered, after a delay that grows with its failures."""
        where = (record.topic, record.partition, record.offset)
        verdict = self._attempts.verdict(where) or await self._process(record, handler, accept, where)
        if verdict is not None:
            try:
                await self.dead_letter(record, *verdict)
            except Exception as exc:
                attempt = self._attempts.failed(where, verdict)
                log.error(
                    "record neither dead-lettered nor parked; it will be redelivered",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    attempt=attempt,
                    error=repr(exc),
                )
                await asyncio.sleep(_retry_delay(attempt))
                raise
        self._attempts.forget(where)

    async def _process(
        self, record: Any, handler: Handler, accept: tuple[type, ...] | None, where: tuple[str, int, int]
    ) -> tuple[str, str] | None:
        """None once `handler` succeeded; (reason, error type) for a record that must be dead-lettered."""
        try:
            envelope = decode(record.headers, record.value)
            if accept is not None and not isinstance(envelope.data, accept):
                raise ContractError(f"{envelope.type} is not accepted on {record.topic} by {self._group}")
        except ContractError as exc:
            return str(exc), "ContractError"
        except Exception as exc:  # a hostile record may break any parser: as permanent as a contract violation
            return f"record cannot be decoded ({type(exc).__name__}): {exc}", type(exc).__name__
        bind = {"release_id": envelope.subject, "tenant": envelope.tenant, "event_type": envelope.type}
        with structlog.contextvars.bound_contextvars(**{k: v for k, v in bind.items() if v}):
            try:
                await handler(envelope)
            except PermanentError as exc:
                return str(exc), type(exc).__name__
            except Exception as exc:
                attempts = self._attempts.failed(where)
                if attempts >= MAX_ATTEMPTS:
                    return f"gave up after {attempts} attempts: {exc!r}", type(exc).__name__
                log.warning("handler failed; message will be redelivered", attempt=attempts, error=repr(exc))
                await asyncio.sleep(_retry_delay(attempts))
                raise
        return None

    async def dead_letter(self, record: Any, reason: str, error_type: str) -> None:
        """Produce a bounded dead letter for `record`; if that fails in any way (too large for the broker, refused,
        the broker unreachable for `DEAD_LETTER_TIMEOUT_SECONDS`), park the record in PostgreSQL instead. Raises
        only if PostgreSQL does not take it either: the caller must then have the record redelivered."""
        letter = dead_letters.bound(record, self._group, reason, error_type)
        log.error(
            "dead-lettering record",
            topic=letter.topic,
            partition=letter.partition,
            offset=letter.offset,
            reason=letter.reason,
        )
        try:
            envelope = Envelope.new(letter.dead_letter(), self._source, subject=letter.key)
            await asyncio.wait_for(
                self._producer.send_envelope(topics.DEADLETTER, envelope), DEAD_LETTER_TIMEOUT_SECONDS
            )
        except Exception as exc:
            parked = await dead_letters.park(self._pool, letter, exc)
            log.error(
                "dead letter could not be produced; record parked in PostgreSQL (parked_records)",
                topic=letter.topic,
                partition=letter.partition,
                offset=letter.offset,
                error=dead_letters.describe(exc),
                already_parked=not parked,
            )
