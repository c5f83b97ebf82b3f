"""The dr-checker's own records in PostgreSQL (its DR reports) and the standby's replay lag; the backup catalog
is `releasegate_platform.pgtools.catalog`."""

from __future__ import annotations

import asyncpg

from contracts.events import CheckResult
from releasegate_platform.pgtools import postgres


class PgDRReports:
    """`dr_reports`: every DR check's result, for the audit trail."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record_report(self, release_id: str, step_id: str, ready: bool, checks: list[CheckResult]) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO dr_reports (release_id, step_id, ready, checks) VALUES ($1,$2,$3,$4)"
                " ON CONFLICT DO NOTHING",
                release_id,
                step_id,
                ready,
                [c.model_dump(mode="json") for c in checks],
            )


class PgStandby:
    """A streaming replica's replay lag, with the primary's credentials."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url

    async def lag(self, database: str, host: str, port: int) -> tuple[float | None, str | None]:
        """Zero when it has replayed everything it received and nothing new arrives, else the age of the last
        replayed transaction; or why it cannot be used."""
        try:
            conn = await postgres.connect(self._url, database, host=host, port=port, timeout=5)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            return None, f"cannot connect: {exc}"
        try:
            row = await conn.fetchrow(
                "SELECT pg_is_in_recovery() AS standby, pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() AS"
                " caught_up, extract(epoch FROM now() - pg_last_xact_replay_timestamp()) AS age,"
                " pg_is_wal_replay_paused() AS paused"
            )
        finally:
            await conn.close()
        if not row["standby"]:
            return None, "it is not in recovery (not a standby)"
        if row["age"] is None:
            return None, "it has not replayed any transaction yet"
        return (0.0 if row["caught_up"] and not row["paused"] else float(row["age"])), None
