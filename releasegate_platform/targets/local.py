"""The `local` deployment target behind the port: versions run as processes on this machine, served by HAProxy
slots, recorded in PostgreSQL (`instances`, `environments`). Traffic, tenant routing, maintenance and what
serves are `releasegate_platform.local_target.LocalTarget`'s; starting a process is the deployer's launcher,
injected as `start` so the platform imports no service (without one, as in the rollback service, no instance is
ever started: only the deployer deploys)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from contracts.events import ObservedState
from releasegate_platform.local_target import Instance, LocalTarget, pid_alive
from releasegate_platform.targets.port import TargetError

Start = Callable[[str, str, str, str, str | None], Awaitable[Instance]]


class LocalDeploymentTarget:
    def __init__(self, local: LocalTarget, start: Start | None) -> None:
        """`start(service, environment, version, digest, release_id)`: one healthy instance on a free slot."""
        self._local, self._starter = local, start

    async def _start(self, service: str, environment: str, version: str, digest: str, release: str | None) -> Instance:
        if self._starter is None:
            raise TargetError(
                f"no serving {version} instance in {environment}, and this service may not start one (only the "
                "deployer deploys)"
            )
        return await self._starter(service, environment, version, digest, release)

    async def stable(self, service: str, environment: str) -> tuple[str, str] | None:
        return await self._local.stable(service, environment)

    async def set_stable(self, service: str, environment: str, version: str, digest: str) -> None:
        async with self._local.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO environments (service, environment, stable_version, stable_digest)"
                " VALUES ($1,$2,$3,$4) ON CONFLICT (service, environment) DO UPDATE SET"
                " stable_version = EXCLUDED.stable_version, stable_digest = EXCLUDED.stable_digest,"
                " updated_at = now()",
                service,
                environment,
                version,
                digest,
            )

    async def _serving(self, service: str, environment: str, version: str) -> list[Instance]:
        return [
            i
            for i in await self._local.live(service, environment)
            if i.version == version and i.state == "serving" and pid_alive(i.pid)
        ]

    async def versions(self, service: str, environment: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for inst in await self._local.live(service, environment):
            up = inst.state == "serving" and pid_alive(inst.pid)
            counts[inst.version] = counts.get(inst.version, 0) + up
        return counts

    async def run_version(
        self, service: str, environment: str, version: str, digest: str, release_id: str | None, replicas: int
    ) -> int:
        # instances of this version whose process is gone (a restarted machine) are retired, and the surviving
        # ones re-pointed: HAProxy may have restarted too and lost their addresses
        for inst in await self._local.live(service, environment):
            if inst.version == version and not (inst.state == "serving" and pid_alive(inst.pid)):
                await self._local.stop(inst)
        mine = await self._serving(service, environment, version)
        for inst in mine:
            await self._local.haproxy.point(f"{service}_{environment}", inst.slot, inst.port)
            self._local.register_scrape(inst)
        while len(mine) < replicas:
            mine.append(await self._start(service, environment, version, digest, release_id))
        return len(mine)

    async def scale(self, service: str, environment: str, version: str, replicas: int) -> None:
        mine = await self._serving(service, environment, version)
        for inst in mine[replicas:]:
            await self._local.stop(inst)
        if len(mine) < replicas:
            stable = await self.stable(service, environment)
            digest = mine[0].digest if mine else (stable[1] if stable and stable[0] == version else None)
            if digest is None:
                raise TargetError(f"{version} does not run in {environment}: nothing to scale up from")
            for _ in range(replicas - len(mine)):
                await self._start(service, environment, version, digest, None)

    async def shift(self, service: str, environment: str, weights: dict[str, int]) -> None:
        await self._local.split(service, environment, weights)

    async def route_tenants(self, service: str, environment: str, version: str, tenants: list[str]) -> None:
        # the wave backend holds the candidate's instances: `version` is where they already are
        await self._local.route_tenants(service, environment, tenants)

    async def clear_tenant_routes(self, service: str, environment: str) -> None:
        await self._local.clear_tenant_routes(service, environment)

    async def maintenance(self, service: str, environment: str, on: bool) -> None:
        await self._local.maintenance(service, environment, on)

    async def observe(self, service: str, environment: str) -> ObservedState:
        return await self._local.observe(service, environment)

    async def retire(self, service: str, environment: str, version: str) -> None:
        for inst in await self._local.live(service, environment):
            if inst.version == version:
                await self._local.stop(inst)
