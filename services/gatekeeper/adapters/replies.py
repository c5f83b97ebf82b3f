"""Answers commands once through the transactional outbox (`releasegate_runtime.worker.reply_once`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from contracts.cloudevents import Envelope
from contracts.events import Contract
from releasegate_runtime import worker


class OutboxReplies:
    def __init__(self, pool: asyncpg.Pool, consumer: str) -> None:
        self._pool, self._consumer = pool, consumer

    async def once(self, envelope: Envelope, compute: Callable[[], Awaitable[Contract]]) -> None:
        await worker.reply_once(self._pool, self._consumer, envelope, compute)
