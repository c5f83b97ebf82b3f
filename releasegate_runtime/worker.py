"""The request/reply shape shared by the worker services: compute a result for a command once, and stage it in
the outbox in the same transaction that marks the command processed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import Contract
from releasegate_runtime import db, outbox, telemetry


async def already_done(pool: asyncpg.Pool, consumer: str, event_id: str) -> bool:
    async with pool.acquire() as conn:
        return bool(
            await conn.fetchval(
                "SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2", consumer, event_id
            )
        )


async def reply_once(
    pool: asyncpg.Pool,
    consumer: str,
    envelope: Envelope,
    compute: Callable[[], Awaitable[Contract]],
    direct: outbox.DirectPublisher | None = None,
) -> None:
    """`compute` runs outside the transaction (it may be slow) and must itself be idempotent. The result goes to
    the consumer's own result topic, which only its principal (the same name) may write; with `direct`, straight
    after the commit (the outbox relay otherwise, and whenever that fails)."""
    if await already_done(pool, consumer, envelope.id):
        return
    result = await compute()
    async with pool.acquire() as conn, conn.transaction():
        if not await db.first_time(conn, consumer, envelope.id):
            return
        trace = telemetry.inject() or envelope.trace
        claimed = await outbox.add(
            conn,
            consumer,
            topics.results_for(consumer),
            Envelope.new(result, f"releasegate/{consumer}", envelope.subject, tenant=envelope.tenant, trace=trace),
            claim=direct,
        )
    if claimed is not None and direct is not None:
        direct.committed([claimed])
