"""Rollback handler: restore_traffic puts 100% on the recorded stable version, stops the candidate's instances
and reads the result back from HAProxy. Idempotent: a repeat finds nothing left to stop."""
from __future__ import annotations

import asyncpg
import structlog

from contracts.cloudevents import Envelope
from contracts.events import RollbackFinished, RollbackRequested
from services.common import worker
from services.common.haproxy import HAProxyError
from services.common.local_target import LocalTarget, pid_alive
from services.rollback.domain import RollbackError

CONSUMER = "rollback"
log = structlog.get_logger()


class Rollback:
    def __init__(self, pool: asyncpg.Pool, target: LocalTarget) -> None:
        self._pool, self._target = pool, target

    async def on_request(self, envelope: Envelope) -> None:
        req: RollbackRequested = envelope.data  # type: ignore[assignment]
        await worker.reply_once(self._pool, CONSUMER, envelope, lambda: self.restore(req))

    async def restore(self, req: RollbackRequested) -> RollbackFinished:
        try:
            reason = await self._restore_traffic(req)
            observed = await self._target.observe(req.service, req.environment)
            if set(observed.weights) - {observed.stable_version}:
                raise RollbackError(f"traffic still reaches {observed.weights} after the rollback")
            return RollbackFinished(release_id=req.release_id, step_id=req.step_id, environment=req.environment,
                                    succeeded=True, reason=reason, observed=observed)
        except (RollbackError, HAProxyError) as exc:
            log.error("compensation failed", step=req.step_id, error=str(exc))
            return RollbackFinished(release_id=req.release_id, step_id=req.step_id, environment=req.environment,
                                    succeeded=False, reason=str(exc))

    async def _restore_traffic(self, req: RollbackRequested) -> str:
        stable = await self._target.stable(req.service, req.environment)
        if stable is None:
            raise RollbackError(f"{req.environment} has no recorded stable version of {req.service}")
        live = await self._target.live(req.service, req.environment)
        healthy_stable = [i for i in live if i.version == stable[0] and i.state == "serving" and pid_alive(i.pid)]
        if not healthy_stable:
            raise RollbackError(f"no serving {stable[0]} instance in {req.environment}; the rollback service may "
                                "not start one (only the deployer deploys)")
        moved = await self._target.routed_tenants(req.environment)
        await self._target.clear_tenant_routes(req.service, req.environment)
        await self._target.split(req.service, req.environment, {stable[0]: 100})
        stopped = [i for i in live if i.version != stable[0]]
        for inst in stopped:
            await self._target.stop(inst)
        tenants = f"tenants {', '.join(moved)} routed back; " if moved else ""
        return (f"{tenants}100% of {req.environment} traffic on {stable[0]}; stopped "
                f"{', '.join(f'{i.version}@{i.slot}' for i in stopped) or 'nothing (already clean)'}")
