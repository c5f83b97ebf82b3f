"""Restore drill: `python -m services.dr_checker.drill SERVICE` (or `releasegate dr drill SERVICE`) restores the
newest backup of the service's database into a scratch database, times it, runs the catalog's integrity checks
there, records the result and drops the scratch database."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from releasegate_platform.artifacts import sha256_file
from releasegate_platform.catalog import Catalog, ServiceEntry
from releasegate_runtime import db
from releasegate_runtime.settings import ServiceSettings
from services.dr_checker import postgres
from services.dr_checker.backup import BackupError, recorded_file, restore
from services.dr_checker.domain import Drill


async def integrity(conn: asyncpg.Connection, checks: dict[str, str]) -> list[dict]:
    """Run each integrity check (SQL returning its number of violations); a failing query counts as violated."""
    results = []
    for name, sql in checks.items():
        try:
            violations = int(await conn.fetchval(sql) or 0)
            results.append({"name": name, "violations": violations, "passed": violations == 0})
        except asyncpg.PostgresError as exc:
            results.append({"name": name, "violations": None, "passed": False, "error": str(exc)})
        except TimeoutError:
            results.append(
                {
                    "name": name,
                    "violations": None,
                    "passed": False,
                    "error": f"no answer within {postgres.STATEMENT_TIMEOUT:g}s",
                }
            )
    return results


async def run_drill(settings: ServiceSettings, entry: ServiceEntry) -> Drill:
    database = postgres.database_of(entry)
    pool = await db.create_pool(settings.database_url, max_size=1)
    started = datetime.now(UTC)
    # a name of our own, not derived from the catalog's: never longer than PostgreSQL's 63 bytes
    scratch = f"drill_{uuid.uuid4().hex[:16]}"
    try:
        async with pool.acquire() as conn:
            backup = await conn.fetchrow(
                "SELECT id, path, sha256 FROM backups WHERE database = $1 ORDER BY finished_at DESC LIMIT 1", database
            )
            path, reason = _restorable(settings, database, backup)
            seconds, checks, passed = 0.0, [], False
            if path is not None:
                await conn.execute(f'CREATE DATABASE "{scratch}"')
                try:
                    t0 = time.perf_counter()
                    await restore(settings, scratch, path, clean=False)
                    seconds = time.perf_counter() - t0
                    scratch_conn = await postgres.connect(settings.database_url, scratch)
                    try:
                        checks = await integrity(scratch_conn, entry.dr.integrity_checks)
                    finally:
                        await scratch_conn.close()
                    failed = [c["name"] for c in checks if not c["passed"]]
                    passed = not failed
                    reason = f"restored backup {backup['id']} in {seconds:.2f}s; " + (
                        f"integrity checks failed: {', '.join(failed)}"
                        if failed
                        else f"{len(checks)} integrity checks hold"
                    )
                except BackupError as exc:
                    reason = str(exc)
                finally:
                    await _drop(conn, scratch)
            await conn.execute(
                "INSERT INTO dr_drills (database, backup_id, started_at, seconds, passed, checks,"
                " reason) VALUES ($1,$2,$3,$4,$5,$6,$7)",
                database,
                backup["id"] if backup else None,
                started,
                seconds,
                passed,
                checks,
                reason,
            )
    finally:
        await pool.close()
    return Drill(started, seconds, passed, reason, checks)


def _restorable(settings: ServiceSettings, database: str, backup: asyncpg.Record | None) -> tuple[Path | None, str]:
    """The backup's file if it can be restored, else None and why not."""
    if backup is None:
        return None, f"no backup of {database} to restore"
    try:
        path = recorded_file(settings, backup["path"])
    except BackupError as exc:
        return None, str(exc)
    if not path.is_file() or sha256_file(path) != backup["sha256"]:
        return None, f"backup {backup['path']} is missing or does not match its recorded sha256"
    return path, ""


async def _drop(conn: asyncpg.Connection, database: str) -> None:
    """Drop the scratch database; an autovacuum worker may still be in it for a moment (and WITH (FORCE) may
    not terminate it without superuser rights), so try again briefly."""
    for attempt in range(50):
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
            return
        except asyncpg.ObjectInUseError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.2)


def main() -> None:
    settings = ServiceSettings()
    service = sys.argv[1] if len(sys.argv) > 1 else "shop"
    drill = asyncio.run(run_drill(settings, Catalog(settings.catalog_dir).get(service)))
    print(f"restore drill of {service}: {'passed' if drill.passed else 'FAILED'}: {drill.reason}")
    sys.exit(0 if drill.passed else 1)


if __name__ == "__main__":
    main()
