"""The gatekeeper's tables in PostgreSQL: its decisions, and its projection of the deployer's read model
(`gatekeeper_environments`, from `release.environments`)."""

from __future__ import annotations

import asyncpg

from contracts.events import EnvironmentState
from services.gatekeeper.domain import GateDecision


class PostgresGateStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def environment(self, service: str, environment: str) -> EnvironmentState | None:
        async with self._pool.acquire() as conn:
            state = await conn.fetchval(
                "SELECT state FROM gatekeeper_environments WHERE service = $1 AND environment = $2",
                service,
                environment,
            )
        return None if state is None else EnvironmentState.model_validate(state)

    async def keep_environment(self, state: EnvironmentState) -> bool:
        # one statement, so concurrent deliveries cannot interleave: the row only ever moves to a higher sequence
        async with self._pool.acquire() as conn:
            kept = await conn.fetchval(
                "INSERT INTO gatekeeper_environments AS kept (service, environment, sequence, state)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (service, environment) DO UPDATE"
                " SET sequence = EXCLUDED.sequence, state = EXCLUDED.state, received_at = clock_timestamp()"
                " WHERE kept.sequence < EXCLUDED.sequence RETURNING true",
                state.service,
                state.environment,
                state.sequence,
                state.model_dump(mode="json"),
            )
        return bool(kept)

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
