"""Backup job: `python -m services.dr_checker.backup SERVICE` takes a real pg_dump of the service's database (as
the catalog names it) and records it in the backup catalog (run by `make backup` or a scheduler); the dr-checker
takes pre-release backup points the same way."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from releasegate_platform.artifacts import sha256_file
from releasegate_platform.catalog import Catalog, CatalogError
from releasegate_runtime import db
from releasegate_runtime.settings import ServiceSettings
from services.dr_checker import postgres
from services.dr_checker.process import CommandFailed, CommandTimedOut

# Below the coordinator's 120 s DR step timeout: a result after it would be ignored.
DUMP_SECONDS = 100.0
# pg_restore rendering the script, then psql running it in one transaction; within the slow compensation budget.
RESTORE_SECONDS = 180.0


class BackupError(Exception):
    """pg_dump or pg_restore failed, or was refused a name or path."""


class RestoreInterrupted(BackupError):
    """The restore was killed at its deadline: the server may still be finishing (then rolling back) its
    transaction, so the database's state is not known until it has."""


async def dump(settings: ServiceSettings, database: str, *, timeout: float = DUMP_SECONDS) -> tuple[Path, datetime]:
    started = datetime.now(UTC)
    try:
        folder = postgres.backup_folder(settings.run_dir)
        target = postgres.inside(folder, folder / f"{postgres.database_name(database)}-{started:%Y%m%dT%H%M%S%f}.dump")
    except postgres.NameRefused as exc:
        raise BackupError(str(exc)) from None
    folder.mkdir(parents=True, exist_ok=True)
    try:
        await postgres.run_tool(
            postgres.Server.of(settings.database_url),
            database,
            "pg_dump",
            ["--format=custom", f"--file={target}"],
            timeout=timeout,
            what=f"pg_dump of {database}",
        )
    except CommandFailed as exc:
        target.unlink(missing_ok=True)
        raise BackupError(str(exc)) from None
    return target, started


async def record(
    conn: asyncpg.Connection,
    database: str,
    path: Path,
    started: datetime,
    *,
    kind: str = "scheduled",
    release_id: str | None = None,
) -> int:
    return await conn.fetchval(
        "INSERT INTO backups (database, path, bytes, sha256, started_at, finished_at, kind, release_id)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8) RETURNING id",
        database,
        str(path),
        path.stat().st_size,
        sha256_file(path),
        started,
        datetime.now(UTC),
        kind,
        release_id,
    )


def recorded_file(settings: ServiceSettings, path: str) -> Path:
    """A path from the backup catalog, refused unless it lies in the backup folder (a row could name any file)."""
    try:
        return postgres.inside(postgres.backup_folder(settings.run_dir), path)
    except postgres.NameRefused as exc:
        raise BackupError(str(exc)) from None


async def restore(
    settings: ServiceSettings, database: str, path: Path, *, clean: bool, timeout: float = RESTORE_SECONDS
) -> None:
    """pg_restore `path` into `database`, all or nothing. `clean` (a live database): everything in its public
    schema is replaced by the backup's content in one transaction, including objects created after the backup was
    taken. RestoreInterrupted if it did not finish within `timeout` seconds."""
    path = recorded_file(settings, path)
    server = postgres.Server.of(settings.database_url)
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        if not clean:
            await postgres.run_tool(
                server,
                database,
                "pg_restore",
                [
                    "--no-owner",
                    "--no-privileges",
                    "--single-transaction",
                    f"--dbname={postgres.database_name(database)}",
                    str(path),
                ],
                timeout=timeout,
                what=f"restore of {path.name} into {database}",
            )
            return
        script = await postgres.run_tool(
            server,
            database,
            "pg_restore",
            ["--no-owner", "--no-privileges", "--file=-", str(path)],
            timeout=timeout,
            what=f"pg_restore reading {path.name}",
        )
        sql = b"DROP SCHEMA public CASCADE;\nCREATE SCHEMA public;\n" + script
        await postgres.run_tool(
            server,
            database,
            "psql",
            ["--single-transaction", "--quiet", "--no-psqlrc", "--set=ON_ERROR_STOP=1"],
            timeout=max(1.0, deadline - asyncio.get_running_loop().time()),
            what=f"restore of {path.name} into {database}",
            stdin=sql,
        )
    except CommandTimedOut as exc:
        raise RestoreInterrupted(str(exc)) from None
    except (CommandFailed, postgres.NameRefused) as exc:
        raise BackupError(str(exc)) from None


async def take_backup(settings: ServiceSettings, service: str) -> Path:
    """A scheduled backup of the database `service` owns."""
    try:
        database = postgres.database_of(Catalog(settings.catalog_dir).get(service))
    except (CatalogError, postgres.NameRefused) as exc:
        raise BackupError(f"cannot tell which database to back up: {exc}") from None
    path, started = await dump(settings, database)
    pool = await db.create_pool(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            await record(conn, database, path, started)
    finally:
        await pool.close()
    return path


def main() -> None:
    service = sys.argv[1] if len(sys.argv) > 1 else "shop"
    path = asyncio.run(take_backup(ServiceSettings(), service))
    print(f"backup of {service}: {path}")


if __name__ == "__main__":
    main()
