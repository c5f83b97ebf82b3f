"""The composition roots of the rollback service and the dr-checker wire the real adapters (no I/O at build time):
the restore gets its backup facts from the command and its replayer from the catalog, never another service's
code or tables; the rollback service reaches each environment through the same target directory as the deployer,
with a local target that starts nothing, and a kubernetes one as its own ServiceAccount (RG_ROLLBACK_KUBECONFIG,
never the deployer's RG_KUBECONFIG that the local stack passes to every service)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from contracts import topics
from releasegate_platform.pgtools.catalog import PgBackupCatalog
from releasegate_platform.pgtools.dumps import PgTools
from releasegate_platform.replay import EventLog, load_replayer
from releasegate_platform.targets.directory import TargetDirectory
from releasegate_platform.targets.kubernetes import KubernetesTarget
from releasegate_platform.targets.local import LocalDeploymentTarget
from releasegate_platform.targets.port import TargetError
from releasegate_runtime.settings import REPO_ROOT, ServiceSettings
from services.dr_checker import bootstrap as dr_bootstrap
from services.dr_checker.adapters import PgDRReports, PgStandby
from services.rollback import bootstrap as rollback_bootstrap
from services.rollback.adapters import PgServiceDatabase
from services.rollback.config import RollbackSettings
from services.rollback.ledger import PgStepLedger


def runtime(tmp_path: Path) -> SimpleNamespace:
    settings = ServiceSettings(catalog_dir=REPO_ROOT / "catalog", run_dir=tmp_path / "run")
    return SimpleNamespace(settings=settings, pool=object())


class TestCompositionRoots:
    def test_the_rollback_service_gets_pg_tools_the_event_log_and_the_catalog_named_replayer(self, tmp_path):
        settings = RollbackSettings(catalog_dir=REPO_ROOT / "catalog", run_dir=tmp_path / "run")
        rollback = rollback_bootstrap.build(runtime(tmp_path), settings)  # type: ignore[arg-type]
        assert isinstance(rollback._dumps, PgTools) and rollback._dumps.folder == (tmp_path / "run" / "backups")
        assert isinstance(rollback._events, EventLog) and rollback._events.topic == topics.SHOP_EVENTS
        assert isinstance(rollback._db, PgServiceDatabase) and isinstance(rollback._ledger, PgStepLedger)
        assert rollback._replayer_of is load_replayer

    def test_the_rollback_service_acts_through_the_target_directory_and_starts_no_instance(self, tmp_path):
        settings = RollbackSettings(catalog_dir=REPO_ROOT / "catalog", run_dir=tmp_path / "run")
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


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


class TestTheRollbackActsAsItsOwnServiceAccount:
    """deploy/services.sh and the end-to-end tests give every service the caller's RG_* variables, so the
    deployer's RG_KUBECONFIG reaches the rollback service too: it must not act with it."""

    @pytest.fixture
    def production_on_kubernetes(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        shutil.copytree(REPO_ROOT / "catalog", tmp_path / "catalog")
        entry = yaml.safe_load((tmp_path / "catalog" / "shop.yaml").read_text())
        entry["targets"] = {"production": {"kind": "kubernetes", "gateway": "public", "image": "registry.example/shop"}}
        (tmp_path / "catalog" / "shop.yaml").write_text(yaml.safe_dump(entry))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.delenv("RG_ROLLBACK_KUBECONFIG", raising=False)
        monkeypatch.setenv("RG_CATALOG_DIR", str(tmp_path / "catalog"))
        monkeypatch.setenv("RG_RUN_DIR", str(tmp_path / "run"))
        monkeypatch.setenv("RG_KUBECONFIG", str(kubeconfig(tmp_path / "deployer.kubeconfig", "https://deployer:1")))
        return tmp_path

    def test_its_kubeconfig_is_rg_rollback_kubeconfig(
        self, tmp_path: Path, production_on_kubernetes: Path, monkeypatch: pytest.MonkeyPatch
    ):
        own = kubeconfig(tmp_path / "rollback.kubeconfig", "https://rollback:1")
        monkeypatch.setenv("RG_ROLLBACK_KUBECONFIG", str(own))
        settings = RollbackSettings().for_principal("rollback")
        assert settings.kubeconfig_file() == own and settings.KUBECONFIG_SETTING == "RG_ROLLBACK_KUBECONFIG"
        rollback = rollback_bootstrap.build(runtime(tmp_path), settings)  # type: ignore[arg-type]
        target = rollback._targets("shop", "production")
        assert isinstance(target, KubernetesTarget)
        assert target._apps.api_client.configuration.host == "https://rollback:1"

    def test_without_it_the_deployers_kubeconfig_is_not_used_and_the_refusal_names_its_setting(
        self, tmp_path: Path, production_on_kubernetes: Path
    ):
        settings = RollbackSettings().for_principal("rollback")
        assert settings.kubeconfig_file() is None
        rollback = rollback_bootstrap.build(runtime(tmp_path), settings)  # type: ignore[arg-type]
        with pytest.raises(TargetError, match="production deploys to kubernetes but RG_ROLLBACK_KUBECONFIG names no"):
            rollback._targets("shop", "production")
