"""Transactional outbox: events are written in the handler's transaction and published by a relay."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from aiokafka.errors import InvalidTopicError, MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError

from contracts.cloudevents import Envelope, encode
from releasegate_runtime import metrics
from releasegate_runtime.backoff import Backoff

NOTIFY_CHANNEL = "releasegate_outbox"
LOCK_SPACE = 7301  # pg advisory lock class of the outbox relays (key: the producer's name)
RETRY_INITIAL_SECONDS = 0.5
RETRY_CAP_SECONDS = 30.0
MAX_REASON = 1000
# What the broker answers for a record it will never take, however often it is sent: the relay keeps such a record
# aside (`refused`) instead of retrying it forever in front of every event after it. A topic the producer may not
# write is not among them: that is an ACL an operator fixes (OutboxLagHigh fires), and the events then flow.
REFUSED_FOR_GOOD = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError, InvalidTopicError)
# Publishes one record. It may return once the broker acknowledged the record (None), or as soon as the record is
# queued, with an awaitable of the acknowledgement: the relay then queues its whole batch first (the producer sends
# it in one request per partition, in order) and waits for every acknowledgement before marking the rows.
Publish = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[Awaitable[Any] | None]]
log = structlog.get_logger()


async def add(conn: asyncpg.Connection, producer: str, topic: str, envelope: Envelope, *, notify: bool = True) -> None:
    """Stage an event for publication; becomes visible to the relay only if the transaction commits. `notify`:
    wake the relay (PostgreSQL delivers the notification at commit, once per transaction whatever the count); a
    caller staging several events in one transaction may ask for it once and save a round trip per event."""
    topic, key, event_id, headers, payload = row(topic, envelope)
    await conn.execute(
        "INSERT INTO outbox (producer, topic, key, event_id, headers, payload, created_at)"
        " VALUES ($1,$2,$3,$4,$5,$6,clock_timestamp())"
        " ON CONFLICT (event_id) DO NOTHING",
        producer,
        topic,
        key,
        event_id,
        headers,
        payload,
    )
    if notify:
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, producer)


Row = tuple[str, str | None, str, dict[str, str], str]


def row(topic: str, envelope: Envelope) -> Row:
    """An event as its outbox row stores it: topic, key, event id, headers, payload (for callers that write
    several rows in one statement; `add` writes one)."""
    key, value, headers = encode(envelope)
    return topic, key.decode() if key else None, envelope.id, {k: v.decode() for k, v in headers}, value.decode()


class Relay:
    """Publishes a producer's staged events in order; woken by NOTIFY, with a poll as a safety net. Outages of
    the broker or of PostgreSQL, however long, only delay publication: every failure is logged and retried with
    a capped, jittered backoff, and `run` returns only when cancelled."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: str,
        publish: Publish,
        poll_seconds: float = 1.0,
        batch: int = 100,
        backoff: Backoff | None = None,
    ) -> None:
        self._pool, self._producer, self._publish = pool, producer, publish
        self._poll, self._batch = poll_seconds, batch
        self._backoff = backoff or Backoff(RETRY_INITIAL_SECONDS, RETRY_CAP_SECONDS, jitter=0.5)
        self._wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                await self._listen_and_publish()
            except Exception as exc:  # anything the broker or database may raise: aiokafka's errors are many
                delay = self._backoff.next_delay()
                log.warning(
                    "outbox relay cannot publish; will retry",
                    producer=self._producer,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)

    async def _listen_and_publish(self) -> None:
        """Publish until an error; the NOTIFY listener's connection is taken anew after each error (a restarted
        PostgreSQL closed the old one)."""
        listener = await self._pool.acquire()
        try:
            await listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
            while True:
                self._wake.clear()
                while await self.publish_pending():
                    pass
                self._backoff.reset()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._poll)
                except TimeoutError:
                    pass
        finally:
            await _quietly(listener.remove_listener(NOTIFY_CHANNEL, self._on_notify))
            await _quietly(self._pool.release(listener))

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == self._producer:
            self._wake.set()

    async def publish_pending(self) -> int:
        """Publish one batch; rows are marked only after the broker acknowledged them (at-least-once)."""
        async with self._pool.acquire() as conn, conn.transaction():
            # One relay per producer publishes at a time, whichever instance it runs in: a second one skipping the
            # first one's locked rows would publish later events of a release before earlier ones. The lock is the
            # transaction's: a relay that dies (or whose connection does) hands over at once.
            rows = await conn.fetch(
                "SELECT id, topic, key, headers, payload, extract(epoch FROM clock_timestamp() - created_at) AS waited"
                " FROM outbox"
                " WHERE pg_try_advisory_xact_lock($3, hashtext($1)) AND producer = $1 AND published_at IS NULL"
                " AND refused IS NULL ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                self._producer,
                self._batch,
                LOCK_SPACE,
            )
            metrics.outbox_waited(self._producer, [float(r["waited"]) for r in rows])
            queued_at = time.perf_counter()
            acknowledgements: list[tuple[asyncpg.Record, Awaitable[Any]]] = []
            refused: list[tuple[asyncpg.Record, BaseException]] = []
            for row in rows:
                try:
                    queued = await self._publish(
                        row["topic"],
                        row["key"].encode() if row["key"] else None,
                        row["payload"].encode(),
                        [(k, v.encode()) for k, v in row["headers"].items()],
                    )
                except REFUSED_FOR_GOOD as exc:
                    refused.append((row, exc))
                    continue
                if inspect.isawaitable(queued):
                    acknowledgements.append((row, queued))
            outcomes = await asyncio.gather(*(ack for _, ack in acknowledgements), return_exceptions=True)
            failed = []
            for (row, _), outcome in zip(acknowledgements, outcomes, strict=True):
                if isinstance(outcome, REFUSED_FOR_GOOD):
                    refused.append((row, outcome))
                elif isinstance(outcome, BaseException):
                    failed.append(outcome)
            if failed:
                raise failed[0]
            kept_aside = {r["id"] for r, _ in refused}
            published = [r["id"] for r in rows if r["id"] not in kept_aside]
            if published:
                metrics.outbox_acknowledged(self._producer, time.perf_counter() - queued_at)
                await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", published)
            for row, problem in refused:
                await self._refuse(conn, row, problem)
        metrics.outbox_published(self._producer, len(published))
        return len(rows)

    async def _refuse(self, conn: asyncpg.Connection, row: asyncpg.Record, exc: BaseException) -> None:
        """The broker will never take this event: it stays in the outbox with the reason, out of the way of the
        events after it (a saga waiting for it meets its step's deadline instead of every release stalling)."""
        reason = f"{type(exc).__name__}: {exc} ({len(row['payload'])} bytes, topic {row['topic']})"[:MAX_REASON]
        log.error(
            "outbox event refused for good; kept with the reason", producer=self._producer, id=row["id"], reason=reason
        )
        await conn.execute("UPDATE outbox SET refused = $2 WHERE id = $1", row["id"], reason)
        metrics.outbox_refused(self._producer)


async def _quietly(cleanup: Awaitable[object]) -> None:
    """Cleanup of a connection that may already be broken must not hide the error that broke it."""
    try:
        await cleanup
    except Exception as exc:
        log.debug("outbox relay cleanup failed", error=repr(exc))
