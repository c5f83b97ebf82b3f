"""Deployer handlers: start / shift / finalize per (release, step), each done once and its outcome read back
from HAProxy."""
from __future__ import annotations

import asyncio

import asyncpg
import structlog

from contracts.cloudevents import Envelope
from contracts.events import DeployAction, DeployFinished, DeployRequested
from services.common import worker
from services.common.artifacts import ArtifactError
from services.common.haproxy import HAProxyError
from services.common.local_target import LocalTarget, pid_alive
from services.deployer.adapters.launcher import Launcher
from services.deployer.domain import DeployError, traffic_split

CONSUMER = "deployer"
log = structlog.get_logger()


class Deployer:
    def __init__(self, pool: asyncpg.Pool, target: LocalTarget, launcher: Launcher) -> None:
        self._pool, self._target, self._launcher = pool, target, launcher

    async def on_request(self, envelope: Envelope) -> None:
        req: DeployRequested = envelope.data  # type: ignore[assignment]
        await worker.reply_once(self._pool, CONSUMER, envelope, lambda: self.deploy(req))

    async def deploy(self, req: DeployRequested) -> DeployFinished:
        async with self._pool.acquire() as conn:
            done = await conn.fetchval("SELECT result FROM deploy_steps WHERE release_id = $1 AND step_id = $2",
                                       req.release_id, req.step_id)
        if done is not None:
            return DeployFinished.model_validate(done)
        try:
            reason = await self._carry_out(req)
            result = DeployFinished(release_id=req.release_id, step_id=req.step_id, environment=req.environment,
                                    succeeded=True, reason=reason,
                                    observed=await self._target.observe(req.service, req.environment))
        except (DeployError, ArtifactError, HAProxyError) as exc:
            log.warning("deploy step failed", step=req.step_id, error=str(exc))
            result = DeployFinished(release_id=req.release_id, step_id=req.step_id, environment=req.environment,
                                    succeeded=False, reason=str(exc))
        async with self._pool.acquire() as conn:
            await conn.execute("INSERT INTO deploy_steps (release_id, step_id, result) VALUES ($1,$2,$3)"
                               " ON CONFLICT DO NOTHING", req.release_id, req.step_id,
                               result.model_dump(mode="json"))
        return result

    async def _carry_out(self, req: DeployRequested) -> str:
        # Re-verify digest and bundle before touching traffic, on every action.
        await asyncio.to_thread(self._launcher.unpack, req.digest)
        stable = await self._target.stable(req.service, req.environment)
        if stable is None:
            raise DeployError(f"{req.environment} has no stable version of {req.service}; run the bootstrap")
        stable_version = stable[0]
        live = await self._target.live(req.service, req.environment)
        mine = [i for i in live if i.version == req.version and i.state == "serving" and pid_alive(i.pid)]
        if req.action is DeployAction.FINALIZE:
            if not mine:
                raise DeployError(f"no serving {req.version} instance in {req.environment} to finalize")
            await self._target.split(req.service, req.environment, {req.version: 100})
            await self._target.clear_tenant_routes(req.service, req.environment)
            for old in (i for i in live if i.version != req.version):
                await self._target.stop(old)
            async with self._pool.acquire() as conn:
                await conn.execute("UPDATE environments SET stable_version = $3, stable_digest = $4, updated_at = now()"
                                   " WHERE service = $1 AND environment = $2",
                                   req.service, req.environment, req.version, req.digest)
            return f"{req.version} is the stable version of {req.environment}; {stable_version} retired"
        if req.action is DeployAction.START:
            for _ in range(req.instances - len(mine)):
                mine.append(await self._launcher.start(req.service, req.environment, req.version, req.digest,
                                                       req.release_id))
        elif not mine:
            raise DeployError(f"no serving {req.version} instance in {req.environment} to shift traffic to")
        if req.action is DeployAction.ROUTE:
            await self._target.route_tenants(req.service, req.environment, req.tenants or [])
            return (f"tenants {', '.join(req.tenants or [])} of {req.environment} routed to {req.version}; "
                    f"the others stay on {stable_version}")
        await self._target.split(req.service, req.environment, traffic_split(req.version, stable_version, req.weight))
        return (f"{req.version} on {len(mine)} instance(s) in {req.environment} at {req.weight}% "
                f"beside {stable_version}")
