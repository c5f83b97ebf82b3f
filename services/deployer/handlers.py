"""Deployer handlers: start / shift / route / roll / restore / finalize / migrate per (release, step), each done
once and its outcome read back from the environment's deployment target; only with the coordinator's step grant
(`releasegate_runtime.admission`). Every adapter (targets, bundles, migrations, step results) is injected by
`bootstrap.py`, so the handler runs as well on in-memory fakes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import structlog

from contracts.cloudevents import Envelope
from contracts.events import DeployAction, DeployFinished, DeployRequested
from releasegate_platform import supply_chain
from releasegate_platform.artifacts import ArtifactError
from releasegate_platform.haproxy import HAProxyError
from releasegate_platform.targets.port import DeploymentTarget, TargetError
from services.deployer.domain import DeployError, traffic_split
from services.deployer.edge import EdgeGuard

CONSUMER = "deployer"
log = structlog.get_logger()

Reply = Callable[[Envelope, Callable[[], Awaitable[DeployFinished]]], Awaitable[None]]
Targets = Callable[[str, str], DeploymentTarget]
Published = Callable[[str, str], Awaitable[None]]


class Bundles(Protocol):
    async def unpack(self, digest: str) -> tuple[Path, dict[str, Any]]:
        """The verified bundle of `digest` (its folder and manifest); ArtifactError/DeployError if it is not."""


class Migrations(Protocol):
    async def migrate(self, environment: str, folder: Path, release_id: str) -> tuple[list[str], list[str]]: ...

    async def server_version(self, environment: str) -> str: ...


class StepResults(Protocol):
    async def get(self, release_id: str, step_id: str) -> DeployFinished | None: ...

    async def put(self, result: DeployFinished) -> None:
        """Record a step's outcome once; a second outcome for the same (release, step) is ignored."""


class Admit(Protocol):
    async def admit(self, envelope: Envelope) -> None: ...


class Deployer:
    def __init__(
        self,
        targets: Targets,
        bundles: Bundles,
        migrations: Migrations,
        steps: StepResults,
        trust_root: Callable[[], supply_chain.TrustRoot],
        admission: Admit,
        reply: Reply,
        published: Published | None = None,
        edge: EdgeGuard | None = None,
    ) -> None:
        """`targets(service, environment)`: that environment's deployment target (from the catalog);
        `published(service, environment)`: called after every step that changed the environment, to publish its
        new state (the deployer's read model); `edge`: bans and checks the edge cache after each step."""
        self._targets, self._bundles, self._migrations, self._steps = targets, bundles, migrations, steps
        self._trust_root, self._admission, self._reply, self._published = trust_root, admission, reply, published
        self._edge = edge

    async def on_request(self, envelope: Envelope) -> None:
        req: DeployRequested = envelope.data  # type: ignore[assignment]
        await self._admission.admit(envelope)  # before anything else: a refused command does nothing at all
        await self._reply(envelope, lambda: self.deploy(req))

    async def deploy(self, req: DeployRequested) -> DeployFinished:
        done = await self._steps.get(req.release_id, req.step_id)
        if done is not None:
            return done
        try:
            target = self._targets(req.service, req.environment)
            reason = await self._carry_out(req, target)
            result = DeployFinished(
                release_id=req.release_id,
                step_id=req.step_id,
                environment=req.environment,
                succeeded=True,
                reason=reason,
                observed=await target.observe(req.service, req.environment),
            )
        except (DeployError, ArtifactError, HAProxyError, TargetError, supply_chain.AttestationError) as exc:
            log.warning("deploy step failed", step=req.step_id, error=str(exc))
            result = DeployFinished(
                release_id=req.release_id,
                step_id=req.step_id,
                environment=req.environment,
                succeeded=False,
                reason=str(exc),
            )
        await self._steps.put(result)
        if result.succeeded and req.action is not DeployAction.MIGRATE and self._published is not None:
            await self._published(req.service, req.environment)
        return result

    async def _carry_out(self, req: DeployRequested, target: DeploymentTarget) -> str:
        # Re-verify digest, bundle and signed provenance before touching traffic, on every action: a command that
        # bypassed the gatekeeper must not get an unsigned or tampered artifact into an environment. The digest
        # verified is the one the target runs (the bundle locally, the image `<repository>@<digest>` on
        # kubernetes). A restore starts the stable version, verified when it was deployed.
        if req.action is not DeployAction.RESTORE:
            supply_chain.verify(req.attestation, req.digest, req.service, self._trust_root())
        folder, manifest = await self._bundles.unpack(req.digest)
        reason = await self._act(req, target, folder)
        # after the step, so the edge's check reads what the environment now serves
        return reason + (await self._edge.after(req, target, manifest) if self._edge is not None else "")

    async def _act(self, req: DeployRequested, target: DeploymentTarget, folder: Path) -> str:
        if req.action is DeployAction.MIGRATE:
            return await self._migrate(req, folder)
        stable = await target.stable(req.service, req.environment)
        if stable is None:
            raise DeployError(f"{req.environment} has no stable version of {req.service}; run the bootstrap")
        stable_version = stable[0]
        if req.action is DeployAction.RESTORE:
            return await self._restore(req, target, stable)
        if req.action is DeployAction.ROLL:
            return await self._roll(req, target, stable_version)
        ready = (await target.versions(req.service, req.environment)).get(req.version, 0)
        if req.action is DeployAction.FINALIZE:
            if not ready:
                raise DeployError(f"no serving {req.version} instance in {req.environment} to finalize")
            await target.shift(req.service, req.environment, {req.version: 100})
            await target.clear_tenant_routes(req.service, req.environment)
            for old in await target.versions(req.service, req.environment):
                if old != req.version:
                    await target.retire(req.service, req.environment, old)
            await target.set_stable(req.service, req.environment, req.version, req.digest)
            return f"{req.version} is the stable version of {req.environment}; {stable_version} retired"
        if req.action is DeployAction.START:
            ready = await target.run_version(
                req.service, req.environment, req.version, req.digest, req.release_id, req.instances
            )
        elif not ready:
            raise DeployError(f"no serving {req.version} instance in {req.environment} to shift traffic to")
        if req.action is DeployAction.ROUTE:
            await target.route_tenants(req.service, req.environment, req.version, list(req.tenants or []))
            return (
                f"tenants {', '.join(req.tenants or [])} of {req.environment} routed to {req.version}; "
                f"the others stay on {stable_version}"
            )
        await target.shift(req.service, req.environment, traffic_split(req.version, stable_version, req.weight))
        return f"{req.version} on {ready} instance(s) in {req.environment} at {req.weight}% beside {stable_version}"

    async def _migrate(self, req: DeployRequested, folder: Path) -> str:
        """The candidate's new migrations, before its code starts in this environment; parity with the other
        environment (PostgreSQL version, same runner) is reported."""
        applied, skipped = await self._migrations.migrate(req.environment, folder, req.release_id)
        versions = {env: await self._migrations.server_version(env) for env in ("staging", "production")}
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

    async def _roll(self, req: DeployRequested, target: DeploymentTarget, stable_version: str) -> str:
        """One batch of a rolling update: start the batch's new replicas first (surge, so capacity never drops
        below the budget), then retire as many old ones; traffic follows the ready replica counts."""
        want = min((req.batch or 1) * req.batch_size, req.instances)
        mine = await target.run_version(req.service, req.environment, req.version, req.digest, req.release_id, want)
        old = (await target.versions(req.service, req.environment)).get(stable_version, 0)
        remaining = min(old, req.instances - want)
        await target.scale(req.service, req.environment, stable_version, remaining)
        await target.shift(req.service, req.environment, _by_count(req.version, mine, stable_version, remaining))
        return (
            f"batch {req.batch}: {mine} {req.version} and {remaining} {stable_version} instance(s) "
            f"serve {req.environment}"
        )

    async def _restore(self, req: DeployRequested, target: DeploymentTarget, stable: tuple[str, str]) -> str:
        """Compensation of a rolling update: replace the candidate's replicas with stable ones, batch by batch
        (stable started first, so capacity never drops)."""
        version, digest = stable
        while True:
            counts = await target.versions(req.service, req.environment)
            old = counts.get(version, 0)
            new = {v: n for v, n in counts.items() if v != version and n > 0}
            if not new and old >= req.instances:
                break
            old = await target.run_version(
                req.service, req.environment, version, digest, None, min(old + req.batch_size, req.instances)
            )
            budget = req.batch_size
            for other, n in new.items():
                cut = min(n, budget)
                await target.scale(req.service, req.environment, other, n - cut)
                new[other], budget = n - cut, budget - cut
            others = sum(new.values())
            if others:
                await target.shift(req.service, req.environment, _by_count(version, old, next(iter(new)), others))
        await target.shift(req.service, req.environment, {version: 100})
        for other in counts:
            if other != version:
                await target.retire(req.service, req.environment, other)
        return f"{old} {version} instance(s) serve {req.environment} again; {req.version} instances replaced"


def _by_count(a: str, n_a: int, b: str, n_b: int) -> dict[str, int]:
    total = n_a + n_b or 1
    return {a: round(100 * n_a / total), b: 100 - round(100 * n_a / total)}
