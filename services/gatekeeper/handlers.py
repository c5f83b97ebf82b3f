"""Gatekeeper handler: gather facts through adapters, judge with the domain, reply through the outbox."""
from __future__ import annotations

import asyncpg

from contracts.cloudevents import Envelope
from contracts.events import GateCheckFinished, GateCheckRequested
from services.common import worker
from services.common.artifacts import ArtifactError, ArtifactStore
from services.common.catalog import Catalog, CatalogError
from services.gatekeeper.domain import Facts, evaluate

CONSUMER = "gatekeeper"


class Gatekeeper:
    def __init__(self, pool: asyncpg.Pool, catalog: Catalog, store: ArtifactStore) -> None:
        self._pool, self._catalog, self._store = pool, catalog, store

    async def on_request(self, envelope: Envelope) -> None:
        req: GateCheckRequested = envelope.data  # type: ignore[assignment]
        await worker.reply_once(self._pool, CONSUMER, envelope, lambda: self.check(req))

    async def check(self, req: GateCheckRequested) -> GateCheckFinished:
        checks = evaluate(req, await self.facts(req))
        return GateCheckFinished(release_id=req.release_id, step_id=req.step_id, environment=req.environment,
                                 passed=all(c.passed for c in checks), checks=checks)

    async def facts(self, req: GateCheckRequested) -> Facts:
        try:
            self._store.verify(req.digest)
            artifact_error = None
        except ArtifactError as exc:
            artifact_error = str(exc)
        try:
            environments, catalog_error = tuple(self._catalog.get(req.service).environments), None
        except CatalogError as exc:
            environments, catalog_error = (), str(exc)
        async with self._pool.acquire() as conn:
            passed = await conn.fetchval(
                "SELECT 1 FROM staging_verified_artifacts WHERE service = $1 AND digest = $2", req.service, req.digest)
        return Facts(artifact_error, catalog_error, environments, bool(passed))
