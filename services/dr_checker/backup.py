"""Backup job: `python -m services.dr_checker.backup DATABASE` takes a real pg_dump and records it in the
backup catalog (run by `make backup` or a scheduler)."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from services.common import db
from services.common.artifacts import sha256_file
from services.common.settings import ServiceSettings


def _pg_dump() -> str:
    found = shutil.which("pg_dump")
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"), reverse=True)
    return str(candidates[0]) if candidates else (found or "pg_dump")


async def take_backup(settings: ServiceSettings, database: str) -> Path:
    started = datetime.now(UTC)
    target_dir = settings.run_dir / "backups"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{database}-{started:%Y%m%dT%H%M%S%f}.dump"
    url = urlsplit(settings.database_url)
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    plain_dsn = urlunsplit(url._replace(path=f"/{database}", netloc=url.netloc.split("@")[-1]))
    cmd = [_pg_dump(), "--format=custom", f"--file={target}", f"--username={url.username}", plain_dsn]
    proc = await asyncio.to_thread(subprocess.run, cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pg_dump of {database} failed: {proc.stderr.strip()}")
    pool = await db.create_pool(settings.database_url)
    try:
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO backups (database, path, bytes, sha256, started_at, finished_at)"
                               " VALUES ($1,$2,$3,$4,$5,$6)", database, str(target), target.stat().st_size,
                               sha256_file(target), started, datetime.now(UTC))
    finally:
        await pool.close()
    return target


def main() -> None:
    database = sys.argv[1] if len(sys.argv) > 1 else "shop"
    path = asyncio.run(take_backup(ServiceSettings(), database))
    print(f"backup of {database}: {path}")


if __name__ == "__main__":
    main()
