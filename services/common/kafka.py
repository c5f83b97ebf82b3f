"""Kafka wiring shared by all services: a FastStream broker whose subscribers validate contracts, commit only
after handling, retry transient errors and dead-letter what can never succeed; an aiokafka producer."""
from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.security import SASLScram512

from contracts import topics
from contracts.cloudevents import ContractError, Envelope, decode, encode, header_dict
from contracts.events import DeadLetter
from services.common.settings import ServiceSettings

log = structlog.get_logger()
Handler = Callable[[Envelope], Awaitable[None]]
MAX_ATTEMPTS = 5
VALUE_LIMIT = 64 * 1024


class PermanentError(Exception):
    """A message that can never be handled (bad reference, unknown service...): dead-lettered, not retried."""


MECHANISM = "SCRAM-SHA-512"


def client_options(settings: ServiceSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for an authenticated client of `settings.principal`: SASL/SCRAM-SHA-512, over
    TLS when a CA file is configured (any listener that is not loopback-only)."""
    user, password = settings.kafka_credentials()
    tls = _tls(settings)
    return {"bootstrap_servers": settings.kafka_bootstrap,
            "security_protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT", "sasl_mechanism": MECHANISM,
            "sasl_plain_username": user, "sasl_plain_password": password, "ssl_context": tls}


def _tls(settings: ServiceSettings) -> ssl.SSLContext | None:
    if settings.kafka_ca_file is None:
        return None
    return ssl.create_default_context(cafile=str(settings.kafka_ca_file))


class Producer:
    """Idempotent producer with acks=all; `send` returns once the broker has the record."""

    def __init__(self, settings: ServiceSettings, client_id: str) -> None:
        self._producer = AIOKafkaProducer(**client_options(settings), client_id=client_id, acks="all",
                                          enable_idempotence=True, linger_ms=0)

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


def _text(value: bytes | None) -> str:
    if value is None:
        return ""
    raw = value[:VALUE_LIMIT]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode()


class Consumer:
    """Registers contract-validating subscribers for one consumer group (one service)."""

    def __init__(self, broker: KafkaBroker, group: str, producer: Producer, source: str) -> None:
        self._broker, self._group, self._producer, self._source = broker, group, producer, source
        self._attempts: dict[tuple[str, int, int], int] = {}
        self._routes: dict[str, tuple[Handler, tuple[type, ...] | None]] = {}

    def subscribe(self, topic: str, handler: Handler, *, accept: tuple[type, ...] | None = None) -> None:
        """Deliver each valid record of `topic` to `handler`; `accept` limits the event types it takes."""
        self._routes[topic] = (handler, accept)

    def register(self) -> None:
        """One subscriber (one group member) for all routed topics, so a service joins its group once."""

        @self._broker.subscriber(*self._routes, group_id=self._group, ack_policy=AckPolicy.NACK_ON_ERROR,
                                 auto_offset_reset="earliest", max_poll_interval_ms=300_000, title=self._group)
        async def _consume(msg: KafkaMessage) -> None:
            handler, accept = self._routes[msg.raw_message.topic]
            await self._handle(msg.raw_message, handler, accept)

    async def _handle(self, record: Any, handler: Handler, accept: tuple[type, ...] | None) -> None:
        where = (record.topic, record.partition, record.offset)
        try:
            envelope = decode(record.headers, record.value)
            if accept is not None and not isinstance(envelope.data, accept):
                raise ContractError(f"{envelope.type} is not accepted on {record.topic} by {self._group}")
        except ContractError as exc:
            await self.dead_letter(record, str(exc), "ContractError")
            return
        bind = {"release_id": envelope.subject, "tenant": envelope.tenant, "event_type": envelope.type}
        with structlog.contextvars.bound_contextvars(**{k: v for k, v in bind.items() if v}):
            try:
                await handler(envelope)
                self._attempts.pop(where, None)
            except PermanentError as exc:
                await self.dead_letter(record, str(exc), type(exc).__name__)
            except Exception as exc:
                attempts = self._attempts.get(where, 0) + 1
                self._attempts[where] = attempts
                if attempts >= MAX_ATTEMPTS:
                    self._attempts.pop(where, None)
                    await self.dead_letter(record, f"gave up after {attempts} attempts: {exc!r}", type(exc).__name__)
                    return
                log.warning("handler failed; message will be redelivered", attempt=attempts, error=repr(exc))
                await asyncio.sleep(min(0.2 * 2**attempts, 3.0))
                raise

    async def dead_letter(self, record: Any, reason: str, error_type: str) -> None:
        key = record.key.decode("utf-8", "replace") if record.key else None
        letter = DeadLetter(consumer=self._group, source_topic=record.topic, partition=record.partition,
                            offset=record.offset, key=key, reason=reason, error_type=error_type,
                            headers=header_dict(record.headers), value=_text(record.value))
        log.error("dead-lettered record", topic=record.topic, offset=record.offset, reason=reason)
        await self._producer.send_envelope(topics.DEADLETTER, Envelope.new(letter, self._source, subject=key))
