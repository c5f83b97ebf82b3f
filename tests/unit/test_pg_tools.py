"""PostgreSQL tools are run from validated names only (no connection string from a command, no password in argv,
dump files only in the backup folder), and every one of them has a deadline."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from releasegate_platform.pgtools import dumps, postgres, process
from releasegate_platform.pgtools.dumps import PgTools
from releasegate_runtime.settings import ServiceSettings

URL = "postgresql://rg_dr_checker:s3cret%2Fpw@db.internal:15432/releasegate?sslmode=require"
HOSTILE = [
    "shop?host=elsewhere",
    "host=elsewhere dbname=shop",
    "postgresql://evil/shop",
    "../shop",
    "shop/../../x",
    "shop\n",
    "Shop",
    "",
    "-h evil",
    "shop;drop",
    "s" * 64,
    ".shop",
]


@pytest.fixture
def settings(tmp_path: Path) -> ServiceSettings:
    return ServiceSettings(database_url=URL, run_dir=tmp_path / "run", catalog_dir=tmp_path / "catalog")


@pytest.fixture
def tools(settings: ServiceSettings) -> PgTools:
    return PgTools(settings.database_url, settings.run_dir)


class TestNames:
    @pytest.mark.parametrize("name", HOSTILE)
    def test_a_database_name_that_is_not_a_plain_name_is_refused(self, name):
        with pytest.raises(postgres.NameRefused):
            postgres.database_name(name)

    @pytest.mark.parametrize("name", HOSTILE)
    def test_no_connection_string_or_dsn_is_built_from_a_hostile_name(self, name):
        server = postgres.Server.of(URL)
        with pytest.raises(postgres.NameRefused):
            server.tool_env(name)
        with pytest.raises(postgres.NameRefused):
            postgres.dsn_for(URL, name)

    @pytest.mark.parametrize("name", HOSTILE)
    async def test_pg_dump_is_never_started_for_a_hostile_name(self, settings, tools, name, monkeypatch):
        async def started(*args, **kwargs):
            raise AssertionError("pg_dump was started")

        monkeypatch.setattr(process, "run", started)
        with pytest.raises(dumps.BackupError):
            await tools.dump(name)
        assert not (settings.run_dir / "backups").exists()


class TestToolInvocation:
    async def test_server_user_and_password_go_to_the_environment_never_to_argv(self, settings, tools, monkeypatch):
        seen = {}

        async def run(argv, *, env, timeout, what, stdin=None):
            seen.update(argv=argv, env=env, timeout=timeout)
            _write_dump(argv)
            return b""

        monkeypatch.setattr(process, "run", run)
        monkeypatch.setenv("PGSERVICE", "elsewhere")
        monkeypatch.setenv("PGHOSTADDR", "203.0.113.9")
        path = (await tools.dump("shop")).path
        assert "s3cret/pw" not in " ".join(seen["argv"]) and "db.internal" not in " ".join(seen["argv"])
        env = seen["env"]
        assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGDATABASE"]) == (
            "db.internal",
            "15432",
            "rg_dr_checker",
            "shop",
        )
        assert env["PGPASSWORD"] == "s3cret/pw" and env["PGSSLMODE"] == "require"
        assert "PGSERVICE" not in env and "PGHOSTADDR" not in env
        assert seen["timeout"] == dumps.DUMP_SECONDS
        assert path.parent == (settings.run_dir / "backups").resolve() and path.name.startswith("shop-")

    def test_a_replica_is_the_same_user_on_another_host(self):
        server = postgres.Server.of(URL, host="127.0.0.1", port=15433)
        assert (server.host, server.port, server.user) == ("127.0.0.1", 15433, "rg_dr_checker")


class TestBackupFolder:
    def test_a_recorded_path_outside_the_backup_folder_is_refused(self, settings, tools):
        for path in ("/etc/passwd", str(settings.run_dir / "backups" / ".." / "secrets" / "x.dump")):
            with pytest.raises(dumps.BackupError, match="not inside the backup folder"):
                tools.recorded_file(path)

    def test_a_symlink_in_the_backup_folder_pointing_outside_is_refused(self, settings, tools, tmp_path):
        folder = settings.run_dir / "backups"
        folder.mkdir(parents=True)
        (tmp_path / "outside.dump").write_bytes(b"x")
        (folder / "shop-1.dump").symlink_to(tmp_path / "outside.dump")
        with pytest.raises(dumps.BackupError):
            tools.recorded_file(str(folder / "shop-1.dump"))

    def test_a_file_in_the_backup_folder_is_accepted(self, settings, tools):
        folder = settings.run_dir / "backups"
        folder.mkdir(parents=True)
        (folder / "shop-1.dump").write_bytes(b"x")
        assert tools.recorded_file(str(folder / "shop-1.dump")) == (folder / "shop-1.dump").resolve()

    async def test_restore_refuses_a_file_outside_the_folder_before_running_anything(self, tools, monkeypatch):
        async def started(*args, **kwargs):
            raise AssertionError("a restore tool was started")

        monkeypatch.setattr(process, "run", started)
        with pytest.raises(dumps.BackupError, match="not inside the backup folder"):
            await tools.restore("shop", Path("/etc/passwd"), clean=True)

    def test_a_file_whose_digest_differs_from_the_recorded_one_is_refused(self, settings, tools):
        folder = settings.run_dir / "backups"
        folder.mkdir(parents=True)
        (folder / "shop-1.dump").write_bytes(b"tampered")
        recorded = "sha256:" + hashlib.sha256(b"original").hexdigest()
        with pytest.raises(dumps.BackupError, match="does not match its recorded sha256"):
            tools.verified_file(folder / "shop-1.dump", recorded)
        assert not tools.intact(folder / "shop-1.dump", recorded)
        assert tools.intact(folder / "shop-1.dump", "sha256:" + hashlib.sha256(b"tampered").hexdigest())

    def test_a_missing_file_is_refused_with_its_name(self, settings, tools):
        with pytest.raises(dumps.BackupError, match="shop-2.dump is missing"):
            tools.verified_file(settings.run_dir / "backups" / "shop-2.dump", "sha256:" + "0" * 64)

    def test_a_dump_is_named_after_its_database_and_start_time(self):
        started = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
        assert dumps.dump_name("shop", started) == "shop-20261127T100000123456.dump"
        with pytest.raises(postgres.NameRefused):
            dumps.dump_name("../shop", started)


class TestDeadlines:
    async def test_a_command_that_hangs_is_killed_with_its_process_group_and_says_so(self, tmp_path):
        pidfile = tmp_path / "child.pid"
        with pytest.raises(process.CommandTimedOut, match="killed after 1s"):
            await process.run(
                ["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], env=os.environ, timeout=1, what="a hanging tool"
            )
        child = int(pidfile.read_text())
        assert _gone_or_zombie(child), "the tool's own child survived its deadline"

    async def test_a_failing_command_reports_the_end_of_its_stderr(self):
        with pytest.raises(process.CommandFailed, match="pg_dump of shop failed: .*no such database"):
            await process.run(
                ["sh", "-c", "echo 'no such database' >&2; exit 1"], env=os.environ, timeout=10, what="pg_dump of shop"
            )

    async def test_a_missing_tool_is_a_clear_error(self):
        with pytest.raises(process.CommandFailed, match="cannot start"):
            await process.run(["/nonexistent/pg_dump"], env=os.environ, timeout=10, what="pg_dump of shop")

    async def test_input_reaches_the_tool_and_its_output_comes_back(self):
        assert await process.run(["cat"], env=os.environ, timeout=10, what="cat", stdin=b"SELECT 1;") == b"SELECT 1;"

    async def test_a_restore_killed_at_its_deadline_is_an_interrupted_restore(self, settings, tools, monkeypatch):
        folder = settings.run_dir / "backups"
        folder.mkdir(parents=True)
        (folder / "shop-1.dump").write_bytes(b"x")

        async def run_tool(server, database, name, args, *, timeout, what, stdin=None):
            return await process.run(["sleep", "30"], env=os.environ, timeout=0.5, what=what)

        monkeypatch.setattr(postgres, "run_tool", run_tool)
        with pytest.raises(dumps.RestoreInterrupted, match="killed after"):
            await tools.restore("shop", folder / "shop-1.dump", clean=True)


def _write_dump(argv: list[str]) -> None:
    """What pg_dump would leave: the file named by --file."""
    Path(next(a for a in argv if a.startswith("--file=")).removeprefix("--file=")).write_bytes(b"dump")


def _gone_or_zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")
