"""The dr-checker's handler with in-memory ports: the database comes from the catalog, a backup point is taken only
when its events stay replayable and is reported with everything a restore needs, readiness reads the backup catalog
and drills it is given, and every answer is recorded."""

from __future__ import annotations

import hashlib
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts.events import BackupPoint, CheckResult, DRCheckRequested
from releasegate_platform.catalog import Catalog
from releasegate_platform.pgtools.catalog import Drill, RecordedBackup
from releasegate_platform.pgtools.dumps import BackupError, Dump
from releasegate_runtime.kafka import PermanentError
from releasegate_runtime.settings import REPO_ROOT
from services.dr_checker.domain import TopicRetention
from services.dr_checker.handlers import DRChecker

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
KEEPS_A_WEEK = TopicRetention("shop.events", retention_ms=7 * 86400 * 1000, retention_bytes=-1, cleanup_policy="delete")
DIGEST = "sha256:" + hashlib.sha256(b"PGDMP").hexdigest()


class MemoryBackups:
    """The backup catalog and drills in memory."""

    def __init__(self) -> None:
        self.backups: list[BackupPoint] = []
        self.drill: Drill | None = None

    async def record_backup(
        self, database: str, dump: Dump, *, kind: str = "scheduled", release_id: str | None = None
    ) -> BackupPoint:
        point = BackupPoint(
            backup_id=len(self.backups) + 1,
            database=database,
            path=str(dump.path),
            sha256=dump.sha256,
            bytes=dump.bytes,
            kind=kind,  # type: ignore[arg-type]
            taken_at=dump.started_at,
            release_id=release_id,
        )
        self.backups.append(point)
        return point

    async def newest_backup(self, database: str) -> RecordedBackup | None:
        mine = [b for b in self.backups if b.database == database]
        if not mine:
            return None
        b = mine[-1]
        return RecordedBackup(b.backup_id, b.path, b.bytes, b.sha256, b.taken_at + timedelta(seconds=2))

    async def last_drill(self, database: str) -> Drill | None:
        return self.drill


class MemoryReports:
    def __init__(self) -> None:
        self.reports: dict[tuple[str, str], tuple[bool, list[CheckResult]]] = {}

    async def record_report(self, release_id: str, step_id: str, ready: bool, checks: list[CheckResult]) -> None:
        self.reports.setdefault((release_id, step_id), (ready, checks))


class FakeDumps:
    """pg_dump into memory: files it took are intact, unless `damaged`."""

    def __init__(self) -> None:
        self.taken: list[str] = []
        self.failure: str | None = None
        self.damaged: set[str] = set()

    async def dump(self, database: str) -> Dump:
        if self.failure:
            raise BackupError(self.failure)
        self.taken.append(database)
        path = Path(f"/run/backups/{database}-{len(self.taken)}.dump")
        return Dump(path, NOW - timedelta(minutes=10), 5, DIGEST)

    def intact(self, path: str | Path, sha256: str) -> bool:
        return str(path) not in self.damaged and sha256 == DIGEST


class FakeStandby:
    def __init__(self, lag: float | None = 1.0, error: str | None = None) -> None:
        self.answer = (lag, error)

    async def lag(self, database: str, host: str, port: int) -> tuple[float | None, str | None]:
        return self.answer


@pytest.fixture
def world(tmp_path: Path):
    shutil.copytree(REPO_ROOT / "catalog", tmp_path / "catalog")
    retention = {"now": KEEPS_A_WEEK}

    async def read(topic: str) -> TopicRetention:
        return retention["now"]

    backups, reports, dumps = MemoryBackups(), MemoryReports(), FakeDumps()
    checker = DRChecker(
        catalog=Catalog(tmp_path / "catalog"),
        backups=backups,
        reports=reports,
        dumps=dumps,
        retention=read,
        standby=FakeStandby(),
        runbook_exists=lambda ref: True,
        clock=lambda: NOW,
    )
    return checker, backups, reports, dumps, retention


def dr_request(**changes) -> DRCheckRequested:
    fields = {
        "release_id": "shop-v2-1a2b3c4d",
        "step_id": "backup-point",
        "service": "shop",
        "version": "v2",
        "digest": "sha256:" + "0" * 64,
        "database": "shop",
        "rpo_seconds": 3600,
        "action": "backup-point",
    }
    return DRCheckRequested.model_construct(**(fields | changes))


class TestDatabaseComesFromTheCatalog:
    def test_the_catalogs_database_is_accepted(self, world):
        entry, database = world[0].resolve(dr_request())
        assert database == "shop" and entry.name == "shop"

    @pytest.mark.parametrize("database", ["shop?host=elsewhere", "orders", "../shop", "shop "])
    def test_a_command_naming_another_database_is_refused_with_both_names(self, world, database):
        with pytest.raises(PermanentError, match="catalog says service 'shop' owns 'shop'; refused"):
            world[0].resolve(dr_request(database=database))

    @pytest.mark.parametrize("service", ["nosuch", "../catalog/shop", "shop?x=1"])
    def test_a_service_the_catalog_does_not_know_is_refused(self, world, service):
        with pytest.raises(PermanentError, match="cannot tell which database"):
            world[0].resolve(dr_request(service=service))

    async def test_a_refused_command_takes_no_backup_and_records_nothing(self, world):
        checker, backups, reports, dumps, _ = world
        with pytest.raises(PermanentError):
            await checker.handle(dr_request(database="shop?host=elsewhere"))
        assert dumps.taken == [] and backups.backups == [] and reports.reports == {}


class TestBackupPoint:
    async def test_a_backup_point_is_reported_with_everything_a_restore_needs(self, world):
        checker, backups, reports, _, _ = world
        result = await checker.handle(dr_request())
        assert result.ready
        point = result.backup_point
        assert point is not None and point == backups.backups[0]
        assert (point.database, point.kind, point.release_id, point.sha256) == (
            "shop",
            "backup-point",
            "shop-v2-1a2b3c4d",
            DIGEST,
        )
        assert point.path == "/run/backups/shop-1.dump" and point.taken_at == NOW - timedelta(minutes=10)
        # the saga keeps the first check's evidence: the same facts are there too
        evidence = result.checks[0].evidence
        assert evidence["backup_id"] == 1 and evidence["sha256"] == DIGEST and evidence["path"] == point.path
        assert reports.reports[("shop-v2-1a2b3c4d", "backup-point")][0] is True

    async def test_no_backup_point_is_taken_when_events_might_not_be_replayable(self, world):
        checker, backups, _, dumps, retention = world
        retention["now"] = TopicRetention("shop.events", 60_000, -1, "delete")
        result = await checker.handle(dr_request())
        [check] = result.checks
        assert check.name == "events_replayable" and not check.passed and check.evidence["outcome"] == "wait"
        assert not result.ready and result.backup_point is None and dumps.taken == [] and backups.backups == []

    async def test_a_failed_dump_is_a_failed_check_and_no_backup_point(self, world):
        checker, backups, _, dumps, _ = world
        dumps.failure = "pg_dump of shop failed: disk full"
        result = await checker.handle(dr_request())
        assert not result.ready and result.backup_point is None and backups.backups == []
        assert "disk full" in result.checks[0].reason


class TestReadiness:
    async def test_a_fresh_intact_backup_and_a_recent_drill_are_ready(self, world):
        checker, backups, reports, dumps, _ = world
        await backups.record_backup("shop", await dumps.dump("shop"))
        backups.drill = Drill(NOW - timedelta(hours=1), 3.0, True, "ok", [])
        result = await checker.handle(dr_request(action="readiness", step_id="dr-check"))
        by_name = {c.name: c for c in result.checks}
        assert result.ready and result.backup_point is None
        assert set(by_name) == {
            "backup_freshness",
            "restore_drill_recency",
            "restore_time_within_rto",
            "replica_lag",
            "runbooks",
        }
        assert reports.reports[("shop-v2-1a2b3c4d", "dr-check")][0] is True

    async def test_a_damaged_backup_file_blocks(self, world):
        checker, backups, _, dumps, _ = world
        point = await backups.record_backup("shop", await dumps.dump("shop"))
        dumps.damaged.add(point.path)
        backups.drill = Drill(NOW - timedelta(hours=1), 3.0, True, "ok", [])
        result = await checker.handle(dr_request(action="readiness", step_id="dr-check"))
        freshness = next(c for c in result.checks if c.name == "backup_freshness")
        assert not result.ready and not freshness.passed and "does not match its recorded sha256" in freshness.reason

    async def test_no_backup_and_no_drill_block_with_reasons(self, world):
        checker, *_ = world
        result = await checker.handle(dr_request(action="readiness", step_id="dr-check"))
        failed = {c.name for c in result.checks if not c.passed}
        assert not result.ready and {"backup_freshness", "restore_drill_recency"} <= failed
