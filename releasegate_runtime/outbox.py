"""Transactional outbox: events are written in the handler's transaction and published by a relay, or, when the
writer claimed them, by the writer itself straight after its commit with the relay as the safety net."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
# A claimed row (`claimed_until`) is its writer's to publish for this long; then the relay's, as any row.
CLAIM_SECONDS = 5.0
# A writer may chain a claim behind earlier rows of the key that its own publisher still holds, claimed, for at
# least this long: they go out before it, in commit order.
CHAIN_MARGIN_SECONDS = 1.0
# What a writer that publishes its own rows adds to its INSERT for column `claimed_until`, with the producer, the
# row's key and the claimer (the writer's `DirectPublisher.token`; NULL claims nothing) as the placeholders: a row
# is claimed only when every earlier row with its key is published, or is held by the same claimer's publisher
# (claimed with its token, the claim not about to expire). So the events of a key stay in order: the relay has
# none of them before them, and one publisher sends them in the order they were committed.
CLAIM = (
    "CASE WHEN {claimer} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM outbox AS earlier WHERE earlier.producer = {producer}"
    " AND earlier.key = {key} AND earlier.published_at IS NULL AND earlier.refused IS NULL"
    " AND NOT coalesce(earlier.claimed_by = {claimer}"
    f" AND earlier.claimed_until > clock_timestamp() + interval '{CHAIN_MARGIN_SECONDS} seconds', false))"
    f" THEN clock_timestamp() + interval '{CLAIM_SECONDS} seconds' END"
)
# What the broker answers for a record it will never take, however often it is sent: the relay keeps such a record
# aside (`refused`) instead of retrying it forever in front of every event after it. A topic the producer may not
# write is not among them: that is an ACL an operator fixes (OutboxLagHigh fires), and the events then flow.
REFUSED_FOR_GOOD = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError, InvalidTopicError)
# Publishes one record. It may return once the broker acknowledged the record (None), or as soon as the record is
# queued, with an awaitable of the acknowledgement: the relay then queues its whole batch first (the producer sends
# it in one request per partition, in order) and waits for every acknowledgement before marking the rows.
Publish = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[Awaitable[Any] | None]]
log = structlog.get_logger()


async def add(
    conn: asyncpg.Connection,
    producer: str,
    topic: str,
    envelope: Envelope,
    *,
    notify: bool = True,
    claim: DirectPublisher | None = None,
) -> Claimed | None:
    """Stage an event for publication; becomes visible to the relay only if the transaction commits. `notify`:
    wake the relay (PostgreSQL delivers the notification at commit, once per transaction whatever the count); a
    caller staging several events in one transaction may ask for it once and save a round trip per event.
    `claim`: the caller publishes the event itself with this publisher once the transaction committed
    (`DirectPublisher.committed`) when no earlier event with its key waits for anyone else (`CLAIM`); returns the
    claimed row then (None: the relay publishes it)."""
    staged = row(topic, envelope)
    topic, key, event_id, headers, payload = staged
    found = await conn.fetchrow(
        "INSERT INTO outbox (producer, topic, key, event_id, headers, payload, created_at, claimed_by, claimed_until)"
        " VALUES ($1,$2,$3,$4,$5,$6,clock_timestamp(), $7::text, "
        + CLAIM.format(claimer="$7::text", producer="$1", key="$3")
        + ") ON CONFLICT (event_id) DO NOTHING RETURNING id, claimed_until IS NOT NULL AS claimed",
        producer,
        topic,
        key,
        event_id,
        headers,
        payload,
        None if claim is None else claim.token,
    )
    if found is not None and found["claimed"] and claim is not None:
        return Claimed(found["id"], staged, claim.token)
    if notify:
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, producer)
    return None


Row = tuple[str, str | None, str, dict[str, str], str]


@dataclass(frozen=True)
class Claimed:
    """A row its writer claimed: its id, what it holds, and the publisher token it was claimed with."""

    id: int
    row: Row
    by: str


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
            # A row its writer claimed is left to it, and so is every later row with its key (they must follow it).
            rows = await conn.fetch(
                "SELECT id, topic, key, headers, payload, extract(epoch FROM clock_timestamp() - created_at) AS waited"
                " FROM outbox AS o"
                " WHERE pg_try_advisory_xact_lock($3, hashtext($1)) AND producer = $1 AND published_at IS NULL"
                " AND refused IS NULL AND (claimed_until IS NULL OR claimed_until < clock_timestamp())"
                " AND NOT EXISTS (SELECT 1 FROM outbox AS c WHERE c.producer = $1 AND c.key = o.key AND c.id < o.id"
                " AND c.published_at IS NULL AND c.refused IS NULL AND c.claimed_until >= clock_timestamp())"
                " ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
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


class DirectPublisher:
    """Publishes the rows a transaction claimed (`CLAIM`) as soon as it committed, from memory: no wake-up of the
    relay, no read of the rows, so an event is on the broker one commit after its decision. Rows are published in
    the order they were committed, then marked published. Whatever fails (the broker, PostgreSQL, the process) only
    delays them: a claim the writer did not fulfil expires and the relay publishes the row, and the rows after it
    with its key, in order (at least once: a row published but not marked is published again)."""

    def __init__(self, pool: asyncpg.Pool, producer: str, publish: Publish, backlog: int = 10_000) -> None:
        self._pool, self._producer, self._publish = pool, producer, publish
        self._queue: asyncio.Queue[tuple[float, list[Claimed]]] = asyncio.Queue()
        self._backlog = backlog
        self._token = uuid.uuid4().hex

    @property
    def token(self) -> str:
        """What a writer claims rows with (`CLAIM`). A failed publication replaces it: the rows claimed with the
        old one are then the relay's at their claim's expiry, and no new row is chained behind them."""
        return self._token

    def committed(self, rows: list[Claimed]) -> None:
        """Hand over the claimed rows of a transaction that committed (in id order). Beyond `backlog` waiting rows
        (the broker is away) they are left to the relay at their claim's expiry."""
        if rows and self._queue.qsize() < self._backlog:
            self._queue.put_nowait((time.perf_counter(), rows))

    async def run(self) -> None:
        while True:
            handed = [await self._queue.get()]
            while not self._queue.empty():
                handed.append(self._queue.get_nowait())
            try:
                await self._publish_all(handed)
            except Exception as exc:  # the broker's or the database's: the relay takes the rows at expiry
                self._token = uuid.uuid4().hex  # rows chained behind these must not go out before them
                log.warning(
                    "direct publication failed; the relay publishes the rows when their claim expires",
                    producer=self._producer,
                    rows=sum(len(rows) for _, rows in handed),
                    error=f"{type(exc).__name__}: {exc}",
                )

    async def _publish_all(self, handed: list[tuple[float, list[Claimed]]]) -> None:
        """Publish what was handed over, in order, but rows claimed with an older token: a publication failed
        since they were claimed, and they may be chained behind a row that the relay now has."""
        handed = [(at, kept) for at, rows in handed if (kept := [c for c in rows if c.by == self._token])]
        if not handed:
            return
        started = time.perf_counter()
        metrics.outbox_waited(self._producer, [started - at for at, rows in handed for _ in rows])
        acknowledgements = []
        for _, rows in handed:
            for claimed in rows:
                topic, key, _event_id, headers, payload = claimed.row
                queued = await self._publish(
                    topic,
                    key.encode() if key else None,
                    payload.encode(),
                    [(k, v.encode()) for k, v in headers.items()],
                )
                if inspect.isawaitable(queued):
                    acknowledgements.append(queued)
        await asyncio.gather(*acknowledgements)
        metrics.outbox_acknowledged(self._producer, time.perf_counter() - started)
        ids = [claimed.id for _, rows in handed for claimed in rows]
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[]) AND published_at IS NULL", ids
            )
        metrics.outbox_published(self._producer, len(ids))


async def _quietly(cleanup: Awaitable[object]) -> None:
    """Cleanup of a connection that may already be broken must not hide the error that broke it."""
    try:
        await cleanup
    except Exception as exc:
        log.debug("outbox relay cleanup failed", error=repr(exc))
