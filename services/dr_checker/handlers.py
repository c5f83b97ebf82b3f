"""DR-checker handler: answer "could we recover right now, within the RPO and RTO?" with evidence (backup catalog,
restore drills, standby replica, runbooks), and take pre-release backup points."""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from contracts.cloudevents import Envelope
from contracts.events import CheckResult, DRCheckFinished, DRCheckRequested
from services.common import worker
from services.common.artifacts import sha256_file
from services.common.catalog import Catalog, CatalogError, ServiceEntry
from services.common.settings import REPO_ROOT, ServiceSettings
from services.dr_checker import backup, postgres
from services.dr_checker.domain import Backup, Drill, backup_freshness, replica_lag, restore_drill, runbooks

CONSUMER = "dr-checker"


def utcnow() -> datetime:
    return datetime.now(UTC)


class DRChecker:
    def __init__(self, pool: asyncpg.Pool, settings: ServiceSettings, clock: Callable[[], datetime] = utcnow) -> None:
        self._pool, self._settings, self._clock = pool, settings, clock
        self._catalog = Catalog(settings.catalog_dir)

    async def on_request(self, envelope: Envelope) -> None:
        req: DRCheckRequested = envelope.data  # type: ignore[assignment]
        await worker.reply_once(self._pool, CONSUMER, envelope, lambda: self.handle(req))

    async def handle(self, req: DRCheckRequested) -> DRCheckFinished:
        checks = await (self.backup_point(req) if req.action == "backup-point" else self.readiness(req))
        ready = all(c.passed for c in checks)
        async with self._pool.acquire() as conn:
            await conn.execute("INSERT INTO dr_reports (release_id, step_id, ready, checks) VALUES ($1,$2,$3,$4)"
                               " ON CONFLICT DO NOTHING", req.release_id, req.step_id, ready,
                               [c.model_dump(mode="json") for c in checks])
        return DRCheckFinished(release_id=req.release_id, step_id=req.step_id, ready=ready, checks=checks)

    async def readiness(self, req: DRCheckRequested) -> list[CheckResult]:
        now = self._clock()
        try:
            entry: ServiceEntry | None = self._catalog.get(req.service)
        except CatalogError:
            entry = None
        rpo = entry.dr.rpo_seconds if entry else req.rpo_seconds
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow("SELECT path, bytes, sha256, finished_at FROM backups WHERE database = $1"
                                      " ORDER BY finished_at DESC LIMIT 1", req.database)
            drill = await conn.fetchrow("SELECT started_at, seconds, passed, reason, checks FROM dr_drills"
                                        " WHERE database = $1 ORDER BY started_at DESC LIMIT 1", req.database)
        newest = None
        if row is not None:
            path = Path(row["path"])
            newest = Backup(str(path), row["finished_at"], row["bytes"], path.is_file()
                            and sha256_file(path) == row["sha256"])
        checks = [backup_freshness(req.database, newest, rpo, now)]
        if entry is None:
            return checks
        last = Drill(drill["started_at"], drill["seconds"], drill["passed"], drill["reason"], drill["checks"]) \
            if drill else None
        checks += restore_drill(req.database, last, entry.dr.drill_max_age_seconds, entry.dr.rto_seconds, now)
        if entry.dr.standby is not None:
            dsn = postgres.dsn_for(self._settings.database_url, req.database, host=entry.dr.standby.host,
                                   port=entry.dr.standby.port)
            checks.append(replica_lag(*await _standby_lag(dsn), rpo))
        present = {name: ref.startswith(("http://", "https://")) or (REPO_ROOT / ref).is_file()
                   for name, ref in entry.dr.runbooks.items()}
        checks.append(runbooks(entry.tier, entry.dr.runbooks, present))
        return checks

    async def backup_point(self, req: DRCheckRequested) -> list[CheckResult]:
        """The pre-release backup point: a pg_dump taken now, recorded with the release it protects."""
        try:
            path, started = await backup.dump(self._settings, req.database)
        except backup.BackupError as exc:
            return [CheckResult(name="backup_point", passed=False, reason=str(exc))]
        async with self._pool.acquire() as conn:
            backup_id = await backup.record(conn, req.database, path, started, kind="backup-point",
                                            release_id=req.release_id)
        return [CheckResult(name="backup_point", passed=True,
                            reason=f"backup point {backup_id} of {req.database} taken before the production "
                                   "migrations",
                            evidence={"backup_id": backup_id, "path": str(path), "taken_at": started.isoformat(),
                                      "bytes": path.stat().st_size})]


async def _standby_lag(dsn: str) -> tuple[float | None, str | None]:
    """Replay lag of a streaming replica: zero when it has replayed everything it received and nothing new
    arrives, else the age of the last replayed transaction."""
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        return None, f"cannot connect: {exc}"
    try:
        row = await conn.fetchrow(
            "SELECT pg_is_in_recovery() AS standby, pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() AS caught_up,"
            " extract(epoch FROM now() - pg_last_xact_replay_timestamp()) AS age,"
            " pg_is_wal_replay_paused() AS paused")
    finally:
        await conn.close()
    if not row["standby"]:
        return None, "it is not in recovery (not a standby)"
    if row["age"] is None:
        return None, "it has not replayed any transaction yet"
    return (0.0 if row["caught_up"] and not row["paused"] else float(row["age"])), None
