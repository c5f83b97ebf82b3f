"""What the rollback handler needs from the world, as ports: bootstrap wires the real adapters, unit tests
in-memory fakes. Environments are reached through the deployment target port
(`releasegate_platform.targets.port.DeploymentTarget`), as the deployer reaches them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from releasegate_platform.replay import Replayer, ReplayReport, Scan


class Dumps(Protocol):
    """The PostgreSQL tools (`releasegate_platform.pgtools.dumps.PgTools`)."""

    def verified_file(self, path: str | Path, sha256: str) -> Path: ...
    async def restore(self, database: str, path: Path, *, clean: bool) -> None: ...


class EventLog(Protocol):
    """The business-event topic (`releasegate_platform.replay.EventLog`)."""

    topic: str

    async def check_replayable(self, since: datetime) -> dict[str, Any]: ...
    async def events_since(self, replayer: Replayer, service: str, environment: str, since: datetime) -> Scan: ...


class ServiceDatabase(Protocol):
    """The service's own database, around a restore."""

    async def wait_for_no_writes(self, database: str) -> None: ...
    async def wait_for_outbox_drained(self, database: str, since: datetime) -> list[dict]: ...
    async def replay_and_check(
        self, database: str, replayer: Replayer, scan: Scan, checks: dict[str, str]
    ) -> tuple[ReplayReport, list[dict]]: ...
