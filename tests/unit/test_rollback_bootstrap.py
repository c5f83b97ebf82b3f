"""The composition roots of the rollback service and the dr-checker wire the real adapters (no I/O at build time):
the restore gets its backup facts from the command and its replayer from the catalog, never another service's
code or tables; the rollback service reaches each environment through the same target directory as the deployer,
with a local target that starts nothing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from contracts import topics
from releasegate_platform.pgtools.catalog import PgBackupCatalog
from releasegate_platform.pgtools.dumps import PgTools
from releasegate_platform.replay import EventLog, load_replayer
from releasegate_platform.targets.directory import TargetDirectory
from releasegate_platform.targets.local import LocalDeploymentTarget
from releasegate_runtime.settings import REPO_ROOT, ServiceSettings, TargetSettings
from services.dr_checker import bootstrap as dr_bootstrap
from services.dr_checker.adapters import PgDRReports, PgStandby
from services.rollback import bootstrap as rollback_bootstrap
from services.rollback.adapters import PgServiceDatabase
from services.rollback.ledger import PgStepLedger


def runtime(tmp_path: Path) -> SimpleNamespace:
    settings = ServiceSettings(catalog_dir=REPO_ROOT / "catalog", run_dir=tmp_path / "run")
    return SimpleNamespace(settings=settings, pool=object())


class TestCompositionRoots:
    def test_the_rollback_service_gets_pg_tools_the_event_log_and_the_catalog_named_replayer(self, tmp_path):
        settings = TargetSettings(catalog_dir=REPO_ROOT / "catalog", run_dir=tmp_path / "run")
        rollback = rollback_bootstrap.build(runtime(tmp_path), settings)  # type: ignore[arg-type]
        assert isinstance(rollback._dumps, PgTools) and rollback._dumps.folder == (tmp_path / "run" / "backups")
        assert isinstance(rollback._events, EventLog) and rollback._events.topic == topics.SHOP_EVENTS
        assert isinstance(rollback._db, PgServiceDatabase) and isinstance(rollback._ledger, PgStepLedger)
        assert rollback._replayer_of is load_replayer

    def test_the_rollback_service_acts_through_the_target_directory_and_starts_no_instance(self, tmp_path):
        settings = TargetSettings(catalog_dir=REPO_ROOT / "catalog", run_dir=tmp_path / "run")
        rollback = rollback_bootstrap.build(runtime(tmp_path), settings)  # type: ignore[arg-type]
        assert isinstance(rollback._targets, TargetDirectory)
        local = rollback._targets("shop", "production")
        assert isinstance(local, LocalDeploymentTarget) and local._starter is None  # no launcher: it starts nothing

    def test_the_dr_checker_gets_the_backup_catalog_its_reports_and_pg_tools(self, tmp_path):
        checker = dr_bootstrap.build(runtime(tmp_path))  # type: ignore[arg-type]
        assert isinstance(checker._backups, PgBackupCatalog) and isinstance(checker._reports, PgDRReports)
        assert isinstance(checker._dumps, PgTools) and isinstance(checker._standby, PgStandby)
        assert checker._runbook_exists("docs/runbooks/shop-restore.md")
        assert not checker._runbook_exists("docs/runbooks/no-such-runbook.md")
