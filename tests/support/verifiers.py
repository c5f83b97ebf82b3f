"""A registry writer for tests that run verifiers in-process: the coordinator's own heartbeat handling (sender check,
then registry) without joining the coordinator's consumer group, so a test never takes partitions from a
coordinator another run uses. The `registry_writer` fixture (tests/integration/conftest.py) removes the verifiers
it followed from the registry at the end."""

from __future__ import annotations

import asyncio

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import VerifierHeartbeat
from releasegate_cli.probes import TopicTail
from releasegate_platform import verifier_registry as registry
from releasegate_runtime.bus import BusPolicy
from services.coordinator.adapters.postgres import PgSagaStore
from services.coordinator.handlers import utcnow
from services.coordinator.results import Results
from tests.support.services import as_principal


class RegistryWriter:
    def __init__(self, settings, pool) -> None:
        self._settings, self._pool, self._tasks = settings, pool, []
        self._policy = BusPolicy.load(settings.bus_policy_file)
        self.followed: set[str] = set()

    async def follow(self, name: str) -> None:
        """Record `name`'s heartbeats in the registry from now on."""
        self.followed.add(name)
        sender = self._policy.with_verifier(name)
        tail = await TopicTail(as_principal(self._settings, "coordinator"), topics.results_for(sender.name)).start()

        async def ignore(_: Envelope) -> None:
            return None

        results = Results(PgSagaStore(self._pool), ignore, registry.Registry(self._pool).on_heartbeat, utcnow)
        handler = results.handler(sender)

        async def pump() -> None:
            try:
                while True:
                    await tail.wait_for(lambda _: False, timeout=0.3)
                    beats, tail.seen[:] = [e for e in tail.seen if isinstance(e.data, VerifierHeartbeat)], []
                    for envelope in beats:
                        await handler(envelope)
            finally:
                await tail.stop()

        self._tasks.append(asyncio.create_task(pump()))

    async def close(self) -> None:
        """Stop following, and take the followed verifiers out of the registry."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._pool.acquire() as conn:
            await conn.execute("DELETE FROM verifier_registry WHERE name = ANY($1::text[])", sorted(self.followed))
