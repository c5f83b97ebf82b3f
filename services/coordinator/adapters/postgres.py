"""The saga store on PostgreSQL: the saga row updated only at the revision it was read at (optimistic
concurrency), and every effect of a decision in the same transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from contracts.cloudevents import Envelope
from contracts.events import OperatorCommand
from releasegate_platform.verifier_registry import Known, known_verifiers
from releasegate_runtime import db, outbox
from services.coordinator import upcast
from services.coordinator.model import Saga
from services.coordinator.ports import AuditEntry, ConcurrentUpdate, Due, Loaded

PRODUCER = "coordinator"
# A decision's audit entries and outbox events in one statement (one round trip instead of one per row), in the
# order they were staged, waking the outbox relay once when there is an event (PostgreSQL delivers it at commit).
FLUSH = (
    "WITH audited AS ("
    " INSERT INTO audit_log (release_id, actor, state, step, reason, evidence)"
    " SELECT r, a, s, st, re, ev"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[])"
    " WITH ORDINALITY AS u(r, a, s, st, re, ev, n) ORDER BY n"
    "), staged AS ("
    " INSERT INTO outbox (producer, topic, key, event_id, headers, payload, created_at)"
    " SELECT $7, t, k, e, h, p, clock_timestamp()"
    " FROM unnest($8::text[], $9::text[], $10::text[], $11::jsonb[], $12::text[])"
    " WITH ORDINALITY AS u(t, k, e, h, p, n) ORDER BY n"
    " ON CONFLICT (event_id) DO NOTHING"
    ") SELECT pg_notify($13, $7) WHERE cardinality($8::text[]) > 0"
)


class PgTransaction:
    """Audit entries and outbox events are staged in memory and written together by `flush`, which the store
    calls before the commit (and `audit_as_it_stands` before its own insert, so the log keeps its order)."""

    def __init__(self, conn: asyncpg.Connection, producer: str = PRODUCER) -> None:
        self._conn, self._producer = conn, producer
        self._audits: list[AuditEntry] = []
        self._events: list[outbox.Row] = []

    async def first_time(self, consumer: str, event_id: str) -> bool:
        return await db.first_time(self._conn, consumer, event_id)

    async def exists(self, release_id: str) -> bool:
        return bool(await self._conn.fetchval("SELECT 1 FROM sagas WHERE release_id = $1", release_id))

    async def insert(self, saga: Saga) -> None:
        await self._conn.execute(
            "INSERT INTO sagas (release_id, service, version, digest, state, body) VALUES ($1,$2,$3,$4,$5,$6)",
            saga.release_id,
            saga.service,
            saga.version,
            saga.digest,
            saga.state.value,
            saga.model_dump(mode="json"),
        )

    async def load(self, release_id: str) -> Loaded | None:
        row = await self._conn.fetchrow("SELECT body, revision FROM sagas WHERE release_id = $1", release_id)
        return None if row is None else Loaded(upcast.load(row["body"]), row["revision"])

    async def save(self, saga: Saga, revision: int) -> None:
        updated = await self._conn.execute(
            "UPDATE sagas SET state = $2, body = $3, revision = revision + 1, updated_at = now()"
            " WHERE release_id = $1 AND revision = $4",
            saga.release_id,
            saga.state.value,
            saga.model_dump(mode="json"),
            revision,
        )
        if updated != "UPDATE 1":
            raise ConcurrentUpdate(saga.release_id)

    async def first_use_of_nonce(self, command: OperatorCommand, at: datetime) -> bool:
        if not command.nonce:  # refused by `control.refusal`: nothing to record
            return True
        row = await self._conn.fetchrow(
            "INSERT INTO operator_nonces (nonce, release_id, actor, event_type, used_at) VALUES ($1,$2,$3,$4,$5)"
            " ON CONFLICT (nonce) DO NOTHING RETURNING 1",
            command.nonce,
            command.release_id,
            command.actor,
            command.event_type,
            at,
        )
        return row is not None

    async def verifiers(self, now: datetime) -> Known:
        return await known_verifiers(self._conn, now)

    async def set_deadline(self, release_id: str, deadline: tuple[str, datetime] | None) -> None:
        """The release's one deadline, in one statement: a data-modifying CTE drops any other step's (a row
        being claimed is locked, so this waits for the claim to end, and the claim then finds its due time gone)."""
        if deadline is None:
            await self._conn.execute("DELETE FROM saga_deadlines WHERE release_id = $1", release_id)
            return
        await self._conn.execute(
            "WITH others AS (DELETE FROM saga_deadlines WHERE release_id = $1 AND step_id <> $2)"
            " INSERT INTO saga_deadlines (release_id, step_id, due_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (release_id, step_id) DO UPDATE SET due_at = EXCLUDED.due_at",
            release_id,
            deadline[0],
            deadline[1],
        )

    async def claim_deadline(self, due: Due) -> bool:
        row = await self._conn.fetchval(
            "SELECT true FROM saga_deadlines WHERE release_id = $1 AND step_id = $2 AND due_at = $3"
            " FOR UPDATE SKIP LOCKED",
            due.release_id,
            due.step_id,
            due.due_at,
        )
        return row is not None

    async def audit(self, entry: AuditEntry) -> None:
        self._audits.append(entry)

    async def audit_as_it_stands(self, release_id: str, actor: str, reason: str, evidence: dict[str, Any]) -> None:
        await self.flush()
        await self._conn.execute(
            "INSERT INTO audit_log (release_id, actor, state, step, reason, evidence)"
            " SELECT release_id, $2, state, body->>'waiting_for', $3, $4 FROM sagas WHERE release_id = $1",
            release_id,
            actor,
            reason,
            evidence,
        )

    async def publish(self, topic: str, envelope: Envelope) -> None:
        self._events.append(outbox.row(topic, envelope))

    async def flush(self) -> None:
        """Write what was staged, in one statement."""
        if not self._audits and not self._events:
            return
        audits, events = self._audits, self._events
        self._audits, self._events = [], []
        await self._conn.execute(
            FLUSH,
            [a.release_id for a in audits],
            [a.actor for a in audits],
            [a.state for a in audits],
            [a.step for a in audits],
            [a.reason for a in audits],
            [a.evidence for a in audits],
            self._producer,
            *([e[i] for e in events] for i in range(5)),
            outbox.NOTIFY_CHANNEL,
        )

    async def mark_staging_verified(self, service: str, digest: str, release_id: str) -> None:
        await self._conn.execute(
            "INSERT INTO staging_verified_artifacts (service, digest, release_id) VALUES ($1,$2,$3)"
            " ON CONFLICT DO NOTHING",
            service,
            digest,
            release_id,
        )


class PgSagaStore:
    def __init__(self, pool: asyncpg.Pool, producer: str = PRODUCER) -> None:
        """`producer`: whose outbox relay publishes the events (a test names one no relay serves)."""
        self._pool, self._producer = pool, producer

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgTransaction]:
        async with self._pool.acquire() as conn, conn.transaction():
            tx = PgTransaction(conn, self._producer)
            yield tx
            await tx.flush()

    async def due_deadlines(self, now: datetime, limit: int) -> list[Due]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT release_id, step_id, due_at FROM saga_deadlines WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
                now,
                limit,
            )
        return [Due(r["release_id"], r["step_id"], r["due_at"]) for r in rows]
