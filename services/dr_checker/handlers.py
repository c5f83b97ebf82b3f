"""DR-checker handler: answer "could we recover right now, within the RPO and RTO?" with evidence (backup catalog,
restore drills, standby replica, runbooks), and take pre-release backup points once the business events since
would still be replayable; a backup point taken is reported in the result (`DRCheckFinished.backup_point`), the
only way its facts reach a restore. The database is always the one the catalog gives the service; a command
naming another is refused. Every adapter is injected (`bootstrap`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from contracts import topics
from contracts.events import BackupPoint, CheckResult, DRCheckFinished, DRCheckRequested
from releasegate_platform.catalog import Catalog, CatalogError, ServiceEntry
from releasegate_platform.pgtools import postgres
from releasegate_platform.pgtools.dumps import BackupError
from releasegate_runtime.kafka import PermanentError
from services.dr_checker.domain import (
    BACKUP_POINT_HOLD_SECONDS,
    Backup,
    backup_freshness,
    database_refusal,
    events_replayable,
    replica_lag,
    restore_drill,
    runbooks,
)
from services.dr_checker.ports import BackupCatalog, Dumps, Reports, Retention, Runbooks, Standby


def utcnow() -> datetime:
    return datetime.now(UTC)


class CommandRefused(PermanentError):
    """A DR command about a service the catalog does not know, or naming a database that is not the service's."""


class DRChecker:
    def __init__(
        self,
        *,
        catalog: Catalog,
        backups: BackupCatalog,
        reports: Reports,
        dumps: Dumps,
        retention: Retention,
        standby: Standby,
        runbook_exists: Runbooks,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._catalog, self._backups, self._reports = catalog, backups, reports
        self._dumps, self._retention = dumps, retention
        self._standby, self._runbook_exists, self._clock = standby, runbook_exists, clock

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
        point = None
        if req.action == "backup-point":
            checks, point = await self.backup_point(req, database)
        else:
            checks = await self.readiness(entry, database)
        ready = all(c.passed for c in checks)
        await self._reports.record_report(req.release_id, req.step_id, ready, checks)
        return DRCheckFinished(
            release_id=req.release_id, step_id=req.step_id, ready=ready, checks=checks, backup_point=point
        )

    async def readiness(self, entry: ServiceEntry, database: str) -> list[CheckResult]:
        now = self._clock()
        rpo = entry.dr.rpo_seconds
        row = await self._backups.newest_backup(database)
        newest = (
            None
            if row is None
            else Backup(row.path, row.finished_at, row.bytes, self._dumps.intact(row.path, row.sha256))
        )
        checks = [backup_freshness(database, newest, rpo, now)]
        last = await self._backups.last_drill(database)
        checks += restore_drill(database, last, entry.dr.drill_max_age_seconds, entry.dr.rto_seconds, now)
        if entry.dr.standby is not None:
            lag = await self._standby.lag(database, entry.dr.standby.host, entry.dr.standby.port)
            checks.append(replica_lag(*lag, rpo))
        present = {name: self._runbook_exists(ref) for name, ref in entry.dr.runbooks.items()}
        checks.append(runbooks(entry.tier, entry.dr.runbooks, present))
        return checks

    async def backup_point(self, req: DRCheckRequested, database: str) -> tuple[list[CheckResult], BackupPoint | None]:
        """The pre-release backup point: a pg_dump taken now, recorded with the release it protects; only if a
        restore could still replay every business event from now until the release can no longer need it."""
        replayable = events_replayable(await self._retention(topics.SHOP_EVENTS), BACKUP_POINT_HOLD_SECONDS)
        if not replayable.passed:
            return [replayable], None
        try:
            dump = await self._dumps.dump(database)
        except BackupError as exc:
            return [CheckResult(name="backup_point", passed=False, reason=str(exc)), replayable], None
        point = await self._backups.record_backup(database, dump, kind="backup-point", release_id=req.release_id)
        check = CheckResult(
            name="backup_point",
            passed=True,
            reason=f"backup point {point.backup_id} of {database} taken before the production migrations",
            # the saga keeps this evidence as its backup point; the typed facts travel in `backup_point`
            evidence={
                "backup_id": point.backup_id,
                "path": point.path,
                "sha256": point.sha256,
                "database": point.database,
                "kind": point.kind,
                "taken_at": point.taken_at.isoformat(),
                "bytes": point.bytes,
            },
        )
        return [check, replayable], point
