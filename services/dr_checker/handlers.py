"""DR-checker handler: answer "could we recover right now, within the RPO and RTO?" with evidence (backup catalog,
restore drills, standby replica, runbooks), and take pre-release backup points once the business events since
would still be replayable. The database is always the one the catalog gives the service; a command naming another
is refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import CheckResult, DRCheckFinished, DRCheckRequested
from releasegate_platform.artifacts import sha256_file
from releasegate_platform.catalog import Catalog, CatalogError, ServiceEntry
from releasegate_runtime import worker
from releasegate_runtime.kafka import PermanentError
from releasegate_runtime.settings import REPO_ROOT, ServiceSettings
from services.dr_checker import backup, postgres
from services.dr_checker.domain import (
    BACKUP_POINT_HOLD_SECONDS,
    Backup,
    Drill,
    TopicRetention,
    backup_freshness,
    database_refusal,
    events_replayable,
    replica_lag,
    restore_drill,
    runbooks,
)

CONSUMER = "dr-checker"


def utcnow() -> datetime:
    return datetime.now(UTC)


class CommandRefused(PermanentError):
    """A DR command about a service the catalog does not know, or naming a database that is not the service's."""


RetentionReader = Callable[[str], Awaitable[TopicRetention]]


class DRChecker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: ServiceSettings,
        retention: RetentionReader,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._pool, self._settings, self._retention, self._clock = pool, settings, retention, clock
        self._catalog = Catalog(settings.catalog_dir)

    async def on_request(self, envelope: Envelope) -> None:
        req: DRCheckRequested = envelope.data  # type: ignore[assignment]
        await worker.reply_once(self._pool, CONSUMER, envelope, lambda: self.handle(req))

    def resolve(self, req: DRCheckRequested) -> tuple[ServiceEntry, str]:
        """The service's catalog entry and database; CommandRefused (dead-lettered with the reason) otherwise."""
        try:
            entry = self._catalog.get(req.service)
            database = postgres.database_of(entry)
        except (CatalogError, postgres.NameRefused) as exc:
            raise CommandRefused(
                f"dr-checker refused {req.step_id} of {req.release_id}: cannot tell which "
                f"database service {req.service[:80]!r} owns: {exc}"
            ) from None
        refusal = database_refusal(req.service, database, req.database)
        if refusal is not None:
            raise CommandRefused(f"dr-checker refused {req.step_id} of {req.release_id}: {refusal}")
        return entry, database

    async def handle(self, req: DRCheckRequested) -> DRCheckFinished:
        entry, database = self.resolve(req)
        checks = await (
            self.backup_point(req, database) if req.action == "backup-point" else self.readiness(entry, database)
        )
        ready = all(c.passed for c in checks)
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO dr_reports (release_id, step_id, ready, checks) VALUES ($1,$2,$3,$4)"
                " ON CONFLICT DO NOTHING",
                req.release_id,
                req.step_id,
                ready,
                [c.model_dump(mode="json") for c in checks],
            )
        return DRCheckFinished(release_id=req.release_id, step_id=req.step_id, ready=ready, checks=checks)

    async def readiness(self, entry: ServiceEntry, database: str) -> list[CheckResult]:
        now = self._clock()
        rpo = entry.dr.rpo_seconds
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT path, bytes, sha256, finished_at FROM backups WHERE database = $1"
                " ORDER BY finished_at DESC LIMIT 1",
                database,
            )
            drill = await conn.fetchrow(
                "SELECT started_at, seconds, passed, reason, checks FROM dr_drills"
                " WHERE database = $1 ORDER BY started_at DESC LIMIT 1",
                database,
            )
        newest = None
        if row is not None:
            newest = Backup(row["path"], row["finished_at"], row["bytes"], self._intact(row["path"], row["sha256"]))
        checks = [backup_freshness(database, newest, rpo, now)]
        last = (
            Drill(drill["started_at"], drill["seconds"], drill["passed"], drill["reason"], drill["checks"])
            if drill
            else None
        )
        checks += restore_drill(database, last, entry.dr.drill_max_age_seconds, entry.dr.rto_seconds, now)
        if entry.dr.standby is not None:
            checks.append(
                replica_lag(
                    *await _standby_lag(
                        self._settings.database_url, database, entry.dr.standby.host, entry.dr.standby.port
                    ),
                    rpo,
                )
            )
        present = {
            name: ref.startswith(("http://", "https://")) or (REPO_ROOT / ref).is_file()
            for name, ref in entry.dr.runbooks.items()
        }
        checks.append(runbooks(entry.tier, entry.dr.runbooks, present))
        return checks

    def _intact(self, path: str, sha256: str) -> bool:
        """The recorded file is in the backup folder, present, and has the recorded digest."""
        try:
            file = backup.recorded_file(self._settings, path)
        except backup.BackupError:
            return False
        return file.is_file() and sha256_file(file) == sha256

    async def backup_point(self, req: DRCheckRequested, database: str) -> list[CheckResult]:
        """The pre-release backup point: a pg_dump taken now, recorded with the release it protects; only if a
        restore could still replay every business event from now until the release can no longer need it."""
        replayable = events_replayable(await self._retention(topics.SHOP_EVENTS), BACKUP_POINT_HOLD_SECONDS)
        if not replayable.passed:
            return [replayable]
        try:
            path, started = await backup.dump(self._settings, database)
        except backup.BackupError as exc:
            return [CheckResult(name="backup_point", passed=False, reason=str(exc)), replayable]
        async with self._pool.acquire() as conn:
            backup_id = await backup.record(
                conn, database, path, started, kind="backup-point", release_id=req.release_id
            )
        return [
            CheckResult(
                name="backup_point",
                passed=True,
                reason=f"backup point {backup_id} of {database} taken before the production migrations",
                evidence={
                    "backup_id": backup_id,
                    "path": str(path),
                    "taken_at": started.isoformat(),
                    "bytes": path.stat().st_size,
                },
            ),
            replayable,
        ]


async def _standby_lag(database_url: str, database: str, host: str, port: int) -> tuple[float | None, str | None]:
    """Replay lag of a streaming replica: zero when it has replayed everything it received and nothing new
    arrives, else the age of the last replayed transaction."""
    try:
        conn = await postgres.connect(database_url, database, host=host, port=port, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return None, f"cannot connect: {exc}"
    try:
        row = await conn.fetchrow(
            "SELECT pg_is_in_recovery() AS standby, pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() AS caught_up,"
            " extract(epoch FROM now() - pg_last_xact_replay_timestamp()) AS age,"
            " pg_is_wal_replay_paused() AS paused"
        )
    finally:
        await conn.close()
    if not row["standby"]:
        return None, "it is not in recovery (not a standby)"
    if row["age"] is None:
        return None, "it has not replayed any transaction yet"
    return (0.0 if row["caught_up"] and not row["paused"] else float(row["age"])), None
