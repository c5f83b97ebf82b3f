"""Admission of the commands that change environments (deployer, rollback): a command acts only with a valid step
grant of the coordinator, spent once. A refused command has no effect at all: the refusal is recorded
(`refused_commands`, append-only), ops get a critical alert, and the record is dead-lettered with the reason."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import structlog
from securesystemslib.signer import SSlibKey

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import AlertRaised, Severity
from releasegate_runtime import grants, outbox, worker
from releasegate_runtime.kafka import PermanentError

log = structlog.get_logger()
# A check of the consumer's own beyond the grant (e.g. the backup a restore names); why it refuses, or None.
Check = Callable[[asyncpg.Connection, grants.Command], Awaitable[str | None]]


class CommandRefused(PermanentError):
    """A command without a valid, unspent step grant (or failing the consumer's own check): never retried."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def spent_refusal(grant_id: str, used_by: str | None, event_id: str) -> str | None:
    """A grant is spent by the first CloudEvent that used it; the same record redelivered may use it again."""
    if used_by is None or used_by == event_id:
        return None
    return f"step grant {grant_id} was already used by event {used_by}: a grant authorizes one command once"


class Admission:
    def __init__(
        self, pool: asyncpg.Pool, consumer: str, public_key: SSlibKey, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._pool, self._consumer, self._key, self._clock = pool, consumer, public_key, clock

    async def admit(self, envelope: Envelope, check: Check | None = None) -> None:
        """Returns when the command may act (or is a redelivery of one already handled); raises CommandRefused
        after recording the refusal otherwise. `check`: the consumer's own condition, asked once the grant holds."""
        if await worker.already_done(self._pool, self._consumer, envelope.id):
            return
        command: grants.Command = envelope.data  # type: ignore[assignment]
        refusal = grants.verify_grant(self._key, command, self._clock())
        async with self._pool.acquire() as conn, conn.transaction():
            if refusal is None and check is not None:
                refusal = await check(conn, command)
            if refusal is None:
                assert command.grant is not None
                # spent before acting, so two records carrying one grant can never both act, even concurrently
                grant_id = command.grant.grant_id
                used_by = await conn.fetchval(
                    "INSERT INTO used_grants (grant_id, consumer, release_id, step_id, event_id)"
                    " VALUES ($1,$2,$3,$4,$5) ON CONFLICT (grant_id) DO NOTHING RETURNING event_id",
                    grant_id,
                    self._consumer,
                    command.release_id,
                    command.step_id,
                    envelope.id,
                ) or await conn.fetchval("SELECT event_id FROM used_grants WHERE grant_id = $1", grant_id)
                refusal = spent_refusal(grant_id, used_by, envelope.id)
            if refusal is None:
                return
            await self._record(conn, envelope, command, refusal)
        raise CommandRefused(f"{self._consumer} refused {command.step_id} of {command.release_id}: {refusal}")

    async def _record(
        self, conn: asyncpg.Connection, envelope: Envelope, command: grants.Command, refusal: str
    ) -> None:
        log.error("command refused", step=command.step_id, event_id=envelope.id, reason=refusal)
        first = await conn.fetchval(
            "INSERT INTO refused_commands (consumer, release_id, step_id, event_id, reason) VALUES ($1,$2,$3,$4,$5)"
            " ON CONFLICT (consumer, event_id) DO NOTHING RETURNING true",
            self._consumer,
            command.release_id,
            command.step_id,
            envelope.id,
            refusal,
        )
        if not first:  # a redelivery of a record already refused: ops were told once
            return
        alert = AlertRaised(
            release_id=command.release_id,
            service=command.service,
            severity=Severity.CRITICAL,
            title=f"{self._consumer} refused a command for {command.service}",
            detail=f"{envelope.type} {command.step_id} (event {envelope.id}, from "
            f"{envelope.source}): {refusal}. Nothing was done.",
        )
        await outbox.add(
            conn,
            self._consumer,
            topics.ALERTS,
            Envelope.new(alert, f"releasegate/{self._consumer}", command.release_id),
        )
