"""The delivery ledger in the control database: `notification_events` (what each event tells, and the record it
came as), `notification_deliveries` (one row per event and route: status, attempts, next attempt, last error) and
`notifier_releases` (each release's version and furthest environment). Claims use FOR UPDATE SKIP LOCKED, so
several notifier processes share the work without sending twice. Inside `batch`, what a fetch brought is recorded
in one transaction on one connection (one commit for the batch, not one per event)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import datetime

import asyncpg

from contracts import topics
from contracts.cloudevents import Envelope
from releasegate_platform.catalog import NotificationRoute
from releasegate_runtime import db, dead_letters, outbox
from services.notifier.domain import Notification, ReleaseContext
from services.notifier.ports import Delivery, Source

ERROR_LIMIT = 1000
GIVEN_UP = "DeliveryFailed"


@dataclass(frozen=True)
class _Record:
    """The consumed record as `dead_letters.bound` reads it. A delivery's dead letter is not a refused record:
    its partition and offset are -1 (the event was consumed fine); the `ce_id` header identifies it."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    partition: int = -1
    offset: int = -1


class PgDeliveries:
    def __init__(self, pool: asyncpg.Pool, producer: str) -> None:
        self._pool, self._producer = pool, producer
        self._batch: ContextVar[asyncpg.Connection | None] = ContextVar("notifier_batch", default=None)

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """`context` and `record` calls in the block share one transaction, committed at its end (or undone
        with all of them, if the block raises). A record inside sees what the ones before it recorded."""
        async with self._pool.acquire() as conn, conn.transaction():
            token = self._batch.set(conn)
            try:
                yield
            finally:
                self._batch.reset(token)

    @asynccontextmanager
    async def _conn(self, *, transaction: bool) -> AsyncIterator[asyncpg.Connection]:
        """The batch's connection (its transaction already open), or a pooled one (in a transaction of its own if
        `transaction`)."""
        shared = self._batch.get()
        if shared is not None:
            yield shared
            return
        async with self._pool.acquire() as conn:
            if not transaction:
                yield conn
                return
            async with conn.transaction():
                yield conn

    async def context(self, release_id: str) -> ReleaseContext | None:
        async with self._conn(transaction=False) as conn:
            row = await conn.fetchrow(
                "SELECT service, version, environment FROM notifier_releases WHERE release_id = $1", release_id
            )
        return ReleaseContext(row["service"], row["version"], row["environment"]) if row else None

    async def record(
        self,
        consumer: str,
        n: Notification,
        routes: list[NotificationRoute],
        source: Source,
        context: ReleaseContext | None,
    ) -> bool:
        async with self._conn(transaction=True) as conn:
            if not await db.first_time(conn, consumer, n.event_id):
                return False
            if context is not None:
                await conn.execute(
                    "INSERT INTO notifier_releases (release_id, service, version, environment) VALUES ($1,$2,$3,$4)"
                    " ON CONFLICT (release_id) DO UPDATE SET service = $2, version = $3, environment = $4,"
                    " updated_at = clock_timestamp()",
                    n.release_id,
                    context.service,
                    context.version,
                    context.environment,
                )
            if not routes:
                return True
            await conn.execute(
                "INSERT INTO notification_events (event_id, release_id, notification, source) VALUES ($1,$2,$3,$4)"
                " ON CONFLICT (event_id) DO NOTHING",
                n.event_id,
                n.release_id,
                n.as_json(),
                asdict(source),
            )
            await conn.executemany(
                "INSERT INTO notification_deliveries (event_id, route, channel, spec) VALUES ($1,$2,$3,$4)"
                " ON CONFLICT (event_id, route) DO NOTHING",
                [(n.event_id, r.name, r.channel, r.model_dump(mode="json")) for r in routes],
            )
        return True

    async def claim(self, limit: int, lease_seconds: float) -> list[Delivery]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "UPDATE notification_deliveries d SET status = 'sending', attempts = d.attempts + 1,"
                " next_attempt_at = clock_timestamp() + make_interval(secs => $2), updated_at = clock_timestamp()"
                " FROM notification_events e WHERE e.event_id = d.event_id AND (d.event_id, d.route) IN ("
                "  SELECT event_id, route FROM notification_deliveries WHERE status IN ('pending', 'sending')"
                "  AND next_attempt_at <= clock_timestamp() ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
                " RETURNING d.event_id, d.spec, d.attempts, e.notification",
                limit,
                lease_seconds,
            )
        return [
            Delivery(
                event_id=r["event_id"],
                route=NotificationRoute.model_validate(r["spec"]),
                notification=Notification.from_json(r["notification"]),
                attempt=r["attempts"],
            )
            for r in rows
        ]

    async def delivered(self, d: Delivery) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE notification_deliveries SET status = 'delivered', delivered_at = clock_timestamp(),"
                " updated_at = clock_timestamp() WHERE event_id = $1 AND route = $2 AND status = 'sending'",
                d.event_id,
                d.route.name,
            )

    async def retry(self, d: Delivery, error: str, at: datetime) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE notification_deliveries SET status = 'pending', next_attempt_at = $3, last_error = $4,"
                " updated_at = clock_timestamp() WHERE event_id = $1 AND route = $2 AND status = 'sending'",
                d.event_id,
                d.route.name,
                at,
                error[:ERROR_LIMIT],
            )

    async def give_up(self, d: Delivery, error: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            source = await conn.fetchval(
                "UPDATE notification_deliveries d SET status = 'failed', last_error = $3, updated_at ="
                " clock_timestamp() FROM notification_events e WHERE d.event_id = $1 AND d.route = $2"
                " AND d.status = 'sending' AND e.event_id = d.event_id RETURNING e.source",
                d.event_id,
                d.route.name,
                error[:ERROR_LIMIT],
            )
            if source is None:
                return  # another process settled it
            record = _Record(
                topic=source["topic"],
                key=source["key"].encode() if source["key"] is not None else None,
                value=source["value"].encode(),
                headers=[(k, v.encode()) for k, v in source["headers"].items()],
            )
            letter = dead_letters.bound(record, f"releasegate-{self._producer}", error, GIVEN_UP).dead_letter()
            await outbox.add(
                conn,
                self._producer,
                topics.DEADLETTER,
                Envelope.new(letter, f"releasegate/{self._producer}", subject=letter.key),
            )
