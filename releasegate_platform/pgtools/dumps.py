"""Dumps of a service's database: taken with pg_dump into the backup folder, restored with pg_restore (all or
nothing), and a recorded file accepted only if it lies in the backup folder and has the digest it was recorded
with."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from releasegate_platform.artifacts import sha256_file
from releasegate_platform.pgtools import postgres
from releasegate_platform.pgtools.process import CommandFailed, CommandTimedOut

# Below the coordinator's 120 s DR step timeout: a result after it would be ignored.
DUMP_SECONDS = 100.0
# pg_restore rendering the script, then psql running it in one transaction; within the slow compensation budget.
RESTORE_SECONDS = 180.0


class BackupError(Exception):
    """pg_dump or pg_restore failed, or was refused a name or path."""


class RestoreInterrupted(BackupError):
    """The restore was killed at its deadline: the server may still be finishing (then rolling back) its
    transaction, so the database's state is not known until it has."""


@dataclass(frozen=True)
class Dump:
    """A dump file just taken: where, when it started, its size and digest."""

    path: Path
    started_at: datetime
    bytes: int
    sha256: str


def dump_name(database: str, started: datetime) -> str:
    """The file name a dump of `database` started at `started` gets (a restore checks a named file against it)."""
    return f"{postgres.database_name(database)}-{started.astimezone(UTC):%Y%m%dT%H%M%S%f}.dump"


class PgTools:
    """The PostgreSQL tools of one process: its server (RG_DATABASE_URL) and its backup folder (under run_dir)."""

    def __init__(self, database_url: str, run_dir: Path) -> None:
        self._url, self.folder = database_url, postgres.backup_folder(run_dir)

    async def dump(self, database: str, *, timeout: float = DUMP_SECONDS) -> Dump:
        started = datetime.now(UTC)
        try:
            target = postgres.inside(self.folder, self.folder / dump_name(database, started))
        except postgres.NameRefused as exc:
            raise BackupError(str(exc)) from None
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            await postgres.run_tool(
                postgres.Server.of(self._url),
                database,
                "pg_dump",
                ["--format=custom", f"--file={target}"],
                timeout=timeout,
                what=f"pg_dump of {database}",
            )
        except CommandFailed as exc:
            target.unlink(missing_ok=True)
            raise BackupError(str(exc)) from None
        return Dump(target, started, target.stat().st_size, sha256_file(target))

    def recorded_file(self, path: str | Path) -> Path:
        """A path from a backup record, refused unless it lies in the backup folder (a record could name any
        file)."""
        try:
            return postgres.inside(self.folder, path)
        except postgres.NameRefused as exc:
            raise BackupError(str(exc)) from None

    def verified_file(self, path: str | Path, sha256: str) -> Path:
        """The recorded file, if it is in the backup folder, present, and has the recorded digest; BackupError
        saying which otherwise. Nothing is restored from a file that has not passed this."""
        file = self.recorded_file(path)
        if not file.is_file():
            raise BackupError(f"backup file {file.name} is missing from the backup folder")
        if sha256_file(file) != sha256:
            raise BackupError(f"backup file {file.name} does not match its recorded sha256")
        return file

    def intact(self, path: str | Path, sha256: str) -> bool:
        try:
            self.verified_file(path, sha256)
        except BackupError:
            return False
        return True

    async def restore(self, database: str, path: Path, *, clean: bool, timeout: float = RESTORE_SECONDS) -> None:
        """pg_restore `path` into `database`, all or nothing. `clean` (a live database): everything in its public
        schema is replaced by the backup's content in one transaction, including objects created after the backup
        was taken. RestoreInterrupted if it did not finish within `timeout` seconds."""
        path = self.recorded_file(path)
        server = postgres.Server.of(self._url)
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
