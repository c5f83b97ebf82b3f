"""Runs a bundle's SQL migrations against an environment's database, each once, in file-name order, each in its
own transaction with its ledger row; the same runner for every environment (staging/production parity).

Nothing here waits for ever: the connection is opened with a deadline, the session carries a statement_timeout
and a lock_timeout (a migration may still `SET lock_timeout` lower or higher for itself), every call has a
client-side timeout that cancels the query on the server, and the whole run has an overall deadline. A timeout
is a DeployError naming the migration and the limit; its transaction is rolled back."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from releasegate_platform.bundle_reader import MIGRATIONS_DIR, is_migration
from services.deployer.domain import DeployError

LEDGER = """CREATE TABLE IF NOT EXISTS releasegate_migrations (
    name text PRIMARY KEY, checksum text NOT NULL, release_id text, applied_at timestamptz NOT NULL DEFAULT now())"""
# Serialises migration runs against one database (two releases can never interleave their migrations).
LOCK_KEY = 815_204_337


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    # Longest one query may run; a migration file is sent as one query, so this bounds each migration
    # (an index build on a large table needs minutes, not hours).
    statement: float = 300.0
    # Longest a statement waits for a table lock while other queries queue behind it.
    lock: float = 10.0
    # Longest to wait for another release's migration run to finish (the advisory lock).
    queue: float = 120.0
    # The whole run: connect, wait for the lock, every migration.
    total: float = 900.0


def _limits(timeouts: Timeouts) -> dict[str, str]:
    return {"statement_timeout": str(int(timeouts.statement * 1000)), "lock_timeout": str(int(timeouts.lock * 1000))}


async def _connect(dsn: str, timeouts: Timeouts) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=timeouts.connect, server_settings=_limits(timeouts))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DeployError(f"cannot connect to the database to migrate: {type(exc).__name__}: {exc}") from None


async def server_version(dsn: str, timeouts: Timeouts = Timeouts()) -> str:
    conn = await _connect(dsn, timeouts)
    try:
        return await conn.fetchval("SHOW server_version", timeout=timeouts.connect)
    except (TimeoutError, asyncpg.PostgresError) as exc:
        raise DeployError(f"cannot read the PostgreSQL version: {type(exc).__name__}: {exc}") from None
    finally:
        await _close(conn, timeouts)


async def migrate(
    dsn: str, folder: Path, release_id: str, timeouts: Timeouts = Timeouts()
) -> tuple[list[str], list[str]]:
    """Apply what is new; returns (applied now, already applied). A migration whose file changed after it was
    applied is refused: history is immutable."""
    try:
        async with asyncio.timeout(timeouts.total):
            return await _migrate(dsn, folder, release_id, timeouts)
    except TimeoutError:
        raise DeployError(
            f"migrations did not finish within {timeouts.total:g}s; a migration not yet "
            f"recorded as applied was rolled back"
        ) from None


def _files(folder: Path) -> list[Path]:
    """The bundle's migrations, chosen by the rule the gatekeeper lints by (bundle_reader.is_migration)."""
    directory = folder / MIGRATIONS_DIR
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if is_migration(f"{MIGRATIONS_DIR}/{p.name}") and p.is_file() and not p.is_symlink()
    )


async def _migrate(dsn: str, folder: Path, release_id: str, timeouts: Timeouts) -> tuple[list[str], list[str]]:
    files = _files(folder)
    conn = await _connect(dsn, timeouts)
    applied, skipped = [], []
    try:
        await _execute(conn, "creating the migration ledger", timeouts.statement, LEDGER)
        # lock_timeout bounds waiting for an advisory lock too: waiting for another run gets its own bound.
        await _execute(
            conn,
            "waiting for another release's migrations",
            timeouts.queue,
            f"SET lock_timeout = {int(timeouts.queue * 1000)}; SELECT pg_advisory_lock({LOCK_KEY});"
            f" SET lock_timeout = {int(timeouts.lock * 1000)}",
        )
        for path in files:
            (applied if await _apply(conn, path, release_id, timeouts) else skipped).append(path.name)
    except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise DeployError(f"migrating failed: {type(exc).__name__}: {exc}") from None
    finally:
        await _release(conn, timeouts)
    return applied, skipped


async def _apply(conn: asyncpg.Connection, path: Path, release_id: str, timeouts: Timeouts) -> bool:
    """Apply one migration with its ledger row in one transaction; False when it was applied before."""
    try:
        sql = (await asyncio.to_thread(path.read_bytes)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeployError(f"migration {path.name} is not UTF-8 ({exc.reason})") from None
    checksum = hashlib.sha256(sql.encode()).hexdigest()
    recorded = await conn.fetchval(
        "SELECT checksum FROM releasegate_migrations WHERE name = $1", path.name, timeout=timeouts.statement
    )
    if recorded is not None:
        if recorded != checksum:
            raise DeployError(f"migration {path.name} changed after it was applied; write a new one")
        return False
    # A migration may have changed the session's limits for itself: the next one starts from ours again.
    await conn.execute(
        "; ".join(f"SET {name} = {value}" for name, value in _limits(timeouts).items()), timeout=timeouts.connect
    )
    try:
        async with conn.transaction():
            await _execute(conn, f"migration {path.name}", timeouts.statement, sql)
            await conn.execute(
                "INSERT INTO releasegate_migrations (name, checksum, release_id) VALUES ($1, $2, $3)",
                path.name,
                checksum,
                release_id,
                timeout=timeouts.statement,
            )
    except asyncpg.PostgresError as exc:
        raise DeployError(f"migration {path.name} failed and was rolled back: {exc}") from None
    return True


async def _execute(conn: asyncpg.Connection, what: str, seconds: float, sql: str) -> None:
    """Run `sql`, cancelled on the server after `seconds`; a timeout (client or server side) names `what`."""
    try:
        await conn.execute(sql, timeout=seconds)
    except TimeoutError:
        raise DeployError(f"{what} did not finish within {seconds:g}s and was cancelled") from None
    except (asyncpg.QueryCanceledError, asyncpg.LockNotAvailableError) as exc:
        # statement_timeout and lock_timeout: the server cancelled it.
        raise DeployError(f"{what} was cancelled by the database: {exc}") from None


async def _close(conn: asyncpg.Connection, timeouts: Timeouts) -> None:
    try:
        await conn.close(timeout=timeouts.connect)
    except (OSError, TimeoutError, asyncpg.InterfaceError):
        conn.terminate()


async def _release(conn: asyncpg.Connection, timeouts: Timeouts) -> None:
    """Unlock and close; a connection that cannot (a cancelled query, a dead server) is terminated: ending the
    session rolls back its transaction and releases its advisory lock too."""
    try:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY, timeout=timeouts.connect)
        await conn.close(timeout=timeouts.connect)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()
