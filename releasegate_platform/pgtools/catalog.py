"""The backup catalog (`backups`) and the restore drills (`dr_drills`) in the control database: written by the
backup and drill jobs and by the dr-checker's backup points, read by the dr-checker. A backup's facts reach other
services only in contracts (`DRCheckFinished.backup_point`), never by reading these tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from contracts.events import BackupPoint
from releasegate_platform.pgtools.dumps import Dump


@dataclass(frozen=True)
class RecordedBackup:
    """A backup as the catalog has it."""

    id: int
    path: str
    bytes: int
    sha256: str
    finished_at: datetime


@dataclass(frozen=True)
class Drill:
    """A restore drill: when, how long the restore took, whether the integrity checks held."""

    started_at: datetime
    seconds: float
    passed: bool
    reason: str
    checks: list[dict]


class PgBackupCatalog:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record_backup(
        self, database: str, dump: Dump, *, kind: str = "scheduled", release_id: str | None = None
    ) -> BackupPoint:
        async with self._pool.acquire() as conn:
            backup_id = await conn.fetchval(
                "INSERT INTO backups (database, path, bytes, sha256, started_at, finished_at, kind, release_id)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8) RETURNING id",
                database,
                str(dump.path),
                dump.bytes,
                dump.sha256,
                dump.started_at,
                datetime.now(UTC),
                kind,
                release_id,
            )
        return BackupPoint(
            backup_id=backup_id,
            database=database,
            path=str(dump.path),
            sha256=dump.sha256,
            bytes=dump.bytes,
            kind=kind,  # type: ignore[arg-type]
            taken_at=dump.started_at,
            release_id=release_id,
        )

    async def newest_backup(self, database: str) -> RecordedBackup | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT id, path, bytes, sha256, finished_at FROM backups WHERE database = $1"
                " ORDER BY finished_at DESC LIMIT 1",
                database,
            )
        return None if row is None else RecordedBackup(**dict(row))

    async def last_drill(self, database: str) -> Drill | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT started_at, seconds, passed, reason, checks FROM dr_drills"
                " WHERE database = $1 ORDER BY started_at DESC LIMIT 1",
                database,
            )
        return None if row is None else Drill(**dict(row))

    async def record_drill(self, database: str, backup_id: int | None, drill: Drill) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO dr_drills (database, backup_id, started_at, seconds, passed, checks,"
                " reason) VALUES ($1,$2,$3,$4,$5,$6,$7)",
                database,
                backup_id,
                drill.started_at,
                drill.seconds,
                drill.passed,
                drill.checks,
                drill.reason,
            )
