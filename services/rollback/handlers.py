"""Rollback handler: restore_traffic puts 100% on the recorded stable version, stops the candidate's instances
and reads the result back from HAProxy (idempotent: a repeat finds nothing left to stop). restore_data also puts
the database back: writes stopped, backup point restored, orders since replayed, integrity checked. Only with
the coordinator's step grant, and a restore only of its own release's backup point (`releasegate_runtime.admission`);
each step once (`ledger`): a redelivered command gets the recorded outcome, not a second restore. The database is
the one the catalog gives the service, never a name from the command."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import AlertRaised, RollbackFinished, RollbackRequested, Severity
from contracts.names import MAX_REASON
from releasegate_platform.artifacts import sha256_file
from releasegate_platform.catalog import Catalog, CatalogError
from releasegate_platform.haproxy import HAProxyError
from releasegate_platform.local_target import LocalTarget, pid_alive
from releasegate_runtime import worker
from releasegate_runtime.admission import Admission
from releasegate_runtime.settings import ServiceSettings
from services.dr_checker import postgres
from services.dr_checker.backup import BackupError, recorded_file, restore
from services.dr_checker.drill import integrity
from services.rollback.domain import RollbackError, backup_point_refusal
from services.rollback.ledger import MAX_ATTEMPTS, StepLedger
from services.rollback.replay import ReplayError, check_replayable, placed_orders, replay

REPLAY_MARGIN = timedelta(seconds=5)
OUTBOX_DRAIN_SECONDS = 60.0
WRITES_DRAIN_SECONDS = 30.0
RUNBOOK = "docs/runbooks/shop-restore.md"

CONSUMER = "rollback"
log = structlog.get_logger()


class Rollback:
    def __init__(
        self,
        pool: asyncpg.Pool,
        target: LocalTarget,
        settings: ServiceSettings,
        admission: Admission,
        ledger: StepLedger,
    ) -> None:
        self._pool, self._target, self._settings, self._admission = pool, target, settings, admission
        self._ledger = ledger
        self._catalog = Catalog(settings.catalog_dir)

    async def on_request(self, envelope: Envelope) -> None:
        req: RollbackRequested = envelope.data  # type: ignore[assignment]
        # before anything else: a refused command does nothing at all
        await self._admission.admit(envelope, check=self._own_backup_point)
        await worker.reply_once(self._pool, CONSUMER, envelope, lambda: self.restore(req))

    async def _own_backup_point(self, conn: asyncpg.Connection, req: RollbackRequested) -> str | None:
        """Admission check: a data restore names the backup point the dr-checker took for this release."""
        if req.compensation != "restore_data":
            return None
        try:
            database = self._database(req.service)
        except (CatalogError, postgres.NameRefused) as exc:
            return f"cannot tell which database to restore: {exc}"
        point = (
            None
            if req.backup_id is None
            else await conn.fetchrow("SELECT database, kind, release_id FROM backups WHERE id = $1", req.backup_id)
        )
        return backup_point_refusal(req, database, point)

    def _database(self, service: str) -> str:
        return postgres.database_of(self._catalog.get(service))

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
            if req.compensation == "restore_data":
                reason = await self._restore_data(req, evidence)
            else:
                reason = await self._restore_traffic(req)
            observed = await self._target.observe(req.service, req.environment)
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
        except (RollbackError, HAProxyError, BackupError, ReplayError, postgres.NameRefused, CatalogError) as exc:
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

    async def _restore_data(self, req: RollbackRequested, evidence: dict) -> str:
        """Coordinated restore. Everything that can be checked without touching production is checked first (the
        backup point, that the topic still holds every event since it, a serving stable instance); if one fails,
        production is left exactly as it is. Once writes are stopped, any failure leaves maintenance on: the
        database is then either restored without its later orders or still as the candidate left it under stable
        code, and neither should take orders before a person has looked."""
        entry = self._catalog.get(req.service)
        database = postgres.database_of(entry)
        async with self._pool.acquire() as conn:
            point = await conn.fetchrow(
                "SELECT id, path, sha256, started_at FROM backups WHERE id = $1"
                " AND database = $2 AND kind = 'backup-point' AND release_id = $3",
                req.backup_id,
                database,
                req.release_id,
            )
        file = None if point is None else recorded_file(self._settings, point["path"])
        if file is None or not file.is_file() or sha256_file(file) != point["sha256"]:
            raise RollbackError(f"backup point {req.backup_id} of {database} is missing or damaged")
        since = point["started_at"] - REPLAY_MARGIN
        evidence["events_since_backup_point"] = await check_replayable(self._settings, since)
        await self._serving_stable(req)
        evidence["maintenance"] = "on"
        await self._target.maintenance(req.service, req.environment, on=True)
        evidence["maintenance_on_at"] = datetime.now(UTC).isoformat()
        traffic = await self._restore_traffic(req)
        await _wait_for_no_writes(self._settings.database_url, database)
        evidence["events_not_published"] = await _wait_for_outbox_drained(self._settings.database_url, database, since)
        await restore(self._settings, database, file, clean=True)
        evidence["restored_backup"] = {"id": point["id"], "taken_at": point["started_at"].isoformat()}
        # The dump is a snapshot from its start; orders committed during the dump are replayed, idempotently.
        scan = await placed_orders(self._settings, req.environment, since)
        try:
            conn = await postgres.connect(self._settings.database_url, database)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise RollbackError(f"cannot connect to {database} to replay orders: {exc}") from None
        try:
            report = await replay(conn, scan)
            evidence.update(report.as_evidence())
            checks = await integrity(conn, entry.dr.integrity_checks)
        finally:
            await conn.close()
        evidence["integrity_checks"] = checks
        failed = [c["name"] for c in checks if not c["passed"]]
        if failed:
            raise RollbackError(f"after restore and replay the integrity checks fail: {', '.join(failed)}")
        await self._target.maintenance(req.service, req.environment, on=False)
        evidence["maintenance"] = "off"
        evidence["maintenance_off_at"] = datetime.now(UTC).isoformat()
        lost, invalid = report.not_replayable.total, report.invalid_events.total
        return (
            f"{database} restored to backup point {point['id']}; {len(report.replayed)} orders replayed from "
            f"{topics.SHOP_EVENTS}, {report.already_present} already in the backup, {lost} not replayable"
            + (f", {invalid} invalid events skipped" if invalid else "")
            + (" (listed in the incident report)" if lost or invalid else "")
            + f"; {len(checks)} integrity checks hold; {traffic}"
        )

    async def _serving_stable(self, req: RollbackRequested) -> str:
        stable = await self._target.stable(req.service, req.environment)
        if stable is None:
            raise RollbackError(f"{req.environment} has no recorded stable version of {req.service}")
        live = await self._target.live(req.service, req.environment)
        if not any(i.version == stable[0] and i.state == "serving" and pid_alive(i.pid) for i in live):
            raise RollbackError(
                f"no serving {stable[0]} instance in {req.environment}; the rollback service may "
                "not start one (only the deployer deploys)"
            )
        return stable[0]

    async def _restore_traffic(self, req: RollbackRequested) -> str:
        stable = await self._serving_stable(req)
        live = await self._target.live(req.service, req.environment)
        moved = await self._target.routed_tenants(req.environment)
        await self._target.clear_tenant_routes(req.service, req.environment)
        await self._target.split(req.service, req.environment, {stable: 100})
        stopped = [i for i in live if i.version != stable]
        for inst in stopped:
            await self._target.stop(inst)
        tenants = f"tenants {', '.join(moved)} routed back; " if moved else ""
        return (
            f"{tenants}100% of {req.environment} traffic on {stable}; stopped "
            f"{', '.join(f'{i.version}@{i.slot}' for i in stopped) or 'nothing (already clean)'}"
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


async def _wait_for_outbox_drained(database_url: str, database: str, since: datetime) -> list[dict]:
    """The shop stages its business events in its own database (an outbox) and relays them to shop.events; an
    event not relayed yet exists only in the database about to be replaced, and its order would be neither restored
    nor replayed. Wait until the relay has published every staged event (writes are already stopped); return the
    events the broker refused for good since `since` (listed in the incident report, never replayable)."""
    try:
        conn = await postgres.connect(database_url, database)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise RollbackError(f"cannot connect to {database} to wait for its outbox: {exc}") from None
    try:
        if not await conn.fetchval("SELECT to_regclass('event_outbox') IS NOT NULL"):
            return []  # a service without an outbox publishes directly
        deadline = asyncio.get_running_loop().time() + OUTBOX_DRAIN_SECONDS
        while pending := await conn.fetchval(
            "SELECT count(*) FROM event_outbox WHERE sent_at IS NULL AND refused IS NULL"
        ):
            if asyncio.get_running_loop().time() > deadline:
                raise RollbackError(
                    f"{pending} business events of {database} are not on shop.events after "
                    f"{OUTBOX_DRAIN_SECONDS:g}s; restoring now would lose their orders"
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


async def _wait_for_no_writes(database_url: str, database: str) -> None:
    """Requests already inside the shop when maintenance began may still commit; wait until no other session of
    the database is in a transaction."""
    try:
        conn = await postgres.connect(database_url, database)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise RollbackError(f"cannot connect to {database} to wait for writes to stop: {exc}") from None
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
