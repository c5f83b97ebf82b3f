"""DR-checker handler: read the backup catalog, check the newest backup file, reply."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from contracts.cloudevents import Envelope
from contracts.events import DRCheckFinished, DRCheckRequested
from services.common import worker
from services.common.artifacts import sha256_file
from services.dr_checker.domain import Backup, backup_freshness

CONSUMER = "dr-checker"


class DRChecker:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def on_request(self, envelope: Envelope) -> None:
        req: DRCheckRequested = envelope.data  # type: ignore[assignment]
        await worker.reply_once(self._pool, CONSUMER, envelope, lambda: self.check(req))

    async def check(self, req: DRCheckRequested) -> DRCheckFinished:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow("SELECT path, bytes, sha256, finished_at FROM backups WHERE database = $1"
                                      " ORDER BY finished_at DESC LIMIT 1", req.database)
        newest = None
        if row is not None:
            path = Path(row["path"])
            intact = path.is_file() and sha256_file(path) == row["sha256"]
            newest = Backup(str(path), row["finished_at"], row["bytes"], intact)
        check = backup_freshness(req.database, newest, req.rpo_seconds, datetime.now(UTC))
        return DRCheckFinished(release_id=req.release_id, step_id=req.step_id, ready=check.passed, checks=[check])
