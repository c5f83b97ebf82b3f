"""Runs a bundle's SQL migrations against an environment's database, each once, in file-name order, each in its
own transaction with its ledger row; the same runner for every environment (staging/production parity)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import asyncpg

from services.deployer.domain import DeployError

LEDGER = """CREATE TABLE IF NOT EXISTS releasegate_migrations (
    name text PRIMARY KEY, checksum text NOT NULL, release_id text, applied_at timestamptz NOT NULL DEFAULT now())"""
# Serialises migration runs against one database (two releases can never interleave their migrations).
LOCK_KEY = 815_204_337


async def server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()


async def migrate(dsn: str, folder: Path, release_id: str) -> tuple[list[str], list[str]]:
    """Apply what is new; returns (applied now, already applied). A migration whose file changed after it was
    applied is refused: history is immutable."""
    files = sorted((folder / "migrations").glob("*.sql")) if (folder / "migrations").is_dir() else []
    conn = await asyncpg.connect(dsn)
    applied, skipped = [], []
    try:
        await conn.execute(LEDGER)
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        try:
            for path in files:
                sql = path.read_text()
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                recorded = await conn.fetchval("SELECT checksum FROM releasegate_migrations WHERE name = $1", path.name)
                if recorded is not None:
                    if recorded != checksum:
                        raise DeployError(f"migration {path.name} changed after it was applied; write a new one")
                    skipped.append(path.name)
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute("INSERT INTO releasegate_migrations (name, checksum, release_id)"
                                           " VALUES ($1, $2, $3)", path.name, checksum, release_id)
                except asyncpg.PostgresError as exc:
                    raise DeployError(f"migration {path.name} failed and was rolled back: {exc}") from None
                applied.append(path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await conn.close()
    return applied, skipped
