"""Rollback handler: restore_traffic puts 100% on the recorded stable version, routes tenants back, retires every
other version (its processes or its Deployment gone) and reads the result back from the target (idempotent: a
repeat finds nothing left to retire); the target is the environment's as the catalog names it (`local` or
`kubernetes`: the directory the deployer acts through). restore_data also puts the database back: writes stopped
(maintenance mode, which only a target that has one can do), backup point restored, events since replayed by the
service's own replayer, integrity checked. Only with the coordinator's step grant, and a restore only of its own
release's backup point as the command describes it, its file confined to the backup folder and its digest checked
first; each step once (`ledger`): a redelivered command gets the recorded outcome, not a second restore. The
database is the one the catalog gives the service, never a name from the command. Every adapter is injected
(`bootstrap`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog

from contracts.events import AlertRaised, RollbackFinished, RollbackRequested, Severity
from contracts.names import MAX_REASON
from releasegate_platform.catalog import Catalog, CatalogError, ServiceEntry
from releasegate_platform.haproxy import HAProxyError
from releasegate_platform.pgtools import postgres
from releasegate_platform.pgtools.dumps import BackupError
from releasegate_platform.replay import Replayer, ReplayError
from releasegate_platform.targets.port import DeploymentTarget, TargetError, Unsupported
from releasegate_runtime import metrics
from services.rollback.domain import RollbackError, backup_point_refusal
from services.rollback.ledger import MAX_ATTEMPTS, StepLedger
from services.rollback.ports import Dumps, EventLog, ServiceDatabase

REPLAY_MARGIN = timedelta(seconds=5)
RUNBOOK = "docs/runbooks/shop-restore.md"

log = structlog.get_logger()

Targets = Callable[[str, str], DeploymentTarget]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Rollback:
    def __init__(
        self,
        *,
        catalog: Catalog,
        targets: Targets,
        dumps: Dumps,
        events: EventLog,
        database: ServiceDatabase,
        replayer_of: Callable[[ServiceEntry], Replayer],
        ledger: StepLedger,
        clock: Callable[[], datetime] = utcnow,
        edge_flush: Callable[[str, str], Awaitable[str]] | None = None,
    ) -> None:
        """`targets(service, environment)`: that environment's deployment target (from the catalog);
        `edge_flush(service, environment)`: empties the environment's edge cache of the service's pages once
        traffic is back on stable (`releasegate_platform.edge.rollback_flusher`), returning a note."""
        self._catalog, self._targets, self._dumps, self._events = catalog, targets, dumps, events
        self._db, self._replayer_of, self._ledger, self._clock = database, replayer_of, ledger, clock
        self._edge_flush = edge_flush

    def refusal(self, req: RollbackRequested) -> str | None:
        """Admission check: a data restore names the backup point the dr-checker took for this release."""
        if req.compensation != "restore_data":
            return None
        try:
            database = postgres.database_of(self._catalog.get(req.service))
        except (CatalogError, postgres.NameRefused) as exc:
            return f"cannot tell which database to restore: {exc}"
        return backup_point_refusal(req, database)

    async def restore(self, req: RollbackRequested) -> RollbackFinished:
        """Each (release, step) once: its recorded outcome if it has one; else carried out and recorded, with an
        alert if a data restore failed."""
        begun = await self._ledger.begin(req.release_id, req.step_id)
        if begun.outcome is not None:
            log.info("compensation already done; its outcome is sent again", step=req.step_id)
            return begun.outcome
        if begun.attempt > MAX_ATTEMPTS:
            result = self._failed(
                req,
                f"{req.step_id} was started {MAX_ATTEMPTS} times and never finished (the "
                "rollback process stopped, or the database or broker failed, during it); not "
                "tried again. Production may be in maintenance mode: check it and follow "
                f"{RUNBOOK}",
                {"maintenance": "unknown", "attempt": begun.attempt},
            )
        else:
            result = await self._compensate(req, begun.attempt)
            if result.succeeded and req.grant is not None:
                metrics.decision_to_action(req.environment, req.compensation, req.grant.issued_at, self._clock())
        alert = (
            None
            if result.succeeded
            else AlertRaised(
                release_id=req.release_id,
                service=req.service,
                severity=Severity.CRITICAL,
                title=f"{req.compensation} of {req.service} in {req.environment} failed"
                + (" — production is in maintenance mode" if result.evidence.get("maintenance") == "on" else ""),
                detail=result.reason,
            )
        )
        return await self._ledger.finish(result, alert)

    async def _compensate(self, req: RollbackRequested, attempt: int) -> RollbackFinished:
        evidence: dict = {"attempt": attempt} if attempt > 1 else {}
        try:
            target = self._targets(req.service, req.environment)
            if req.compensation == "restore_data":
                reason = await self._restore_data(req, target, evidence)
            else:
                reason = await self._restore_traffic(req, target)
            if self._edge_flush is not None:  # stable's pages return at the edge too
                reason += await self._edge_flush(req.service, req.environment)
            observed = await target.observe(req.service, req.environment)
            if set(observed.weights) - {observed.stable_version}:
                raise RollbackError(f"traffic still reaches {observed.weights} after the rollback")
            return RollbackFinished(
                release_id=req.release_id,
                step_id=req.step_id,
                environment=req.environment,
                succeeded=True,
                reason=_bounded(reason),
                observed=observed,
                evidence=evidence,
            )
        except (
            RollbackError,
            TargetError,
            HAProxyError,
            BackupError,
            ReplayError,
            postgres.NameRefused,
            CatalogError,
        ) as exc:
            log.error("compensation failed", step=req.step_id, error=str(exc))
            return self._failed(req, f"{exc}{_what_is_left(req, evidence)}", evidence)

    @staticmethod
    def _failed(req: RollbackRequested, reason: str, evidence: dict) -> RollbackFinished:
        return RollbackFinished(
            release_id=req.release_id,
            step_id=req.step_id,
            environment=req.environment,
            succeeded=False,
            reason=_bounded(reason),
            evidence=evidence,
        )

    async def _restore_data(self, req: RollbackRequested, target: DeploymentTarget, evidence: dict) -> str:
        """Coordinated restore. Everything that can be checked without touching production is checked first (the
        backup point and its file's digest, the service's replayer, that the topic still holds every event since
        the point, a serving stable instance, that the target has a maintenance mode); if one fails, production is
        left exactly as it is. Once writes are
        stopped, any failure leaves maintenance on: the database is then either restored without its later events
        or still as the candidate left it under stable code, and neither should take writes before a person has
        looked."""
        entry = self._catalog.get(req.service)
        database = postgres.database_of(entry)
        refusal = backup_point_refusal(req, database)
        point = req.backup_point
        if refusal is not None or point is None:
            raise RollbackError(refusal or f"restore_data of {req.service} carries no backup point")
        try:
            file = self._dumps.verified_file(point.path, point.sha256)
        except BackupError as exc:
            raise RollbackError(f"backup point {point.backup_id} of {database} cannot be restored: {exc}") from None
        replayer = self._replayer_of(entry)
        since = point.taken_at - REPLAY_MARGIN
        evidence["events_since_backup_point"] = await self._events.check_replayable(since)
        await self._serving_stable(req, target)
        evidence["maintenance"] = "on"
        try:
            await target.maintenance(req.service, req.environment, on=True)
        except Unsupported as exc:
            del evidence["maintenance"]  # the target could not even express it: nothing changed
            raise RollbackError(f"no data restore in {req.environment}: writes must stop first, but {exc}") from None
        evidence["maintenance_on_at"] = self._clock().isoformat()
        traffic = await self._restore_traffic(req, target)
        await self._db.wait_for_no_writes(database)
        evidence["events_not_published"] = await self._db.wait_for_outbox_drained(database, since)
        await self._dumps.restore(database, file, clean=True)
        evidence["restored_backup"] = {"id": point.backup_id, "taken_at": point.taken_at.isoformat()}
        # The dump is a snapshot from its start; events committed during the dump are replayed, idempotently.
        scan = await self._events.events_since(replayer, req.service, req.environment, since)
        report, checks = await self._db.replay_and_check(database, replayer, scan, entry.dr.integrity_checks)
        evidence.update(report.as_evidence())
        evidence["integrity_checks"] = checks
        failed = [c["name"] for c in checks if not c["passed"]]
        if failed:
            raise RollbackError(f"after restore and replay the integrity checks fail: {', '.join(failed)}")
        await target.maintenance(req.service, req.environment, on=False)
        evidence["maintenance"] = "off"
        evidence["maintenance_off_at"] = self._clock().isoformat()
        lost, invalid = report.not_replayable.total, report.invalid_events.total
        return (
            f"{database} restored to backup point {point.backup_id}; {len(report.replayed)} events replayed from "
            f"{self._events.topic}, {report.already_present} already in the backup, {lost} not replayable"
            + (f", {invalid} invalid events skipped" if invalid else "")
            + (" (listed in the incident report)" if lost or invalid else "")
            + f"; {len(checks)} integrity checks hold; {traffic}"
        )

    async def _serving_stable(self, req: RollbackRequested, target: DeploymentTarget) -> str:
        stable = await target.stable(req.service, req.environment)
        if stable is None:
            raise RollbackError(f"{req.environment} has no recorded stable version of {req.service}")
        if not (await target.versions(req.service, req.environment)).get(stable[0]):
            raise RollbackError(
                f"no serving {stable[0]} instance in {req.environment}; the rollback service may "
                "not start one (only the deployer deploys)"
            )
        return stable[0]

    async def _restore_traffic(self, req: RollbackRequested, target: DeploymentTarget) -> str:
        """Every other version's weight to 0 at once (its workload still up, so no request in flight fails), its
        tenant and cookie routes cleared, then its workload retired."""
        service, environment = req.service, req.environment
        stable = await self._serving_stable(req, target)
        moved = (await target.observe(service, environment)).tenants_on_candidate
        others = sorted(v for v in await target.versions(service, environment) if v != stable)
        await target.shift(service, environment, {stable: 100, **dict.fromkeys(others, 0)})
        await target.clear_tenant_routes(service, environment)
        for version in others:
            await target.retire(service, environment, version)
        tenants = f"tenants {', '.join(moved)} routed back; " if moved else ""
        return (
            f"{tenants}100% of {environment} traffic on {stable}; retired "
            f"{', '.join(others) or 'nothing (already clean)'}"
        )


def _what_is_left(req: RollbackRequested, evidence: dict) -> str:
    """What a failed compensation leaves behind, for the reason and the alert."""
    if req.compensation != "restore_data":
        return ""
    if evidence.get("maintenance") == "on":
        return f"; production STAYS IN MAINTENANCE MODE (HAProxy answers 503) until a person ends it: see {RUNBOOK}"
    return "; nothing was changed: production traffic and data are as they were, for a person to decide"


def _bounded(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 60] + f"… ({len(reason)} characters)"
