"""PostgreSQL client tools and connection strings for backups, restores and drills."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def tool(name: str) -> str:
    """The newest installed PostgreSQL client binary `name` (pg_dump, pg_restore...)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    return str(candidates[0]) if candidates else (shutil.which(name) or name)


def dsn_for(database_url: str, database: str, *, host: str | None = None, port: int | None = None) -> str:
    """The same user, another database (and, for a replica, another server)."""
    url = urlsplit(database_url)
    if host is not None or port is not None:
        credentials = url.netloc.rsplit("@", 1)[0] + "@" if "@" in url.netloc else ""
        url = url._replace(netloc=f"{credentials}{host or url.hostname}:{port or url.port}")
    return urlunsplit(url._replace(path=f"/{database}"))


def cli_args(database_url: str, database: str) -> tuple[list[str], dict[str, str]]:
    """Arguments and environment for a client tool: the password goes through PGPASSWORD, never argv."""
    url = urlsplit(database_url)
    plain = urlunsplit(url._replace(path=f"/{database}", netloc=url.netloc.split("@")[-1]))
    return [f"--username={url.username}", f"--dbname={plain}"], {**os.environ, "PGPASSWORD": url.password or ""}
