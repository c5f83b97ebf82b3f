"""An environment behind the deployment target port (`releasegate_platform.targets.port.DeploymentTarget`) in
memory, for the unit tests of the services that act through it (deployer, rollback)."""

from __future__ import annotations

import hashlib
from typing import Any

from contracts.events import ObservedState
from releasegate_platform.targets.port import TargetError, Unsupported

V1 = "sha256:" + hashlib.sha256(b"shop v1").hexdigest()
V2 = "sha256:" + hashlib.sha256(b"shop v2").hexdigest()


class FakeTarget:
    """An environment in memory: ready replicas per version, weights, tenants routed, the stable version, and
    maintenance mode if the target has one (kubernetes has none: `Unsupported`). Every change it was asked for is
    recorded in `calls`, and also in `shared` if given (a list other fakes write too, to see the order of everything
    a handler did)."""

    def __init__(
        self,
        stable: tuple[str, str] | None = ("v1", V1),
        replicas: int = 2,
        *,
        shared: list[tuple[Any, ...]] | None = None,
        supports_maintenance: bool = True,
    ) -> None:
        self.stable_version = stable
        self.replicas: dict[str, int] = {stable[0]: replicas} if stable else {}
        self.digests: dict[str, str] = {stable[0]: stable[1]} if stable else {}
        self.weights: dict[str, int] = {stable[0]: 100} if stable else {}
        self.tenants: list[str] = []
        self.in_maintenance = False
        self.supports_maintenance = supports_maintenance
        self.calls: list[tuple[Any, ...]] = []
        self.shared = shared
        self.fail_on: str | None = None

    def with_candidate(self, version: str, digest: str, weight: int, tenants: list[str] | None = None) -> FakeTarget:
        """A candidate running beside stable, as a canary leaves it: `weight` percent, `tenants` routed to it."""
        self.replicas[version], self.digests[version] = 2, digest
        stable = self.stable_version[0] if self.stable_version else None
        self.weights = {**({stable: 100 - weight} if stable else {}), version: weight}
        self.tenants = sorted(tenants or [])
        return self

    def _record(self, *call: Any) -> None:
        if self.fail_on == call[0]:
            raise TargetError(f"{call[0]} refused by the target")
        self.calls.append(call)
        if self.shared is not None:
            self.shared.append(call)

    async def stable(self, service: str, environment: str) -> tuple[str, str] | None:
        return self.stable_version

    async def set_stable(self, service: str, environment: str, version: str, digest: str) -> None:
        self._record("set_stable", version, digest)
        self.stable_version = (version, digest)

    async def versions(self, service: str, environment: str) -> dict[str, int]:
        return dict(self.replicas)

    async def run_version(
        self, service: str, environment: str, version: str, digest: str, release_id: str | None, replicas: int
    ) -> int:
        self._record("run_version", version, replicas)
        self.replicas[version] = max(self.replicas.get(version, 0), replicas)
        self.digests[version] = digest
        return self.replicas[version]

    async def scale(self, service: str, environment: str, version: str, replicas: int) -> None:
        self._record("scale", version, replicas)
        self.replicas[version] = replicas

    async def shift(self, service: str, environment: str, weights: dict[str, int]) -> None:
        self._record("shift", dict(weights))
        self.weights.update(weights)

    async def route_tenants(self, service: str, environment: str, version: str, tenants: list[str]) -> None:
        self._record("route_tenants", version, list(tenants))
        self.tenants = sorted(set(self.tenants) | set(tenants))

    async def clear_tenant_routes(self, service: str, environment: str) -> None:
        self._record("clear_tenant_routes")
        self.tenants = []

    async def maintenance(self, service: str, environment: str, on: bool) -> None:
        if not self.supports_maintenance:
            raise Unsupported(f"maintenance mode is not supported on the target of {environment}")
        self._record("maintenance", on)
        self.in_maintenance = on

    async def observe(self, service: str, environment: str) -> ObservedState:
        return ObservedState(
            weights={v: w for v, w in self.weights.items() if v in self.replicas},
            instances=[{"version": v, "ready": n} for v, n in self.replicas.items()],
            stable_version=self.stable_version[0] if self.stable_version else None,
            tenants_on_candidate=self.tenants,
        )

    async def retire(self, service: str, environment: str, version: str) -> None:
        self._record("retire", version)
        self.replicas.pop(version, None)
        self.weights.pop(version, None)
        self.digests.pop(version, None)
