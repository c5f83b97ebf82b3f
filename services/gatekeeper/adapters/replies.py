"""Answers commands once through the transactional outbox (`releasegate_runtime.worker.reply_once`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from contracts.cloudevents import Envelope
from contracts.events import Contract
from releasegate_runtime import outbox, worker


class OutboxReplies:
    def __init__(self, pool: asyncpg.Pool, consumer: str, direct: outbox.DirectPublisher | None = None) -> None:
        """`direct`: publishes each reply straight after its commit (None: the outbox relay does)."""
        self._pool, self._consumer, self._direct = pool, consumer, direct

    async def once(self, envelope: Envelope, compute: Callable[[], Awaitable[Contract]]) -> None:
        await worker.reply_once(self._pool, self._consumer, envelope, compute, self._direct)
