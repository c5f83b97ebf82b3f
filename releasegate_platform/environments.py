"""A service's projection of the deployer's read model (`EnvironmentState` on `release.environments`): one row per
service and environment in the service's own table, only ever moving to a higher sequence, so redelivered and
out-of-order states are harmless. The gatekeeper and the core verifier each keep one."""

from __future__ import annotations

from typing import Protocol

import asyncpg
import structlog

from contracts.cloudevents import Envelope
from contracts.events import EnvironmentState

log = structlog.get_logger()

# the projection tables (releasegate_runtime/schema.sql), each granted to its service's role alone (grants.sql)
TABLES = frozenset({"gatekeeper_environments", "verifier_environments"})


class Projection(Protocol):
    async def keep_environment(self, state: EnvironmentState) -> bool: ...


class PostgresProjection:
    def __init__(self, pool: asyncpg.Pool, table: str) -> None:
        if table not in TABLES:
            raise ValueError(f"{table!r} is not an environment projection table ({', '.join(sorted(TABLES))})")
        self._pool, self._table = pool, table

    async def environment(self, service: str, environment: str) -> EnvironmentState | None:
        """The newest state kept of the environment; None before the deployer published one."""
        async with self._pool.acquire() as conn:
            state = await conn.fetchval(
                f"SELECT state FROM {self._table} WHERE service = $1 AND environment = $2", service, environment
            )
        return None if state is None else EnvironmentState.model_validate(state)

    async def keep_environment(self, state: EnvironmentState) -> bool:
        """Keep `state` unless one with the same or a higher sequence is kept (one statement: concurrent
        deliveries cannot interleave); True if it was kept."""
        async with self._pool.acquire() as conn:
            kept = await conn.fetchval(
                f"INSERT INTO {self._table} AS kept (service, environment, sequence, state)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (service, environment) DO UPDATE"
                " SET sequence = EXCLUDED.sequence, state = EXCLUDED.state, received_at = clock_timestamp()"
                " WHERE kept.sequence < EXCLUDED.sequence RETURNING true",
                state.service,
                state.environment,
                state.sequence,
                state.model_dump(mode="json"),
            )
        return bool(kept)


async def keep_newest(projection: Projection, envelope: Envelope) -> None:
    """The handler of `release.environments`: keep the newest state of each environment (idempotent by sequence)."""
    state: EnvironmentState = envelope.data  # type: ignore[assignment]
    kept = await projection.keep_environment(state)
    log.info(
        "environment state" + (" kept" if kept else " ignored (not newer)"),
        service=state.service,
        environment=state.environment,
        sequence=state.sequence,
        stable=state.stable_version,
    )
