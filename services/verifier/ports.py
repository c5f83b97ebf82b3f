"""What the core verifier's check needs from the world, as ports: `bootstrap.py` plugs in PostgreSQL and
Prometheus, the unit tests in-memory fakes."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from contracts.events import EnvironmentState, KpiResult, PromQuery
from services.verifier.domain import Counts


class KpiStorePort(Protocol):
    async def counts(
        self, environment: str, version: str | None, start: datetime, end: datetime, tenants: list[str] | None = None
    ) -> Counts:
        """What `version` did in `environment` over [start, end), from the step's tenants when it names them."""
        ...

    async def targets(self, service: str, environment: str, version: str) -> list[str]:
        """Base URLs of the version's serving instances, from the deployer's published state; none if unknown."""
        ...

    async def keep_environment(self, state: EnvironmentState) -> bool:
        """Keep a published environment state unless a newer (or the same) one is kept; True if kept."""
        ...


class PrometheusPort(Protocol):
    async def kpis(
        self,
        queries: dict[str, PromQuery],
        version: str,
        environment: str,
        window_seconds: int,
        *,
        stable: str | None = None,
    ) -> list[KpiResult]:
        """The catalog's PromQL KPIs of `version` over the last `window` seconds, each judged; one that `stable`
        breaks too in the same window is inconclusive, not failed."""
        ...
