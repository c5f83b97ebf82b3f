"""Rollback handler: restore_traffic puts 100% on the recorded stable version, stops the candidate's instances
and reads the result back from HAProxy (idempotent: a repeat finds nothing left to stop). restore_data also puts
the database back: writes stopped, backup point restored, orders since replayed, integrity checked. Only with
the coordinator's step grant, and a restore only of its own release's backup point (`services.common.admission`)."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import structlog

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import RollbackFinished, RollbackRequested
from services.common import worker
from services.common.admission import Admission
from services.common.haproxy import HAProxyError
from services.common.local_target import LocalTarget, pid_alive
from services.common.artifacts import sha256_file
from services.common.catalog import Catalog, CatalogError
from services.common.settings import ServiceSettings
from services.dr_checker import postgres
from services.dr_checker.backup import BackupError, restore
from services.dr_checker.drill import integrity
from services.rollback.domain import RollbackError, backup_point_refusal
from services.rollback.replay import ReplayError
from services.rollback.replay import run as replay_orders

REPLAY_MARGIN = timedelta(seconds=5)
WRITES_DRAIN_SECONDS = 30.0

CONSUMER = "rollback"
log = structlog.get_logger()


class Rollback:
    def __init__(self, pool: asyncpg.Pool, target: LocalTarget, settings: ServiceSettings,
                 admission: Admission) -> None:
        self._pool, self._target, self._settings, self._admission = pool, target, settings, admission

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
        except CatalogError as exc:
            return f"cannot tell which database to restore: {exc}"
        point = None if req.backup_id is None else await conn.fetchrow(
            "SELECT database, kind, release_id FROM backups WHERE id = $1", req.backup_id)
        return backup_point_refusal(req, database, point)

    def _database(self, service: str) -> str:
        return Catalog(self._settings.catalog_dir).get(service).dr.database or service

    async def restore(self, req: RollbackRequested) -> RollbackFinished:
        evidence: dict = {}
        try:
            if req.compensation == "restore_data":
                reason = await self._restore_data(req, evidence)
            else:
                reason = await self._restore_traffic(req)
            observed = await self._target.observe(req.service, req.environment)
            if set(observed.weights) - {observed.stable_version}:
                raise RollbackError(f"traffic still reaches {observed.weights} after the rollback")
            return RollbackFinished(release_id=req.release_id, step_id=req.step_id, environment=req.environment,
                                    succeeded=True, reason=reason, observed=observed, evidence=evidence)
        except (RollbackError, HAProxyError, BackupError, ReplayError) as exc:
            log.error("compensation failed", step=req.step_id, error=str(exc))
            return RollbackFinished(release_id=req.release_id, step_id=req.step_id, environment=req.environment,
                                    succeeded=False, reason=str(exc), evidence=evidence)

    async def _restore_data(self, req: RollbackRequested, evidence: dict) -> str:
        """Coordinated restore. Maintenance stays on if anything fails: better closed than inconsistent."""
        entry = Catalog(self._settings.catalog_dir).get(req.service)
        database = entry.dr.database or req.service
        async with self._pool.acquire() as conn:
            point = await conn.fetchrow("SELECT id, path, sha256, started_at FROM backups WHERE id = $1"
                                        " AND database = $2 AND kind = 'backup-point' AND release_id = $3",
                                        req.backup_id, database, req.release_id)
        if point is None or sha256_file(Path(point["path"])) != point["sha256"]:
            raise RollbackError(f"backup point {req.backup_id} of {database} is missing or damaged; traffic and "
                                "data left as they are for a human (see docs/runbooks)")
        await self._target.maintenance(req.service, req.environment, on=True)
        evidence["maintenance_on_at"] = datetime.now(UTC).isoformat()
        traffic = await self._restore_traffic(req)
        dsn = postgres.dsn_for(self._settings.database_url, database)
        await _wait_for_no_writes(dsn)
        await restore(self._settings, database, Path(point["path"]), clean=True)
        evidence["restored_backup"] = {"id": point["id"], "taken_at": point["started_at"].isoformat()}
        # The dump is a snapshot from its start; orders committed during the dump are replayed, idempotently.
        report = await replay_orders(self._settings, database, req.environment, point["started_at"] - REPLAY_MARGIN)
        evidence.update(report.as_evidence())
        conn = await asyncpg.connect(dsn)
        try:
            checks = await integrity(conn, entry.dr.integrity_checks)
        finally:
            await conn.close()
        evidence["integrity_checks"] = checks
        failed = [c["name"] for c in checks if not c["passed"]]
        if failed:
            raise RollbackError(f"after restore and replay the integrity checks fail: {', '.join(failed)}; "
                                "maintenance mode stays on")
        await self._target.maintenance(req.service, req.environment, on=False)
        evidence["maintenance_off_at"] = datetime.now(UTC).isoformat()
        lost = len(report.not_replayable)
        return (f"{database} restored to backup point {point['id']}; {len(report.replayed)} orders replayed from "
                f"{topics.SHOP_EVENTS}, {report.already_present} already in the backup, {lost} not replayable"
                f"{' (listed in the incident report)' if lost else ''}; {len(checks)} integrity checks hold; "
                f"{traffic}")

    async def _restore_traffic(self, req: RollbackRequested) -> str:
        stable = await self._target.stable(req.service, req.environment)
        if stable is None:
            raise RollbackError(f"{req.environment} has no recorded stable version of {req.service}")
        live = await self._target.live(req.service, req.environment)
        healthy_stable = [i for i in live if i.version == stable[0] and i.state == "serving" and pid_alive(i.pid)]
        if not healthy_stable:
            raise RollbackError(f"no serving {stable[0]} instance in {req.environment}; the rollback service may "
                                "not start one (only the deployer deploys)")
        moved = await self._target.routed_tenants(req.environment)
        await self._target.clear_tenant_routes(req.service, req.environment)
        await self._target.split(req.service, req.environment, {stable[0]: 100})
        stopped = [i for i in live if i.version != stable[0]]
        for inst in stopped:
            await self._target.stop(inst)
        tenants = f"tenants {', '.join(moved)} routed back; " if moved else ""
        return (f"{tenants}100% of {req.environment} traffic on {stable[0]}; stopped "
                f"{', '.join(f'{i.version}@{i.slot}' for i in stopped) or 'nothing (already clean)'}")


async def _wait_for_no_writes(dsn: str) -> None:
    """Requests already inside the shop when maintenance began may still commit; wait until no other session of
    the database is in a transaction."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = asyncio.get_running_loop().time() + WRITES_DRAIN_SECONDS
        while await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND state IN ('active', 'idle in transaction') AND backend_type = 'client backend'"):
            if asyncio.get_running_loop().time() > deadline:
                raise RollbackError("writes did not stop within 30s of maintenance mode")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
