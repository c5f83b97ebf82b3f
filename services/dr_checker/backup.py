"""Backup job: `python -m services.dr_checker.backup DATABASE` takes a real pg_dump and records it in the
backup catalog (run by `make backup` or a scheduler); the dr-checker takes pre-release backup points the same way."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from services.common import db
from services.common.artifacts import sha256_file
from services.common.settings import ServiceSettings
from services.dr_checker import postgres


class BackupError(Exception):
    """pg_dump or pg_restore failed."""


async def dump(settings: ServiceSettings, database: str) -> tuple[Path, datetime]:
    started = datetime.now(UTC)
    target_dir = settings.run_dir / "backups"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{database}-{started:%Y%m%dT%H%M%S%f}.dump"
    args, env = postgres.cli_args(settings.database_url, database)
    proc = await asyncio.to_thread(subprocess.run, [postgres.tool("pg_dump"), "--format=custom", f"--file={target}",
                                                    *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackupError(f"pg_dump of {database} failed: {proc.stderr.strip()}")
    return target, started


async def record(conn: asyncpg.Connection, database: str, path: Path, started: datetime, *,
                 kind: str = "scheduled", release_id: str | None = None) -> int:
    return await conn.fetchval(
        "INSERT INTO backups (database, path, bytes, sha256, started_at, finished_at, kind, release_id)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8) RETURNING id", database, str(path), path.stat().st_size,
        sha256_file(path), started, datetime.now(UTC), kind, release_id)


async def restore(settings: ServiceSettings, database: str, path: Path, *, clean: bool) -> None:
    """pg_restore `path` into `database`. `clean` (a live database): everything in its public schema is replaced
    by the backup's content in one transaction, including objects created after the backup was taken."""
    args, env = postgres.cli_args(settings.database_url, database)
    if not clean:
        proc = await asyncio.to_thread(subprocess.run, [postgres.tool("pg_restore"), "--no-owner",
                                                        "--no-privileges", "--single-transaction", *args,
                                                        str(path)],
                                       env=env, capture_output=True, text=True)
    else:
        script = await asyncio.to_thread(subprocess.run, [postgres.tool("pg_restore"), "--no-owner",
                                                          "--no-privileges", "--file=-", str(path)],
                                         capture_output=True, text=True)
        if script.returncode != 0:
            raise BackupError(f"pg_restore cannot read {path.name}: {script.stderr.strip()[-500:]}")
        sql = "DROP SCHEMA public CASCADE;\nCREATE SCHEMA public;\n" + script.stdout
        proc = await asyncio.to_thread(subprocess.run, [postgres.tool("psql"), "--single-transaction", "--quiet",
                                                        "--set=ON_ERROR_STOP=1", *args], input=sql, env=env,
                                       capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackupError(f"restore of {path.name} into {database} failed: {proc.stderr.strip()[-500:]}")


async def take_backup(settings: ServiceSettings, database: str) -> Path:
    path, started = await dump(settings, database)
    pool = await db.create_pool(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            await record(conn, database, path, started)
    finally:
        await pool.close()
    return path


def main() -> None:
    database = sys.argv[1] if len(sys.argv) > 1 else "shop"
    path = asyncio.run(take_backup(ServiceSettings(), database))
    print(f"backup of {database}: {path}")


if __name__ == "__main__":
    main()
