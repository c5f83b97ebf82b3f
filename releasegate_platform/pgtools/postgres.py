"""PostgreSQL client tools and connections for backups, restores and drills, built from validated names.

A database name from a command never becomes part of a connection string: `shop?host=elsewhere` would send the
password to another server. Tools get host, port, user and database as separate PG* environment variables (libpq
never parses those as connection strings), the password through PGPASSWORD (never argv), and nothing of the
caller's own PG* environment (PGSERVICE could point them elsewhere). Dump files live in one folder and only there.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import asyncpg

from contracts.names import check_name
from releasegate_platform.catalog import ServiceEntry
from releasegate_platform.pgtools import process

CONNECT_TIMEOUT = 10.0
STATEMENT_TIMEOUT = 60.0
# connection settings of RG_DATABASE_URL that the client tools take from the environment
_URL_PARAMETERS = {"sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY"}


class NameRefused(ValueError):
    """A database name or a backup path that is not a plain name, or not inside the backup folder."""


def database_name(value: object) -> str:
    """`value` if it is a plain database name (contracts.names.NAME); NameRefused otherwise."""
    try:
        return check_name("database", value)
    except ValueError as exc:
        raise NameRefused(str(exc)) from None


def database_of(entry: ServiceEntry) -> str:
    """The database a service owns, as its catalog entry says (`dr.database`, else the service's name)."""
    return database_name(entry.dr.database or entry.name)


def tool(name: str) -> str:
    """The newest installed PostgreSQL client binary `name` (pg_dump, pg_restore...)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    return str(candidates[0]) if candidates else (shutil.which(name) or name)


@dataclass(frozen=True)
class Server:
    """Where and as whom to connect: from the service's own configuration, never from a command."""

    host: str
    port: int
    user: str
    password: str
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, database_url: str, *, host: str | None = None, port: int | None = None) -> Server:
        """The server of RG_DATABASE_URL (another host and port for a replica; same user and password)."""
        url = urlsplit(database_url)
        query = parse_qs(url.query)
        options = tuple((env, query[key][-1]) for key, env in _URL_PARAMETERS.items() if key in query)
        return cls(
            host=host or url.hostname or "localhost",
            port=port or url.port or 5432,
            user=unquote(url.username or ""),
            password=unquote(url.password or ""),
            options=options,
        )

    def tool_env(self, database: str) -> dict[str, str]:
        """Environment of a client tool connecting to `database`: the caller's, minus any PG* variable."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return (
            env
            | dict(self.options)
            | {
                "PGHOST": self.host,
                "PGPORT": str(self.port),
                "PGUSER": self.user,
                "PGPASSWORD": self.password,
                "PGDATABASE": database_name(database),
                "PGCONNECT_TIMEOUT": str(int(CONNECT_TIMEOUT)),
            }
        )


async def run_tool(
    server: Server, database: str, name: str, args: list[str], *, timeout: float, what: str, stdin: bytes | None = None
) -> bytes:
    """Run client tool `name` against `database` on `server`, killed after `timeout` seconds."""
    return await process.run(
        [tool(name), *args], env=server.tool_env(database), timeout=timeout, what=what, stdin=stdin
    )


async def connect(
    database_url: str,
    database: str,
    *,
    host: str | None = None,
    port: int | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> asyncpg.Connection:
    """A connection to `database` with the credentials of RG_DATABASE_URL; the name is an argument, not part of
    the URL, and every statement on it has a deadline."""
    return await asyncpg.connect(
        database_url,
        database=database_name(database),
        host=host,
        port=port,
        timeout=timeout,
        command_timeout=STATEMENT_TIMEOUT,
    )


def dsn_for(database_url: str, database: str, *, host: str | None = None, port: int | None = None) -> str:
    """The same user, another database (and, for a replica, another server), for tools that want one DSN."""
    url = urlsplit(database_url)
    if host is not None or port is not None:
        credentials = url.netloc.rsplit("@", 1)[0] + "@" if "@" in url.netloc else ""
        url = url._replace(netloc=f"{credentials}{host or url.hostname}:{port or url.port}")
    return urlunsplit(url._replace(path=f"/{database_name(database)}"))


def backup_folder(run_dir: Path) -> Path:
    return (run_dir / "backups").resolve()


def inside(folder: Path, path: Path | str) -> Path:
    """`path` resolved, if it lies inside `folder` (symlinks followed); NameRefused otherwise."""
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise NameRefused(f"backup file {str(path)[:200]!r} is not inside the backup folder {folder}")
    return resolved
