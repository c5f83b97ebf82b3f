"""Backup and restore-drill jobs (run by `make backup`, `releasegate dr backup|drill`, a scheduler): a pg_dump of a
service's database (as the catalog names it) recorded in the backup catalog; the newest backup restored into a
scratch database, timed, checked with the catalog's integrity checks, recorded, and the scratch database dropped."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from releasegate_platform.catalog import Catalog, CatalogError, ServiceEntry
from releasegate_platform.pgtools import postgres
from releasegate_platform.pgtools.catalog import Drill, PgBackupCatalog
from releasegate_platform.pgtools.dumps import BackupError, PgTools
from releasegate_platform.pgtools.integrity import integrity
from releasegate_runtime import db
from releasegate_runtime.settings import ServiceSettings


async def take_backup(settings: ServiceSettings, service: str) -> Path:
    """A scheduled backup of the database `service` owns."""
    try:
        database = postgres.database_of(Catalog(settings.catalog_dir).get(service))
    except (CatalogError, postgres.NameRefused) as exc:
        raise BackupError(f"cannot tell which database to back up: {exc}") from None
    dump = await PgTools(settings.database_url, settings.run_dir).dump(database)
    pool = await db.create_pool(settings.database_url, max_size=1)
    try:
        await PgBackupCatalog(pool).record_backup(database, dump)
    finally:
        await pool.close()
    return dump.path


async def run_drill(settings: ServiceSettings, entry: ServiceEntry) -> Drill:
    database = postgres.database_of(entry)
    tools = PgTools(settings.database_url, settings.run_dir)
    pool = await db.create_pool(settings.database_url, max_size=1)
    records = PgBackupCatalog(pool)
    started = datetime.now(UTC)
    # a name of our own, not derived from the catalog's: never longer than PostgreSQL's 63 bytes
    scratch = f"drill_{uuid.uuid4().hex[:16]}"
    try:
        backup = await records.newest_backup(database)
        seconds, checks, passed = 0.0, [], False
        try:
            if backup is None:
                raise BackupError(f"no backup of {database} to restore")
            path = tools.verified_file(backup.path, backup.sha256)
        except BackupError as exc:
            path, reason = None, str(exc)
        if backup is not None and path is not None:
            async with pool.acquire() as conn:
                await conn.execute(f'CREATE DATABASE "{scratch}"')
                try:
                    t0 = time.perf_counter()
                    await tools.restore(scratch, path, clean=False)
                    seconds = time.perf_counter() - t0
                    scratch_conn = await postgres.connect(settings.database_url, scratch)
                    try:
                        checks = await integrity(scratch_conn, entry.dr.integrity_checks)
                    finally:
                        await scratch_conn.close()
                    failed = [c["name"] for c in checks if not c["passed"]]
                    passed = not failed
                    reason = f"restored backup {backup.id} in {seconds:.2f}s; " + (
                        f"integrity checks failed: {', '.join(failed)}"
                        if failed
                        else f"{len(checks)} integrity checks hold"
                    )
                except BackupError as exc:
                    reason = str(exc)
                finally:
                    await _drop(conn, scratch)
        drill = Drill(started, seconds, passed, reason, checks)
        await records.record_drill(database, backup.id if backup else None, drill)
    finally:
        await pool.close()
    return drill


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
