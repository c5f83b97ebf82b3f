"""Migrations cannot hang a deploy step: the session carries statement and lock timeouts, each query a client-side
timeout, the run an overall deadline; each ends as a DeployError naming what did not finish, the connection is
released. A fake connection stands in for PostgreSQL (no stack needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from services.deployer.adapters import migrator
from services.deployer.adapters.migrator import Timeouts
from services.deployer.domain import DeployError

FAST = Timeouts(connect=1, statement=0.05, lock=0.05, queue=0.05, total=5)


class FakeConnection:
    """Answers like asyncpg: `timeout=` cancels a query that takes longer; `hang_on` queries never answer,
    `refuse_on` ones fail as the server's statement or lock timeout would."""

    def __init__(self, hang_on: str = "", refuse_on: str = "", refusal: Exception | None = None) -> None:
        self.hang_on, self.refuse_on, self.refusal = hang_on, refuse_on, refusal
        self.sent: list[str] = []
        self.closed = self.terminated = False
        self.server_settings: dict[str, str] = {}

    async def execute(self, sql: str, *args, timeout: float | None = None) -> str:
        self.sent.append(sql)
        if self.refuse_on and self.refuse_on in sql:
            raise self.refusal  # type: ignore[misc]
        if self.hang_on and self.hang_on in sql:
            await asyncio.wait_for(asyncio.Event().wait(), timeout)
        return "OK"

    async def fetchval(self, sql: str, *args, timeout: float | None = None):
        return None

    def transaction(self) -> FakeConnection:
        return self

    async def __aenter__(self) -> None:
        self.sent.append("BEGIN")

    async def __aexit__(self, exc_type, *exc) -> bool:
        self.sent.append("ROLLBACK" if exc_type else "COMMIT")
        return False

    async def close(self, timeout: float | None = None) -> None:
        self.closed = True

    def terminate(self) -> None:
        self.terminated = True

    def is_closed(self) -> bool:
        return self.closed or self.terminated


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_add.sql").write_text("ALTER TABLE orders ADD COLUMN note text;")
    (tmp_path / "migrations" / "0002_backfill.sql").write_text("UPDATE orders SET note = 'x';")
    return tmp_path


def connecting(monkeypatch, conn: FakeConnection) -> None:
    async def connect(dsn, *, timeout, server_settings):
        conn.server_settings = server_settings
        return conn

    monkeypatch.setattr(migrator.asyncpg, "connect", connect)


class TestMigrationTimeouts:
    async def test_the_session_carries_statement_and_lock_timeouts(self, monkeypatch, folder):
        conn = FakeConnection()
        connecting(monkeypatch, conn)
        applied, _ = await migrator.migrate("postgresql://x/shop", folder, "r1")
        assert applied == ["0001_add.sql", "0002_backfill.sql"] and conn.closed
        assert conn.server_settings == {"statement_timeout": "300000", "lock_timeout": "10000"}
        # each migration starts from the runner's limits, whatever the one before set for itself
        assert sum("SET statement_timeout = 300000" in s for s in conn.sent) == 2

    async def test_a_migration_that_does_not_answer_is_cancelled_and_rolled_back(self, monkeypatch, folder):
        conn = FakeConnection(hang_on="UPDATE orders")
        connecting(monkeypatch, conn)
        with pytest.raises(
            DeployError,
            match=r"migration 0002_backfill.sql did not finish within 0.05s and was "
            r"cancelled",
        ):
            await migrator.migrate("postgresql://x/shop", folder, "r1", FAST)
        backfill = next(i for i, s in enumerate(conn.sent) if s.startswith("UPDATE orders"))
        assert conn.sent.count("COMMIT") == 1 and conn.sent[backfill + 1] == "ROLLBACK" and conn.closed

    async def test_the_servers_statement_timeout_is_a_clear_error(self, monkeypatch, folder):
        conn = FakeConnection(
            refuse_on="ALTER TABLE", refusal=asyncpg.QueryCanceledError("canceling statement due to statement timeout")
        )
        connecting(monkeypatch, conn)
        with pytest.raises(
            DeployError,
            match="migration 0001_add.sql was cancelled by the database: canceling statement due to statement timeout",
        ):
            await migrator.migrate("postgresql://x/shop", folder, "r1", FAST)

    async def test_waiting_for_another_releases_migrations_is_bounded(self, monkeypatch, folder):
        conn = FakeConnection(
            refuse_on="pg_advisory_lock",
            refusal=asyncpg.LockNotAvailableError("canceling statement due to lock timeout"),
        )
        connecting(monkeypatch, conn)
        with pytest.raises(DeployError, match="waiting for another release's migrations was cancelled"):
            await migrator.migrate("postgresql://x/shop", folder, "r1", FAST)
        assert not any("ALTER TABLE" in s for s in conn.sent)

    async def test_the_whole_run_has_a_deadline_and_releases_the_connection(self, monkeypatch, folder):
        conn = FakeConnection(hang_on="UPDATE orders")
        connecting(monkeypatch, conn)
        with pytest.raises(DeployError, match="migrations did not finish within 0.1s"):
            await migrator.migrate(
                "postgresql://x/shop", folder, "r1", Timeouts(connect=1, statement=60, lock=1, queue=1, total=0.1)
            )
        assert conn.closed or conn.terminated

    async def test_an_unreachable_database_is_a_clear_error(self, monkeypatch, folder):
        async def connect(dsn, *, timeout, server_settings):
            raise OSError("connection refused")

        monkeypatch.setattr(migrator.asyncpg, "connect", connect)
        with pytest.raises(DeployError, match="cannot connect to the database to migrate: OSError"):
            await migrator.migrate("postgresql://x/shop", folder, "r1", FAST)
