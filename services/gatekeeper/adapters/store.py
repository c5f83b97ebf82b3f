"""The gatekeeper's tables in PostgreSQL: its decisions, and its projection of the deployer's read model
(`gatekeeper_environments`, from `release.environments`)."""

from __future__ import annotations

import asyncpg

from contracts.events import EnvironmentState
from releasegate_platform.environments import PostgresProjection
from services.gatekeeper.domain import GateDecision


class PostgresGateStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._environments = PostgresProjection(pool, "gatekeeper_environments")

    async def environment(self, service: str, environment: str) -> EnvironmentState | None:
        return await self._environments.environment(service, environment)

    async def keep_environment(self, state: EnvironmentState) -> bool:
        return await self._environments.keep_environment(state)

    async def record(self, decision: GateDecision) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO gate_decisions (request_id, release_id, step_id, environment, decision, risk,"
                " policy_version, input_digest, input, rules, warnings, refused)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) ON CONFLICT (request_id) DO NOTHING",
                decision.request_id,
                decision.release_id,
                decision.step_id,
                decision.environment,
                decision.decision,
                decision.risk,
                decision.policy_version,
                decision.input_digest,
                decision.input,
                decision.rules,
                decision.warnings,
                decision.refused,
            )
