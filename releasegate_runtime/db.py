"""PostgreSQL access: one asyncpg pool per process, the schema applied once, JSON as jsonb."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

SCHEMA = Path(__file__).with_name("schema.sql")
GRANTS = Path(__file__).resolve().parents[1] / "deploy" / "postgres" / "grants.sql"
SCHEMA_LOCK = 0x72656C67  # "relg": serialises concurrent schema application
# What a query raises while PostgreSQL is down, restarting or has just dropped the session: worth another try.
# asyncpg may raise InternalClientError ("cannot switch to state ...") on a connection whose session the server
# ended mid-operation (MagicStack/asyncpg#1069); the pool replaces that connection on release.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 5) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init_connection)


async def apply_schema(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        await conn.execute(SCHEMA.read_text())
        await conn.execute(GRANTS.read_text())


async def first_time(conn: asyncpg.Connection, consumer: str, event_id: str) -> bool:
    """Record that `consumer` handled `event_id`; False if it already had (same transaction as the effect)."""
    row = await conn.fetchrow(
        "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
        consumer,
        event_id,
    )
    return row is not None
