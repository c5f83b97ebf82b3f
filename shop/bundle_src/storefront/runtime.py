"""Connections of a storefront instance: opened in the background with retries, closed on shutdown.

Only the database is needed to serve: business events go through the outbox, whose relay owns the Kafka producer
and retries on its own, so a broker outage never blocks a request nor the instance's start."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp
import asyncpg
from aiokafka import AIOKafkaProducer

from storefront import db, outbox
from storefront.events import EventPublisher
from storefront.exporter import Exporter
from storefront.settings import Settings

log = logging.getLogger("storefront")
T = TypeVar("T")
# A reservation no checkout confirmed within this time belongs to a checkout that died: its stock goes back.
RESERVATION_TTL_S = 300.0
REAP_EVERY_S = 30.0


@dataclass
class Runtime:
    settings: Settings
    session: aiohttp.ClientSession | None = None
    pool: asyncpg.Pool | None = None
    publisher: EventPublisher | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    background: list[asyncio.Task] = field(default_factory=list)

    async def connect(self) -> None:
        """Open the database pool (creating the schema), retrying until it works; then start the background
        tasks, the outbox relay among them."""
        s = self.settings
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        self.pool = await _retry("database", self._open_pool)
        self.publisher = EventPublisher(
            self.pool, s.events_topic, version=s.version, environment=s.environment, instance=s.instance
        )
        self.ready.set()
        log.info("storefront %s ready (%s/%s)", s.version, s.environment, s.instance)
        exporter = Exporter(
            self.pool,
            self.session,
            erp_url=s.erp_url,
            version=s.version,
            instance=s.instance,
            adopt_after_s=s.erp_adopt_after_s,
        )
        relay = outbox.Relay(outbox.postgres_leadership(s.database_url), self._open_producer)
        self.background = [
            asyncio.create_task(exporter.run(), name="erp-exporter"),
            asyncio.create_task(_reap_reservations(self.pool), name="reservation-reaper"),
            asyncio.create_task(relay.run(), name="outbox-relay"),
        ]

    async def _open_pool(self) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(self.settings.database_url, min_size=1, max_size=10)
        try:
            await db.create_schema(pool)
        except BaseException:
            await pool.close()
            raise
        return pool

    async def _open_producer(self) -> AIOKafkaProducer:
        """The relay's producer: acks from every in-sync replica, idempotent so a retried batch is not doubled."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            client_id=f"storefront-{self.settings.instance}",
            **self.settings.kafka_security(),
        )
        try:
            # bounded: a broker that accepts connections but never answers must not stall the relay's retries
            await asyncio.wait_for(producer.start(), outbox.SEND_TIMEOUT_S)
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def close(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.pool is not None:
            await self.pool.close()
        if self.session is not None:
            await self.session.close()


async def _retry(what: str, open_: Callable[[], Awaitable[T]]) -> T:
    delay = 0.2
    while True:
        try:
            return await open_()
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("%s not reachable yet (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)


async def _reap_reservations(pool: asyncpg.Pool) -> None:
    while True:
        await asyncio.sleep(REAP_EVERY_S)
        try:
            released = await db.release_expired(pool, RESERVATION_TTL_S)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("releasing expired reservations failed (%s)", exc)
            continue
        if released:
            log.info("released %d expired inventory reservations", released)


async def lifecycle(runtime: Runtime) -> AsyncIterator[None]:
    """aiohttp cleanup context: connect in the background so /health can answer 503 meanwhile."""
    task = asyncio.create_task(runtime.connect())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await runtime.close()
