"""The service's database around a data restore (PostgreSQL): writes drained, outbox relayed, events replayed
and the catalog's integrity checks run."""

from __future__ import annotations

import asyncio
from datetime import datetime

import asyncpg

from releasegate_platform.pgtools import postgres
from releasegate_platform.pgtools.integrity import integrity
from releasegate_platform.replay import Replayer, ReplayReport, Scan, replay
from services.rollback.domain import RollbackError

OUTBOX_DRAIN_SECONDS = 60.0
WRITES_DRAIN_SECONDS = 30.0


class PgServiceDatabase:
    def __init__(self, database_url: str) -> None:
        self._url = database_url

    async def _connect(self, database: str, why: str) -> asyncpg.Connection:
        try:
            return await postgres.connect(self._url, database)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise RollbackError(f"cannot connect to {database} to {why}: {exc}") from None

    async def wait_for_no_writes(self, database: str) -> None:
        """Requests already inside the service when maintenance began may still commit; wait until no other
        session of the database is in a transaction."""
        conn = await self._connect(database, "wait for writes to stop")
        try:
            deadline = asyncio.get_running_loop().time() + WRITES_DRAIN_SECONDS
            while await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND state IN ('active', 'idle in transaction') AND backend_type = 'client backend'"
            ):
                if asyncio.get_running_loop().time() > deadline:
                    raise RollbackError(f"writes did not stop within {WRITES_DRAIN_SECONDS:g}s of maintenance mode")
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    async def wait_for_outbox_drained(self, database: str, since: datetime) -> list[dict]:
        """The service stages its business events in its own database (an outbox) and relays them to the topic;
        an event not relayed yet exists only in the database about to be replaced, and it would be neither
        restored nor replayed. Wait until the relay has published every staged event (writes are already
        stopped); return the events the broker refused for good since `since` (listed in the incident report,
        never replayable)."""
        conn = await self._connect(database, "wait for its outbox")
        try:
            if not await conn.fetchval("SELECT to_regclass('event_outbox') IS NOT NULL"):
                return []  # a service without an outbox publishes directly
            deadline = asyncio.get_running_loop().time() + OUTBOX_DRAIN_SECONDS
            while pending := await conn.fetchval(
                "SELECT count(*) FROM event_outbox WHERE sent_at IS NULL AND refused IS NULL"
            ):
                if asyncio.get_running_loop().time() > deadline:
                    raise RollbackError(
                        f"{pending} business events of {database} are not on the topic after "
                        f"{OUTBOX_DRAIN_SECONDS:g}s; restoring now would lose them"
                    )
                await asyncio.sleep(0.2)
            refused = await conn.fetch(
                "SELECT id::text AS id, left(refused, 200) AS reason FROM event_outbox "
                "WHERE refused IS NOT NULL AND created_at >= $1 ORDER BY created_at LIMIT 100",
                since,
            )
            return [dict(r) for r in refused]
        finally:
            await conn.close()

    async def replay_and_check(
        self, database: str, replayer: Replayer, scan: Scan, checks: dict[str, str]
    ) -> tuple[ReplayReport, list[dict]]:
        conn = await self._connect(database, "replay its events")
        try:
            report = await replay(replayer, conn, scan)
            return report, await integrity(conn, checks)
        finally:
            await conn.close()
