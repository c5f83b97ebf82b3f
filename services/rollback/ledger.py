"""The rollback service's step ledger: each compensation (release, step) is carried out once and its outcome
recorded; a redelivered or re-sent command gets the recorded outcome back instead of a second restore. A step that
was started and never finished (the process died mid-restore) is tried again, a bounded number of times."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import asyncpg

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import AlertRaised, RollbackFinished
from releasegate_runtime import outbox

# Attempts of one step that may start before it is given up as interrupted: a restore that kills its process
# every time must end with an answer, not loop.
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Begun:
    """What the ledger says about a step about to run: its recorded outcome if it has one, else which attempt
    this is (1 for the first)."""

    outcome: RollbackFinished | None
    attempt: int


class StepLedger(Protocol):
    async def begin(self, release_id: str, step_id: str) -> Begun: ...

    async def finish(self, result: RollbackFinished, alert: AlertRaised | None) -> RollbackFinished:
        """Record the outcome (and stage the alert with it, once); the outcome recorded first wins."""
        ...


class PgStepLedger:
    """`rollback_steps` in the control database; the alert goes through the outbox in the same transaction."""

    def __init__(self, pool: asyncpg.Pool, producer: str) -> None:
        self._pool, self._producer = pool, producer

    async def begin(self, release_id: str, step_id: str) -> Begun:
        async with self._pool.acquire() as conn:
            attempt = await conn.fetchval(
                "INSERT INTO rollback_steps (release_id, step_id) VALUES ($1, $2) ON CONFLICT (release_id, step_id)"
                " DO UPDATE SET attempts = rollback_steps.attempts + 1, started_at = clock_timestamp()"
                " WHERE rollback_steps.result IS NULL RETURNING attempts",
                release_id,
                step_id,
            )
            if attempt is not None:
                return Begun(None, attempt)
            row = await conn.fetchrow(
                "SELECT result, attempts FROM rollback_steps WHERE release_id = $1 AND step_id = $2",
                release_id,
                step_id,
            )
        return Begun(RollbackFinished.model_validate(row["result"]), row["attempts"])

    async def finish(self, result: RollbackFinished, alert: AlertRaised | None) -> RollbackFinished:
        async with self._pool.acquire() as conn, conn.transaction():
            first = await conn.fetchval(
                "UPDATE rollback_steps SET result = $3, finished_at = clock_timestamp() WHERE release_id = $1"
                " AND step_id = $2 AND result IS NULL RETURNING true",
                result.release_id,
                result.step_id,
                result.model_dump(mode="json"),
            )
            if not first:
                recorded = await conn.fetchval(
                    "SELECT result FROM rollback_steps WHERE release_id = $1 AND step_id = $2",
                    result.release_id,
                    result.step_id,
                )
                return RollbackFinished.model_validate(recorded)
            if alert is not None:
                await outbox.add(
                    conn,
                    self._producer,
                    topics.ALERTS,
                    Envelope.new(alert, f"releasegate/{self._producer}", alert.release_id),
                )
        return result
