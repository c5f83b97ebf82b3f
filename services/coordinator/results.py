"""Results and heartbeats as they arrive on the producers' own topics: the sender is checked (`senders`) before
the saga or the registry sees anything; a refusal is written to the release's audit log and dead-lettered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from contracts.cloudevents import Envelope
from contracts.events import VerifierHeartbeat
from releasegate_runtime.bus import Principal
from releasegate_runtime.kafka import PermanentError
from services.coordinator import senders
from services.coordinator.ports import Clock, SagaStore

log = structlog.get_logger()
REFUSALS = "coordinator-refusals"  # processed-event ledger of refusals: a redelivered one is recorded once

Handler = Callable[[Envelope], Awaitable[None]]


class Results:
    def __init__(
        self, store: SagaStore | asyncpg.Pool, on_result: Handler, on_heartbeat: Handler, clock: Clock
    ) -> None:
        """`store`: a pool is still taken for callers that predate the store port (wrapped in the PostgreSQL
        adapter)."""
        if isinstance(store, asyncpg.Pool):
            from services.coordinator.adapters.postgres import PgSagaStore

            store = PgSagaStore(store)
        self._store, self._on_result, self._on_heartbeat, self._clock = store, on_result, on_heartbeat, clock

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
        async with self._store.transaction() as tx:
            if not await tx.first_time(REFUSALS, envelope.id):
                return
            await tx.audit_as_it_stands(
                release_id,
                f"principal:{sender.name}",
                f"refused {envelope.type}: {why}",
                {"event_id": envelope.id, "source": envelope.source, "sender": sender.name},
            )
