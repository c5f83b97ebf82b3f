"""Deploy step outcomes in PostgreSQL (`deploy_steps`): one row per (release, step), so a redelivered step returns
its first outcome instead of acting twice."""

from __future__ import annotations

import asyncpg

from contracts.events import DeployFinished


class PostgresStepResults:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, release_id: str, step_id: str) -> DeployFinished | None:
        async with self._pool.acquire() as conn:
            done = await conn.fetchval(
                "SELECT result FROM deploy_steps WHERE release_id = $1 AND step_id = $2", release_id, step_id
            )
        return None if done is None else DeployFinished.model_validate(done)

    async def put(self, result: DeployFinished) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO deploy_steps (release_id, step_id, result) VALUES ($1,$2,$3) ON CONFLICT DO NOTHING",
                result.release_id,
                result.step_id,
                result.model_dump(mode="json"),
            )
