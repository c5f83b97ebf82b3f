"""Small adapters behind the handler's ports: verified bundles from the content-addressed store (through the
launcher, which extracts and re-hashes them) and migrations of each environment's database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.deployer.adapters import migrator
from services.deployer.adapters.launcher import Launcher


class StoreBundles:
    def __init__(self, launcher: Launcher) -> None:
        self._launcher = launcher

    async def unpack(self, digest: str) -> tuple[Path, dict[str, Any]]:
        return await asyncio.to_thread(self._launcher.unpack, digest)


class DatabaseMigrations:
    def __init__(self, database_for: Callable[[str], str]) -> None:
        """`database_for(environment)`: the DSN of that environment's shop database, as the deployer's role."""
        self._database_for = database_for

    async def migrate(self, environment: str, folder: Path, release_id: str) -> tuple[list[str], list[str]]:
        return await migrator.migrate(self._database_for(environment), folder, release_id)

    async def server_version(self, environment: str) -> str:
        return await migrator.server_version(self._database_for(environment))
