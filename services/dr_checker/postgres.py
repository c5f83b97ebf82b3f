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


def dsn_for(database_url: str, database: str) -> str:
    """The same server and user, another database."""
    return urlunsplit(urlsplit(database_url)._replace(path=f"/{database}"))


def cli_args(database_url: str, database: str) -> tuple[list[str], dict[str, str]]:
    """Arguments and environment for a client tool: the password goes through PGPASSWORD, never argv."""
    url = urlsplit(database_url)
    plain = urlunsplit(url._replace(path=f"/{database}", netloc=url.netloc.split("@")[-1]))
    return [f"--username={url.username}", f"--dbname={plain}"], {**os.environ, "PGPASSWORD": url.password or ""}
