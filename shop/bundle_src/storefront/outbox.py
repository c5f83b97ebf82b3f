"""Transactional outbox of the storefront: a business event is written in the same database transaction as the
change it describes (`order.placed` in the order's own transaction), and a relay publishes it afterwards.

So an order a customer saw confirmed always has its `order.placed` on `shop.events`, which the data-aware rollback
replays; and a broker outage delays events instead of failing checkouts. The bundle runs standalone, so this is the
storefront's own small copy of the idea of `releasegate_runtime/outbox.py`, not an import of it.

One relay per database publishes (an advisory lock elects it among the instances sharing the database), oldest row
first; a row is marked sent only after the broker acknowledged it (acks=all, idempotent producer): delivery is
at-least-once, and a duplicate carries the same `ce_id`, which consumers deduplicate on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

log = logging.getLogger("storefront.outbox")

NOTIFY_CHANNEL = "storefront_outbox"
# Arbitrary but fixed (next to db.SCHEMA_LOCK_KEY): the instance holding it is the database's relay.
RELAY_LOCK_KEY = 472_911_306
BATCH = 200
POLL_S = 1.0  # safety net under NOTIFY (a notification is lost while the relay reconnects)
LEADER_RETRY_S = 2.0  # how often a standby relay asks whether the current one is gone
SEND_TIMEOUT_S = 60.0  # a batch the broker has not acknowledged by then is sent again by a fresh producer
STOP_TIMEOUT_S = 10.0
SENT_RETENTION_S = 600.0  # sent rows are kept this long for inspection, then purged
PURGE_EVERY_S, PURGE_LIMIT = 10.0, 10_000  # up to 1,000 rows a second: well above what checkouts stage
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.2, 5.0
CONNECT_TIMEOUT_S, COMMAND_TIMEOUT_S = 10.0, 30.0
EXPECTED_OUTAGES = (KafkaError, OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class OutgoingEvent:
    """One record exactly as it goes on the topic."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class PendingEvent:
    id: int
    event: OutgoingEvent


class Store(Protocol):
    """The outbox table as the elected relay sees it."""

    async def pending(self, limit: int) -> list[PendingEvent]: ...
    async def mark_sent(self, ids: Sequence[int]) -> None: ...
    async def mark_refused(self, id_: int, reason: str) -> None: ...
    async def purge_sent(self, older_than_s: float, limit: int) -> int: ...
    async def wait_for_new(self, timeout_s: float) -> None: ...


class Producer(Protocol):
    """The part of aiokafka's producer the relay uses: `send` returns the future of the broker's acknowledgement."""

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Awaitable[Any]: ...
    async def stop(self) -> None: ...


Lead = Callable[[], contextlib.AbstractAsyncContextManager[Store]]
OpenProducer = Callable[[], Awaitable[Producer]]


async def add(conn: asyncpg.Connection, events: Sequence[OutgoingEvent]) -> None:
    """Stage events in the caller's transaction: the relay sees them only if it commits."""
    if not events:
        return
    await conn.executemany(
        "INSERT INTO event_outbox (topic, key, value, header_names, header_values) VALUES ($1, $2, $3, $4, $5)",
        [(e.topic, e.key, e.value, [name for name, _ in e.headers], [value for _, value in e.headers]) for e in events],
    )
    await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)


async def enqueue(pool: asyncpg.Pool, events: Sequence[OutgoingEvent]) -> None:
    """Stage events that belong to no other change, in a transaction of their own."""
    async with pool.acquire() as conn, conn.transaction():
        await add(conn, events)


def backoff_s(failures: int) -> float:
    """Delay before the relay's next attempt after `failures` failed ones in a row."""
    return min(BACKOFF_FIRST_S * 2 ** max(failures - 1, 0), BACKOFF_MAX_S)


class Relay:
    """Publishes the outbox while this instance holds the relay lock. Any failure (database, broker, timeout, an
    unexpected aiokafka error) closes the producer and the connection, waits a growing delay and starts again:
    a broker outage of any length only delays events, and the relay never ends while the instance runs."""

    def __init__(
        self,
        lead: Lead,
        open_producer: OpenProducer,
        *,
        batch: int = BATCH,
        poll_s: float = POLL_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._lead, self._open_producer = lead, open_producer
        self._batch, self._poll_s, self._sleep = batch, poll_s, sleep
        self.failures = 0  # failed attempts in a row, reset by every acknowledged batch
        self._purged_at: float | None = None

    async def run(self) -> None:
        while True:
            try:
                await self._serve()
            except Exception as exc:  # no error may end the relay: it is retried after a delay
                self.failures += 1
                delay = backoff_s(self.failures)
                # expected outages are one line each; anything else also gets its traceback, to be fixed
                log.warning(
                    "outbox relay interrupted (%s: %s); retrying in %.1fs",
                    type(exc).__name__,
                    exc,
                    delay,
                    exc_info=not isinstance(exc, EXPECTED_OUTAGES),
                )
                await self._sleep(delay)

    async def _serve(self) -> None:
        async with self._lead() as store:
            producer = await self._open_producer()
            try:
                while True:
                    sent = await self.publish_batch(store, producer)
                    await self._purge(store)
                    if sent < self._batch:
                        await store.wait_for_new(self._poll_s)
            finally:
                await _stop(producer)

    async def publish_batch(self, store: Store, producer: Producer) -> int:
        """Send up to one batch of pending events; mark the acknowledged ones sent, then raise the first failure."""
        rows = await store.pending(self._batch)
        deliveries: list[tuple[int, asyncio.Future]] = []
        async with asyncio.timeout(SEND_TIMEOUT_S):
            for row in rows:
                try:
                    ack = await producer.send(
                        row.event.topic, row.event.value, key=row.event.key, headers=list(row.event.headers)
                    )
                except MessageSizeTooLargeError as exc:
                    await self._refuse(store, row, exc)
                    continue
                deliveries.append((row.id, asyncio.ensure_future(ack)))
            outcomes = await asyncio.gather(*(ack for _, ack in deliveries), return_exceptions=True)
        acknowledged = [
            id_
            for (id_, _), outcome in zip(deliveries, outcomes, strict=True)
            if not isinstance(outcome, BaseException)
        ]
        if acknowledged:
            await store.mark_sent(acknowledged)
        for (id_, _), outcome in zip(deliveries, outcomes, strict=True):
            if isinstance(outcome, MessageSizeTooLargeError):
                await self._refuse(store, next(r for r in rows if r.id == id_), outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        self.failures = 0
        return len(rows)

    async def _refuse(self, store: Store, row: PendingEvent, exc: Exception) -> None:
        """The broker will never take this record: keep it, with the reason, out of the way of the others."""
        reason = f"{type(exc).__name__}: {exc} ({len(row.event.value)} bytes)"
        log.error("outbox event %d refused for good and left in event_outbox: %s", row.id, reason)
        await store.mark_refused(row.id, reason)

    async def _purge(self, store: Store) -> None:
        now = asyncio.get_running_loop().time()
        if self._purged_at is None or now - self._purged_at >= PURGE_EVERY_S:
            self._purged_at = now
            await store.purge_sent(SENT_RETENTION_S, PURGE_LIMIT)


async def _stop(producer: Producer) -> None:
    """Stop a producer without waiting for ever on a broker that is gone (stop flushes pending records)."""
    try:
        await asyncio.wait_for(producer.stop(), STOP_TIMEOUT_S)
    except Exception as exc:  # the producer is abandoned either way
        log.warning("outbox producer did not stop cleanly (%s: %s)", type(exc).__name__, exc)


class PostgresStore:
    """The outbox table on the relay's own connection (the one holding the relay lock)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._new = asyncio.Event()

    async def listen(self) -> None:
        await self._conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._new.set())

    async def pending(self, limit: int) -> list[PendingEvent]:
        rows = await self._conn.fetch(
            "SELECT id, topic, key, value, header_names, header_values FROM event_outbox"
            " WHERE sent_at IS NULL AND refused IS NULL ORDER BY id LIMIT $1",
            limit,
        )
        return [
            PendingEvent(
                r["id"],
                OutgoingEvent(
                    r["topic"], r["key"], r["value"], tuple(zip(r["header_names"], r["header_values"], strict=True))
                ),
            )
            for r in rows
        ]

    async def mark_sent(self, ids: Sequence[int]) -> None:
        await self._conn.execute("UPDATE event_outbox SET sent_at = now() WHERE id = ANY($1::bigint[])", list(ids))

    async def mark_refused(self, id_: int, reason: str) -> None:
        await self._conn.execute("UPDATE event_outbox SET refused = $2 WHERE id = $1", id_, reason)

    async def purge_sent(self, older_than_s: float, limit: int) -> int:
        deleted = await self._conn.fetch(
            "DELETE FROM event_outbox WHERE id IN (SELECT id FROM event_outbox WHERE sent_at"
            " < now() - make_interval(secs => $1) ORDER BY id LIMIT $2) RETURNING id",
            float(older_than_s),
            limit,
        )
        return len(deleted)

    async def wait_for_new(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._new.wait(), timeout_s)
        self._new.clear()


def postgres_leadership(database_url: str, *, retry_s: float = LEADER_RETRY_S) -> Lead:
    """Connect, wait until this instance holds the relay lock, and yield the outbox on that connection; closing the
    connection (or the instance dying) releases the lock to another instance."""

    @contextlib.asynccontextmanager
    async def lead() -> AsyncIterator[Store]:
        conn = await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT_S, command_timeout=COMMAND_TIMEOUT_S)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                await asyncio.sleep(retry_s)
            store = PostgresStore(conn)
            await store.listen()
            log.info("this instance relays the outbox")
            yield store
        finally:
            try:
                await asyncio.wait_for(conn.close(), STOP_TIMEOUT_S)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()

    return lead
