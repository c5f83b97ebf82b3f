"""Live updates: every release.status record, read by this API process on its own (no consumer group: each API
instance sees every record), fanned out to the browsers and CLIs following a release. A slow client loses its
oldest updates, never slows the others; the client re-reads the release when it sees a gap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer

from contracts import topics
from contracts.cloudevents import ContractError, decode, to_json_dict
from contracts.events import ReleaseStatusChanged
from releasegate_runtime.kafka import client_options
from releasegate_runtime.settings import ServiceSettings

log = structlog.get_logger()


class TooManyClients(Exception):
    """The API follows as many live clients as its settings allow (RG_SSE_CLIENTS), no more."""


@dataclass
class Subscriber:
    release_id: str | None
    queue: asyncio.Queue[dict[str, Any]]
    dropped: int = 0


class StatusHub:
    """Subscribers by the release they follow (None: all)."""

    def __init__(self, queue_size: int = 256, max_clients: int = 200) -> None:
        self.queue_size, self.max_clients = queue_size, max_clients
        self.subscribers: list[Subscriber] = []

    @asynccontextmanager
    async def subscribe(self, release_id: str | None) -> AsyncIterator[Subscriber]:
        if len(self.subscribers) >= self.max_clients:
            raise TooManyClients(f"{self.max_clients} live clients already")
        sub = Subscriber(release_id, asyncio.Queue(self.queue_size))
        self.subscribers.append(sub)
        try:
            yield sub
        finally:
            self.subscribers.remove(sub)

    def publish(self, event: dict[str, Any]) -> None:
        for sub in list(self.subscribers):
            if sub.release_id is not None and sub.release_id != event.get("release_id"):
                continue
            if sub.queue.full():
                sub.queue.get_nowait()
                sub.dropped += 1
            sub.queue.put_nowait(event)


def status_event(headers: Any, value: bytes | None) -> dict[str, Any] | None:
    """The release.status record as the clients get it; None (logged) for what is not a status change."""
    try:
        envelope = decode(headers, value)
    except ContractError as exc:
        log.warning("release.status record not decodable; not forwarded", reason=str(exc))
        return None
    if not isinstance(envelope.data, ReleaseStatusChanged):
        return None
    return {"id": envelope.id, "time": envelope.time.isoformat(), **to_json_dict(envelope.data)}


async def follow(settings: ServiceSettings, hub: StatusHub, ready: asyncio.Event | None = None) -> None:
    """Reads release.status from its end, for as long as the service runs."""
    consumer = AIOKafkaConsumer(
        topics.STATUS,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        client_id="releasegate-api-live",
        **client_options(settings),
    )
    await consumer.start()
    try:
        # place the position at the end now, so that what is published after `ready` reaches the clients
        await consumer.seek_to_end()
        for tp in consumer.assignment():
            await consumer.position(tp)
        if ready is not None:
            ready.set()
        async for record in consumer:
            event = status_event(record.headers, record.value)
            if event is not None:
                hub.publish(event)
    finally:
        await consumer.stop()


def sse(event: dict[str, Any], name: str = "status") -> bytes:
    return f"id: {event.get('id', '')}\nevent: {name}\ndata: {json.dumps(event, default=str)}\n\n".encode()
