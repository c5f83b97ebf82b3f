"""Deployer handlers: start / shift / finalize per (release, step), each done once and its outcome read back
from HAProxy; only with the coordinator's step grant (`releasegate_runtime.admission`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import asyncpg
import structlog

from contracts.cloudevents import Envelope
from contracts.events import DeployAction, DeployFinished, DeployRequested
from releasegate_platform import supply_chain
from releasegate_platform.artifacts import ArtifactError
from releasegate_platform.haproxy import HAProxyError
from releasegate_platform.local_target import LocalTarget, pid_alive
from releasegate_runtime import worker
from releasegate_runtime.admission import Admission
from services.deployer.adapters import migrator
from services.deployer.adapters.launcher import Launcher
from services.deployer.domain import DeployError, traffic_split

CONSUMER = "deployer"
log = structlog.get_logger()


class Deployer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        target: LocalTarget,
        launcher: Launcher,
        trust_root: Path,
        database_for: Callable[[str], str],
        admission: Admission,
    ) -> None:
        self._pool, self._target, self._launcher = pool, target, launcher
        self._trust_root, self._database_for, self._admission = trust_root, database_for, admission

    async def on_request(self, envelope: Envelope) -> None:
        req: DeployRequested = envelope.data  # type: ignore[assignment]
        await self._admission.admit(envelope)  # before anything else: a refused command does nothing at all
        await worker.reply_once(self._pool, CONSUMER, envelope, lambda: self.deploy(req))

    async def deploy(self, req: DeployRequested) -> DeployFinished:
        async with self._pool.acquire() as conn:
            done = await conn.fetchval(
                "SELECT result FROM deploy_steps WHERE release_id = $1 AND step_id = $2", req.release_id, req.step_id
            )
        if done is not None:
            return DeployFinished.model_validate(done)
        try:
            reason = await self._carry_out(req)
            result = DeployFinished(
                release_id=req.release_id,
                step_id=req.step_id,
                environment=req.environment,
                succeeded=True,
                reason=reason,
                observed=await self._target.observe(req.service, req.environment),
            )
        except (DeployError, ArtifactError, HAProxyError, supply_chain.AttestationError) as exc:
            log.warning("deploy step failed", step=req.step_id, error=str(exc))
            result = DeployFinished(
                release_id=req.release_id,
                step_id=req.step_id,
                environment=req.environment,
                succeeded=False,
                reason=str(exc),
            )
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO deploy_steps (release_id, step_id, result) VALUES ($1,$2,$3) ON CONFLICT DO NOTHING",
                req.release_id,
                req.step_id,
                result.model_dump(mode="json"),
            )
        return result

    async def _carry_out(self, req: DeployRequested) -> str:
        # Re-verify digest, bundle and signed provenance before touching traffic, on every action: a command that
        # bypassed the gatekeeper must not get an unsigned or tampered artifact into an environment. A restore
        # starts the stable version, verified when it was deployed.
        if req.action is not DeployAction.RESTORE:
            supply_chain.verify(req.attestation, req.digest, req.service, supply_chain.TrustRoot.load(self._trust_root))
        folder, _ = await asyncio.to_thread(self._launcher.unpack, req.digest)
        if req.action is DeployAction.MIGRATE:
            return await self._migrate(req, folder)
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
                await conn.execute(
                    "UPDATE environments SET stable_version = $3, stable_digest = $4, updated_at = now()"
                    " WHERE service = $1 AND environment = $2",
                    req.service,
                    req.environment,
                    req.version,
                    req.digest,
                )
            return f"{req.version} is the stable version of {req.environment}; {stable_version} retired"
        if req.action is DeployAction.ROLL:
            return await self._roll(req, stable_version, live, mine)
        if req.action is DeployAction.RESTORE:
            return await self._restore(req, stable)
        if req.action is DeployAction.START:
            for _ in range(req.instances - len(mine)):
                mine.append(
                    await self._launcher.start(req.service, req.environment, req.version, req.digest, req.release_id)
                )
        elif not mine:
            raise DeployError(f"no serving {req.version} instance in {req.environment} to shift traffic to")
        if req.action is DeployAction.ROUTE:
            await self._target.route_tenants(req.service, req.environment, req.tenants or [])
            return (
                f"tenants {', '.join(req.tenants or [])} of {req.environment} routed to {req.version}; "
                f"the others stay on {stable_version}"
            )
        await self._target.split(req.service, req.environment, traffic_split(req.version, stable_version, req.weight))
        return f"{req.version} on {len(mine)} instance(s) in {req.environment} at {req.weight}% beside {stable_version}"

    async def _migrate(self, req: DeployRequested, folder: Path) -> str:
        """The candidate's new migrations, before its code starts in this environment; parity with the other
        environment (PostgreSQL version, same runner) is reported."""
        applied, skipped = await migrator.migrate(self._database_for(req.environment), folder, req.release_id)
        versions = {env: await migrator.server_version(self._database_for(env)) for env in ("staging", "production")}
        parity = (
            "parity: staging and production both run PostgreSQL " + versions["production"]
            if versions["staging"].split(".")[0] == versions["production"].split(".")[0]
            else f"PARITY BROKEN: staging PostgreSQL {versions['staging']}, production {versions['production']}"
        )
        return (
            f"{req.environment} database migrated: applied {', '.join(applied) or 'nothing new'}"
            + (f" (already applied: {', '.join(skipped)})" if skipped else "")
            + f"; {parity}"
        )

    async def _roll(self, req: DeployRequested, stable_version: str, live: list, mine: list) -> str:
        """One batch of a rolling update: start the batch's new instances first (surge, so capacity never drops
        below the budget), then retire as many old ones; traffic follows the instance counts."""
        want = min((req.batch or 1) * req.batch_size, req.instances)
        while len(mine) < want:
            mine.append(
                await self._launcher.start(req.service, req.environment, req.version, req.digest, req.release_id)
            )
        old = [i for i in live if i.version == stable_version and i.state == "serving" and pid_alive(i.pid)]
        for inst in old[max(0, req.instances - want) :]:
            await self._target.stop(inst)
        remaining = min(len(old), req.instances - want)
        await self._target.split(
            req.service, req.environment, _by_count(req.version, len(mine), stable_version, remaining)
        )
        return (
            f"batch {req.batch}: {len(mine)} {req.version} and {remaining} {stable_version} instance(s) "
            f"serve {req.environment}"
        )

    async def _restore(self, req: DeployRequested, stable: tuple[str, str]) -> str:
        """Compensation of a rolling update: replace the candidate's instances with stable ones, batch by batch
        (stable started first, so capacity never drops)."""
        version, digest = stable
        while True:
            live = [i for i in await self._target.live(req.service, req.environment) if pid_alive(i.pid)]
            old = [i for i in live if i.version == version and i.state == "serving"]
            new = [i for i in live if i.version != version]
            if not new and len(old) >= req.instances:
                break
            for _ in range(min(req.batch_size, req.instances - len(old))):
                old.append(await self._launcher.start(req.service, req.environment, version, digest, None))
            for inst in new[: req.batch_size]:
                await self._target.stop(inst)
            await self._target.split(
                req.service, req.environment, _by_count(version, len(old), req.version, len(new[req.batch_size :]))
            )
        await self._target.split(req.service, req.environment, {version: 100})
        return f"{len(old)} {version} instance(s) serve {req.environment} again; {req.version} instances replaced"


def _by_count(a: str, n_a: int, b: str, n_b: int) -> dict[str, int]:
    total = n_a + n_b or 1
    return {a: round(100 * n_a / total), b: 100 - round(100 * n_a / total)}
