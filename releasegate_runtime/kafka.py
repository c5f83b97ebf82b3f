"""Kafka wiring shared by all services: a FastStream broker whose subscribers validate contracts, commit only
after handling, retry transient errors and dead-letter (or park) what can never succeed; an aiokafka producer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from confluent_kafka.admin import AdminClient
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.security import SASLScram512

from contracts import topics
from contracts.cloudevents import ContractError, Envelope, decode, encode
from releasegate_runtime import dead_letters, metrics
from releasegate_runtime.settings import ServiceSettings

log = structlog.get_logger()
Handler = Callable[[Envelope], Awaitable[None]]
# One unit of work for a batch of records (their envelopes, in the order they will be handled): every handler called
# inside it shares it, and it commits when the block ends without an error; on an error nothing of it is kept.
BatchScope = Callable[[Sequence[Envelope]], AbstractAsyncContextManager[None]]
MAX_ATTEMPTS = 5
ATTEMPTS_TRACKED = 1024
# how long a dead letter may wait for the broker before the record is parked in PostgreSQL instead
DEAD_LETTER_TIMEOUT_SECONDS = 30.0
COMMIT_INTERVAL_SECONDS = 0.2


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


def admin_client(settings: ServiceSettings, timeout: float) -> AdminClient:
    """A librdkafka admin client authenticated as the settings' own principal (what its ACLs allow, nothing more)."""
    user, password = settings.kafka_credentials()
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "sasl.mechanism": MECHANISM,
        "sasl.username": user,
        "sasl.password": password,
        "security.protocol": "SASL_SSL" if settings.kafka_ca_file else "SASL_PLAINTEXT",
        "socket.timeout.ms": int(timeout * 1000),
        "log_level": 4,
    }
    if settings.kafka_ca_file:
        config["ssl.ca.location"] = str(settings.kafka_ca_file)
    return AdminClient(config)


async def assigned_partitions(consumer: AIOKafkaConsumer, polls: int = 200) -> list[TopicPartition]:
    """The partitions a consumer subscribed without a group is given, waited for up to `polls` × 50 ms; [] if none."""
    for _ in range(polls):
        if partitions := list(consumer.assignment()):
            return partitions
        await asyncio.sleep(0.05)
    return []


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

    async def enqueue(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        """Queue the record; returns once it is queued, with the future of its acknowledgement. Records queued
        one after another keep their order on a partition and travel in one request."""
        queued: asyncio.Future[Any] = await self._producer.send(topic, value=value, key=key, headers=headers)
        return queued

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


def _decoded(record: Any, accept: tuple[type, ...] | None) -> Envelope | None:
    """The record's envelope if it is one the route accepts; None otherwise (`Consumer._process` says why)."""
    try:
        envelope = decode(record.headers, record.value)
    except Exception:
        return None
    if accept is not None and not isinstance(envelope.data, accept):
        return None
    return envelope


def _retry_delay(attempt: int) -> float:
    return min(0.2 * 2.0**attempt, 3.0)


async def _parse_leniently(record: ConsumerRecord, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """FastStream decodes every header value as UTF-8 before any handler runs: a record with one that is not
    (or with a null header value) would fail there, outside the attempt counting, on every redelivery. Such
    values are replaced (U+FFFD) in what the handler sees; `decode` would read them so anyway."""
    if all(isinstance(v, bytes) and _is_utf8(v) for _, v in record.headers):
        return await original(record)
    headers = tuple((k, (v or b"").decode("utf-8", "replace").encode()) for k, v in record.headers)
    replaced = dataclasses.replace(record, headers=headers)
    if hasattr(record, "consumer"):  # the group member it came from (several per process): its offsets go there
        replaced.consumer = record.consumer
    return await original(replaced)


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


class _HandledOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    """Offsets of handled records, committed in the background every `COMMIT_INTERVAL_SECONDS`, when partitions
    are revoked and when the service stops: a commit after every record cost a broker round trip on the consume
    path. At-least-once holds: an offset is committed only once its record was handled; after a crash, records
    handled since the last commit come again and the handlers' idempotency (event ids) absorbs them."""

    def __init__(self) -> None:
        self._pending: dict[int, tuple[Any, dict[TopicPartition, int]]] = {}

    def handled(self, consumer: Any, record: Any) -> None:
        _, offsets = self._pending.setdefault(id(consumer), (consumer, {}))
        offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1

    async def commit(self) -> None:
        pending, self._pending = self._pending, {}
        for consumer, offsets in pending.values():
            assigned = consumer.assignment()
            mine = {tp: offset for tp, offset in offsets.items() if tp in assigned}
            if not mine:
                continue
            try:
                await consumer.commit(mine)
            except Exception as exc:  # a rebalance, the broker away: keep them for the next round unless newer
                log.info("offsets not committed yet", error=repr(exc), partitions=len(mine))
                _, kept = self._pending.setdefault(id(consumer), (consumer, {}))
                for tp, offset in mine.items():
                    kept.setdefault(tp, offset)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_SECONDS)
            await self.commit()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.commit()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None


class _Member(ConsumerRebalanceListener):  # type: ignore[misc]
    """One group member's rebalance listener: commits the handled offsets before its partitions go, and knows
    whether the member has joined the group yet (its first assignment, possibly empty, arrived)."""

    def __init__(self, offsets: _HandledOffsets) -> None:
        self._offsets = offsets
        self.joined = False

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._offsets.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.joined = True


class Consumer:
    """Registers contract-validating subscribers for one consumer group (one service). No record can stall a
    partition: a record that cannot be decoded or handled is dead-lettered, and one whose dead letter cannot be
    produced is parked in PostgreSQL; only when PostgreSQL refuses too is it redelivered."""

    def __init__(
        self,
        broker: KafkaBroker,
        group: str,
        dead_letter_producer: Producer,
        source: str,
        pool: asyncpg.Pool,
        workers: int = 1,
        fetch_wait_ms: int = 100,
        client: dict[str, Any] | None = None,
    ) -> None:
        """`dead_letter_producer`: not idempotent (see `Producer`); `pool`: where records are parked; `workers`:
        group members of this process, each handling its partitions in order, concurrently with the others;
        `fetch_wait_ms`: the longest a fetch waits at the broker (a record on a partition that was still being
        handled when the fetch left waits for it); `client`: aiokafka options of this principal (`client_options`),
        for members that handle their records in batches (`batched`)."""
        self._fetch_wait_ms = fetch_wait_ms
        self._broker, self._group, self._producer, self._source = broker, group, dead_letter_producer, source
        self._pool, self._workers = pool, workers
        self._offsets = _HandledOffsets()
        self._attempts = _Attempts()
        self._routes: dict[str, tuple[Handler, tuple[type, ...] | None]] = {}
        self._subscribers: list[Any] = []
        self._members: list[_Member] = []
        self._client = client
        self._scope: BatchScope | None = None
        self._max_batch = 1
        self._batch_consumers: list[AIOKafkaConsumer] = []
        self._batch_listeners: list[_Member] = []
        self._batch_tasks: list[asyncio.Task[None]] = []

    @property
    def group(self) -> str:
        return self._group

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self._routes)

    def subscribe(self, topic: str, handler: Handler, *, accept: tuple[type, ...] | None = None) -> None:
        """Deliver each valid record of `topic` to `handler`; `accept` limits the event types it takes."""
        self._routes[topic] = (handler, accept)

    def batched(self, scope: BatchScope, max_records: int) -> None:
        """Handle records in batches of up to `max_records` (what one fetch returned), each batch's records inside
        one `scope` (one transaction: one commit for the batch instead of one per record). A batch whose scope fails
        for any reason (a record to refuse, a concurrent update, an outage) is handled again record by record, as
        without batches, so a bad record is dead-lettered on its own and the others are applied."""
        if self._client is None:
            raise ValueError("batched members need the principal's client options (Consumer(client=...))")
        self._scope, self._max_batch = scope, max_records

    async def start(self) -> None:
        """Start the batch members (the broker starts the others)."""
        for consumer, member in zip(self._batch_consumers, self._batch_listeners, strict=True):
            consumer.subscribe(list(self._routes), listener=member)
            await consumer.start()
        for i, consumer in enumerate(self._batch_consumers):
            self._batch_tasks.append(asyncio.create_task(self._run_batches(consumer), name=f"{self._group}-{i}"))

    async def stop(self) -> None:
        for task in self._batch_tasks:
            task.cancel()
        await asyncio.gather(*self._batch_tasks, return_exceptions=True)
        self._batch_tasks.clear()
        with contextlib.suppress(Exception):  # what is not committed is delivered again, and handled idempotently
            await self._offsets.commit()
        for consumer in self._batch_consumers:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def commit_offsets(self) -> None:
        """Background task: commit the offsets of handled records every `COMMIT_INTERVAL_SECONDS`."""
        await self._offsets.run()

    async def flush(self) -> None:
        """Commit the offsets of every record handled so far (before the consumers stop)."""
        await self._offsets.commit()

    def clients(self) -> list[Any]:
        """The subscribers' aiokafka consumers once the broker started them (for their lag)."""
        started = [c for c in (getattr(s, "consumer", None) for s in self._subscribers) if c is not None]
        return started + self._batch_consumers

    def register(self) -> None:
        """`workers` subscribers (group members) for all routed topics; a service that consumes nothing in a group
        (the API reads release.status on its own) registers none. Each member handles the partitions Kafka
        assigns it one record at a time, in order; the members of a process run concurrently."""
        if not self._routes:
            return
        for _ in range(self._workers):
            if self._scope is None:
                self._register_one()
            else:
                self._register_batch_member()

    def _register_batch_member(self) -> None:
        member = _Member(self._offsets)
        self._members.append(member)
        consumer = AIOKafkaConsumer(
            **(self._client or {}),
            group_id=self._group,
            client_id=self._group,
            enable_auto_commit=False,  # offsets of handled records are committed by `_HandledOffsets`
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._fetch_wait_ms,
            max_poll_interval_ms=300_000,
            partition_assignment_strategy=(RangePartitionAssignor,),  # see `_register_one`
        )
        self._batch_consumers.append(consumer)
        self._batch_listeners.append(member)

    async def _run_batches(self, consumer: AIOKafkaConsumer) -> None:
        """One batch member: what a fetch returned (up to `max_records`, in order on each partition), handled as
        one batch. Ends only when cancelled; a failure of the loop itself is logged and the loop goes on."""
        while True:
            try:
                fetched = await consumer.getmany(timeout_ms=1000, max_records=self._max_batch)
                records = [r for rs in fetched.values() for r in rs]
                if records:
                    await self._handle_batch(consumer, records)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker away, a rebalance: fetch again (the consumer reconnects)
                log.warning("batch consumer failed; fetching again", group=self._group, error=repr(exc))
                await asyncio.sleep(1.0)

    async def _handle_batch(self, consumer: AIOKafkaConsumer, records: list[Any]) -> None:
        """Decide `records` in one scope; on failure, record by record. A record that must be redelivered (a
        transient failure) rewinds its partition to it: nothing after it there is committed before it is handled."""
        ready: list[tuple[Any, Handler, Envelope]] = []
        others: list[Any] = []
        for record in records:
            handler, accept = self._routes[record.topic]
            envelope = None
            if self._attempts.verdict((record.topic, record.partition, record.offset)) is None:
                envelope = _decoded(record, accept)
            if envelope is None:
                others.append(record)  # dead-lettered by `_handle`, with the reason
            else:
                ready.append((record, handler, envelope))
        done: set[tuple[str, int, int]] = set()
        todo = records
        if ready and await self._decide_batch(ready):
            done = {(r.topic, r.partition, r.offset) for r, _, _ in ready}
            todo = others
        for record in todo:
            handler, accept = self._routes[record.topic]
            try:
                await self._handle(record, handler, accept)
            except Exception:
                self._settle(consumer, records, done)
                return
            done.add((record.topic, record.partition, record.offset))
        self._settle(consumer, records, done)

    async def _decide_batch(self, ready: list[tuple[Any, Handler, Envelope]]) -> bool:
        """True once every record's handler ran in one scope and the scope committed."""
        assert self._scope is not None
        started = time.perf_counter()
        try:
            async with self._scope([e for _, _, e in ready]):
                for record, handler, envelope in ready:
                    if isinstance(record.timestamp, int):
                        metrics.record_waited(record.topic, record.timestamp)
                    bind = {"release_id": envelope.subject, "tenant": envelope.tenant, "event_type": envelope.type}
                    with (
                        structlog.contextvars.bound_contextvars(**{k: v for k, v in bind.items() if v}),
                        metrics.handling(record.topic),
                    ):
                        await handler(envelope)
        except Exception as exc:
            metrics.batch_fell_back(self._group)
            log.info("batch not decided as one; handling its records one by one", records=len(ready), error=repr(exc))
            return False
        metrics.batch_done(self._group, len(ready), time.perf_counter() - started)
        for record, _, _ in ready:
            metrics.consumed(record.topic, "ok")
        return True

    def _settle(self, consumer: AIOKafkaConsumer, records: list[Any], done: set[tuple[str, int, int]]) -> None:
        """Per partition: the handled records up to the first one not handled are committed (in the background);
        the partition is rewound to that one, which comes again with everything after it."""
        by_partition: dict[TopicPartition, list[Any]] = {}
        for record in records:
            by_partition.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        for tp, mine in by_partition.items():
            for record in sorted(mine, key=lambda r: r.offset):
                if (record.topic, record.partition, record.offset) not in done:
                    with contextlib.suppress(Exception):  # a partition revoked meanwhile: its new owner has it
                        consumer.seek(tp, record.offset)
                    break
                self._offsets.handled(consumer, record)

    def joined(self) -> bool:
        """Whether every member of this process has joined its group: before that, records are not read, and a
        service that said it was healthy would let a caller publish into a void it then waits on (an approval
        for a release that the coordinator has not read yet)."""
        return all(m.joined for m in self._members)

    def _register_one(self) -> None:
        member = _Member(self._offsets)
        self._members.append(member)
        subscriber = self._broker.subscriber(
            *self._routes,
            group_id=self._group,
            ack_policy=AckPolicy.MANUAL,  # offsets of handled records are committed by `_HandledOffsets`
            listener=member,
            fetch_max_wait_ms=self._fetch_wait_ms,
            auto_offset_reset="earliest",
            max_poll_interval_ms=300_000,
            # the same partition of every topic to the same member: a release's candidate, results and control
            # records share its key, hence its partition number, and so one member (one instance) handles all of them
            partition_assignment_strategy=(RangePartitionAssignor,),
            title=self._group,
            parser=_parse_leniently,
            decoder=_undecoded,
        )
        self._subscribers.append(subscriber)

        @subscriber
        async def _consume(msg: KafkaMessage) -> None:
            record: Any = msg.raw_message  # one ConsumerRecord (not a batch subscriber)
            handler, accept = self._routes[record.topic]
            try:
                await self._handle(record, handler, accept)
            except BaseException:
                await msg.nack()  # back to this record: it is delivered again
                raise
            self._offsets.handled(msg.consumer, record)

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
            metrics.consumed(record.topic, "refused")
            return str(exc), "ContractError"
        except Exception as exc:  # a hostile record may break any parser: as permanent as a contract violation
            metrics.consumed(record.topic, "refused")
            return f"record cannot be decoded ({type(exc).__name__}): {exc}", type(exc).__name__
        if isinstance(record.timestamp, int):
            metrics.record_waited(record.topic, record.timestamp)
        bind = {"release_id": envelope.subject, "tenant": envelope.tenant, "event_type": envelope.type}
        with structlog.contextvars.bound_contextvars(**{k: v for k, v in bind.items() if v}):
            try:
                with metrics.handling(record.topic):
                    await handler(envelope)
            except PermanentError as exc:
                metrics.consumed(record.topic, "refused")
                return str(exc), type(exc).__name__
            except Exception as exc:
                attempts = self._attempts.failed(where)
                if attempts >= MAX_ATTEMPTS:
                    metrics.consumed(record.topic, "dead_lettered")
                    return f"gave up after {attempts} attempts: {exc!r}", type(exc).__name__
                metrics.consumed(record.topic, "retried")
                log.warning("handler failed; message will be redelivered", attempt=attempts, error=repr(exc))
                await asyncio.sleep(_retry_delay(attempts))
                raise
        metrics.consumed(record.topic, "ok")
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
            metrics.dead_lettered(letter.topic, reason, error_type, "topic")
        except Exception as exc:
            parked = await dead_letters.park(self._pool, letter, exc)
            if parked:
                metrics.dead_lettered(letter.topic, reason, error_type, "parked")
            log.error(
                "dead letter could not be produced; record parked in PostgreSQL (parked_records)",
                topic=letter.topic,
                partition=letter.partition,
                offset=letter.offset,
                error=dead_letters.describe(exc),
                already_parked=not parked,
            )
