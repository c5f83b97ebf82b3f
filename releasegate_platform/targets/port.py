"""The deployment target port: what the deployer asks of an environment, in the vocabulary of releases (versions,
weights, tenants), never of processes or Pods. One adapter per kind of target, chosen per environment by the
catalog (`ServiceEntry.target`)."""

from __future__ import annotations

from typing import Protocol

from contracts.events import ObservedState


class TargetError(Exception):
    """A target could not carry out a request; the reason goes back to the coordinator as the step's outcome."""


class Unsupported(TargetError):
    """The target cannot express this request at all (e.g. maintenance mode on kubernetes)."""


class DeploymentTarget(Protocol):
    async def stable(self, service: str, environment: str) -> tuple[str, str] | None:
        """(version, digest) the environment falls back to, or None before its first stable version."""

    async def set_stable(self, service: str, environment: str, version: str, digest: str) -> None: ...

    async def versions(self, service: str, environment: str) -> dict[str, int]:
        """Every version with a workload in the environment → its ready replicas (0 for one that is not ready)."""

    async def run_version(
        self, service: str, environment: str, version: str, digest: str, release_id: str | None, replicas: int
    ) -> int:
        """Run at least `replicas` ready replicas of `version` (the artifact `digest`) and wait until they really
        are ready; the number ready is returned. New replicas get no traffic until `shift`."""

    async def scale(self, service: str, environment: str, version: str, replicas: int) -> None:
        """Exactly `replicas` replicas of a version that runs already (0 keeps its workload, serving nothing)."""

    async def shift(self, service: str, environment: str, weights: dict[str, int]) -> None:
        """Percent of the environment's traffic per version; versions not named keep theirs."""

    async def route_tenants(self, service: str, environment: str, version: str, tenants: list[str]) -> None:
        """Send these tenants (and internal users with the canary cookie) to `version`; nobody else moves."""

    async def clear_tenant_routes(self, service: str, environment: str) -> None: ...

    async def maintenance(self, service: str, environment: str, on: bool) -> None:
        """Every request of the environment answered 503 by the target itself (no write gets through)."""

    async def observe(self, service: str, environment: str) -> ObservedState:
        """What serves, read back from the real thing (HAProxy, the Kubernetes API server), not from our records."""

    async def retire(self, service: str, environment: str, version: str) -> None:
        """The version's workload gone: no replica, no traffic, nothing left behind."""
