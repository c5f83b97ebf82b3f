"""What the dr-checker handler needs from the world, as ports: bootstrap wires the real adapters, unit tests
in-memory fakes."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from contracts.events import BackupPoint, CheckResult
from releasegate_platform.pgtools.catalog import Drill, RecordedBackup
from releasegate_platform.pgtools.dumps import Dump
from services.dr_checker.domain import TopicRetention


class BackupCatalog(Protocol):
    """The backup catalog and restore drills (`releasegate_platform.pgtools.catalog.PgBackupCatalog`)."""

    async def record_backup(
        self, database: str, dump: Dump, *, kind: str = "scheduled", release_id: str | None = None
    ) -> BackupPoint: ...
    async def newest_backup(self, database: str) -> RecordedBackup | None: ...
    async def last_drill(self, database: str) -> Drill | None: ...


class Reports(Protocol):
    """Every DR check's result (`adapters.PgDRReports`)."""

    async def record_report(self, release_id: str, step_id: str, ready: bool, checks: list[CheckResult]) -> None: ...


class Dumps(Protocol):
    """The PostgreSQL tools (`releasegate_platform.pgtools.dumps.PgTools`)."""

    async def dump(self, database: str) -> Dump: ...
    def intact(self, path: str | Path, sha256: str) -> bool: ...


class Retention(Protocol):
    async def __call__(self, topic: str) -> TopicRetention: ...


class Standby(Protocol):
    async def lag(self, database: str, host: str, port: int) -> tuple[float | None, str | None]: ...


class Runbooks(Protocol):
    def __call__(self, ref: str) -> bool:
        """Whether a runbook reference (a path in the repository or a URL) exists."""
        ...
