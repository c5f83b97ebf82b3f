"""Results and heartbeats as they arrive on the producers' own topics: the sender is checked (`senders`) before
the saga or the registry sees anything; a refusal is written to the release's audit log and dead-lettered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg
import structlog

from contracts.cloudevents import Envelope
from contracts.events import VerifierHeartbeat
from releasegate_runtime import db
from releasegate_runtime.bus import Principal
from releasegate_runtime.kafka import PermanentError
from services.coordinator import senders

log = structlog.get_logger()
REFUSALS = "coordinator-refusals"  # processed-event ledger of refusals: a redelivered one is recorded once

Handler = Callable[[Envelope], Awaitable[None]]


class Results:
    def __init__(
        self, pool: asyncpg.Pool, on_result: Handler, on_heartbeat: Handler, clock: Callable[[], datetime]
    ) -> None:
        self._pool, self._on_result, self._on_heartbeat, self._clock = pool, on_result, on_heartbeat, clock

    def handler(self, sender: Principal) -> Handler:
        """The handler of `sender`'s result topic."""

        async def handle(envelope: Envelope) -> None:
            why = senders.refusal(sender, envelope.data, self._clock())
            if why is not None:
                await self._refuse(sender, envelope, why)
                raise PermanentError(f"refused: {why}")
            if isinstance(envelope.data, VerifierHeartbeat):
                await self._on_heartbeat(envelope)
            else:
                await self._on_result(envelope)

        handle.__name__ = f"results_of_{sender.name.replace('-', '_')}"
        return handle

    async def _refuse(self, sender: Principal, envelope: Envelope, why: str) -> None:
        """The release's audit log shows the refusal (state and step unchanged); nothing else is touched."""
        release_id = getattr(envelope.data, "release_id", None)
        log.warning("result refused", sender=sender.name, event_type=envelope.type, reason=why)
        if release_id is None:
            return
        async with self._pool.acquire() as conn, conn.transaction():
            if not await db.first_time(conn, REFUSALS, envelope.id):
                return
            await conn.execute(
                "INSERT INTO audit_log (release_id, actor, state, step, reason, evidence)"
                " SELECT release_id, $2, state, body->>'waiting_for', $3, $4 FROM sagas WHERE release_id = $1",
                release_id,
                f"principal:{sender.name}",
                f"refused {envelope.type}: {why}",
                {"event_id": envelope.id, "source": envelope.source, "sender": sender.name},
            )
