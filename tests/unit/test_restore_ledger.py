"""The rollback service's handler with in-memory ports (its targets: tests/support/targets.py, chosen per
environment by the catalog as in production): a redelivered command restores once; a restore that cannot be proven
complete or whose backup file is not the one the dr-checker took never starts; one that fails after writes stopped
says maintenance is on, in its reason and in an alert; the service's replayer's report reaches the incident
report; traffic goes back to stable on a local and on a kubernetes target alike, and a data restore on a target
without maintenance mode changes nothing."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.events import AlertRaised, BackupPoint, RollbackFinished, RollbackRequested
from releasegate_platform.catalog import Catalog, ServiceEntry, TargetSpec
from releasegate_platform.pgtools.dumps import BackupError, RestoreInterrupted, dump_name
from releasegate_platform.replay import Replayer, ReplayerRefused, ReplayError, ReplayReport, Scan
from releasegate_platform.targets.directory import Build, TargetDirectory, kubernetes_targets
from releasegate_platform.targets.port import DeploymentTarget
from releasegate_runtime.settings import REPO_ROOT
from services.rollback.handlers import Rollback
from services.rollback.ledger import MAX_ATTEMPTS, Begun
from tests.support.targets import V2, FakeTarget

TAKEN_AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "d" * 64
FOLDER = Path("/run/backups")


class MemoryLedger:
    """The ledger's contract (`rollback_steps`) in memory: the first recorded outcome wins."""

    def __init__(self) -> None:
        self.attempts: dict[tuple[str, str], int] = {}
        self.outcomes: dict[tuple[str, str], RollbackFinished] = {}
        self.alerts: list[AlertRaised] = []

    async def begin(self, release_id: str, step_id: str) -> Begun:
        key = (release_id, step_id)
        if key in self.outcomes:
            return Begun(self.outcomes[key], self.attempts[key])
        self.attempts[key] = self.attempts.get(key, 0) + 1
        return Begun(None, self.attempts[key])

    async def finish(self, result: RollbackFinished, alert: AlertRaised | None) -> RollbackFinished:
        key = (result.release_id, result.step_id)
        if key not in self.outcomes:
            self.outcomes[key] = result
            self.alerts += [alert] if alert else []
        return self.outcomes[key]


class FakeDumps:
    """The backup folder holds files with known digests; a restore is recorded, or fails as told."""

    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.calls = calls
        self.files: dict[str, str] = {}
        self.restore_failure: Exception | None = None

    def verified_file(self, path: str | Path, sha256: str) -> Path:
        resolved = Path(path)
        if not resolved.is_relative_to(FOLDER):
            raise BackupError(f"backup file {str(path)!r} is not inside the backup folder {FOLDER}")
        if str(resolved) not in self.files:
            raise BackupError(f"backup file {resolved.name} is missing from the backup folder")
        if self.files[str(resolved)] != sha256:
            raise BackupError(f"backup file {resolved.name} does not match its recorded sha256")
        return resolved

    async def restore(self, database: str, path: Path, *, clean: bool) -> None:
        if self.restore_failure is not None:
            raise self.restore_failure
        self.calls.append(("restore", (database, path.name, clean)))


class FakeEvents:
    topic = "shop.events"

    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.calls = calls
        self.gap: str | None = None
        self.events: list[Any] = ["order-1", "order-2"]

    async def check_replayable(self, since: datetime) -> dict[str, Any]:
        if self.gap:
            raise ReplayError(self.gap)
        return {"partitions": 3, "events_since_backup_point": len(self.events)}

    async def events_since(self, replayer: Replayer, service: str, environment: str, since: datetime) -> Scan:
        self.calls.append(("read_events", since))
        scan = Scan(replayer, service, environment, self.topic)
        scan.events = list(self.events)
        scan.invalid.add({"topic": self.topic, "partition": 0, "offset": 9, "reason": "not a UUID"})
        return scan


class FakeReplayer:
    """Applies event ids to an in-memory database, once each."""

    def __init__(self) -> None:
        self.applied: set[str] = set()
        self.refuse: set[str] = set()

    def select(self, event, environment):
        return event

    async def apply(self, conn, events) -> ReplayReport:
        report = ReplayReport()
        for event in events:
            if event in self.refuse:
                report.not_replayable.add({"id": event, "reason": "sku unknown"})
            elif event in self.applied:
                report.already_present += 1
            else:
                self.applied.add(event)
                report.replayed.append(event)
        return report


class FakeDatabase:
    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.calls = calls
        self.violations: dict[str, int] = {}

    async def wait_for_no_writes(self, database: str) -> None:
        self.calls.append(("no_writes", database))

    async def wait_for_outbox_drained(self, database: str, since: datetime) -> list[dict]:
        self.calls.append(("outbox_drained", database))
        return []

    async def replay_and_check(self, database, replayer, scan, checks):
        report = await replayer.apply(None, scan.events)
        report.seen, report.invalid_events = len(scan.events), scan.invalid
        results = [
            {"name": n, "violations": self.violations.get(n, 0), "passed": not self.violations.get(n)} for n in checks
        ]
        return report, results


KUBERNETES = {"kind": "kubernetes", "gateway": "releasegate", "image": "registry.example/shop"}


class World:
    """Production with v1 stable and v2 as the candidate at 10%, on the target the catalog names for production:
    `local` unless `production` names another kind, which `build` makes (default: this same in-memory target, the
    local one then being another that nothing should touch)."""

    def __init__(
        self, tmp_path: Path, production: dict[str, Any] | None = None, build: Build | None = None, **target: Any
    ) -> None:
        shutil.copytree(REPO_ROOT / "catalog", tmp_path / "catalog")
        if production is not None:
            entry = yaml.safe_load((tmp_path / "catalog" / "shop.yaml").read_text())
            entry["targets"] = {"production": production}
            (tmp_path / "catalog" / "shop.yaml").write_text(yaml.safe_dump(entry))
        self.calls: list[tuple[Any, ...]] = []
        self.target = FakeTarget(shared=self.calls, **target).with_candidate("v2", V2, 10)
        self.local = self.target if production is None else FakeTarget(shared=self.calls)
        self.built: list[tuple[str, str]] = []
        catalog = Catalog(tmp_path / "catalog")
        self.directory = TargetDirectory(catalog, self.local, build or self.kubernetes)
        self.ledger = MemoryLedger()
        self.dumps, self.events = FakeDumps(self.calls), FakeEvents(self.calls)
        self.database, self.replayer = FakeDatabase(self.calls), FakeReplayer()
        self.path = FOLDER / dump_name("shop", TAKEN_AT)
        self.dumps.files[str(self.path)] = DIGEST
        self.replayer_refusal: str | None = None
        self.rollback = Rollback(
            catalog=catalog,
            targets=self.directory,
            dumps=self.dumps,
            events=self.events,
            database=self.database,
            replayer_of=self.replayer_of,
            ledger=self.ledger,
            clock=lambda: NOW,
        )

    def kubernetes(self, environment: str, spec: TargetSpec) -> DeploymentTarget:
        self.built.append((environment, spec.kind))
        return self.target

    def replayer_of(self, entry: ServiceEntry) -> Replayer:
        if self.replayer_refusal:
            raise ReplayerRefused(self.replayer_refusal)
        return self.replayer

    def point(self, **changes: Any) -> BackupPoint:
        fields = {
            "backup_id": 7,
            "database": "shop",
            "path": str(self.path),
            "sha256": DIGEST,
            "bytes": 10,
            "kind": "backup-point",
            "taken_at": TAKEN_AT,
            "release_id": "shop-v2-1a2b3c4d",
        }
        return BackupPoint(**(fields | changes))

    def request(self, compensation: str = "restore_data", **changes: Any) -> RollbackRequested:
        data = compensation == "restore_data"
        fields = {
            "release_id": "shop-v2-1a2b3c4d",
            "step_id": "compensate:production",
            "compensation": compensation,
            "service": "shop",
            "environment": "production",
            "candidate_version": "v2",
            "backup_id": 7 if data else None,
            "since": TAKEN_AT if data else None,
            "backup_point": self.point() if data else None,
        }
        return RollbackRequested(**(fields | changes))

    def touched_production(self) -> bool:
        return bool(self.target.calls) or any(c[0] in ("restore", "no_writes") for c in self.calls)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


class TestARestoreHappens:
    async def test_the_backup_point_is_restored_events_replayed_and_maintenance_ends(self, world):
        result = await world.rollback.restore(world.request())
        assert result.succeeded, result.reason
        assert ("restore", ("shop", world.path.name, True)) in world.calls
        order = [c[0] for c in world.calls]
        assert order.index("no_writes") < order.index("outbox_drained") < order.index("restore")
        assert order.index("restore") < order.index("read_events")
        assert ("maintenance", True) in world.calls and world.calls[-1] == ("maintenance", False)
        ev = result.evidence
        assert ev["replayed"] == 2 and ev["already_present"] == 0 and ev["maintenance"] == "off"
        assert ev["invalid_events_total"] == 1 and ev["restored_backup"] == {"id": 7, "taken_at": TAKEN_AT.isoformat()}
        assert "2 events replayed from shop.events" in result.reason and "1 invalid events skipped" in result.reason
        # the events are read from a margin before the backup point: the dump is a snapshot from its start
        [(_, since)] = [c for c in world.calls if c[0] == "read_events"]
        assert since < TAKEN_AT
        assert world.ledger.alerts == []

    async def test_events_the_replayer_could_not_apply_are_listed_and_the_restore_still_ends(self, world):
        world.replayer.refuse.add("order-2")
        result = await world.rollback.restore(world.request())
        assert result.succeeded and result.evidence["not_replayable_total"] == 1
        assert result.evidence["not_replayable"] == [{"id": "order-2", "reason": "sku unknown"}]
        assert "1 not replayable" in result.reason and "listed in the incident report" in result.reason

    async def test_integrity_failing_after_the_replay_keeps_maintenance_on(self, world):
        world.database.violations["inventory_never_negative"] = 2
        result = await world.rollback.restore(world.request())
        assert not result.succeeded and "integrity checks fail: inventory_never_negative" in result.reason
        assert "STAYS IN MAINTENANCE MODE" in result.reason and ("maintenance", False) not in world.calls


class TestStepLedger:
    async def test_a_redelivered_restore_restores_once_and_returns_the_recorded_outcome(self, world):
        first = await world.rollback.restore(world.request())
        again = await world.rollback.restore(world.request())
        assert [c for c in world.calls if c[0] == "restore"] == [("restore", ("shop", world.path.name, True))]
        assert first.succeeded and again == first and again.evidence["replayed"] == 2

    async def test_a_step_interrupted_too_often_ends_failed_without_another_restore(self, world):
        world.ledger.attempts[("shop-v2-1a2b3c4d", "compensate:production")] = MAX_ATTEMPTS
        result = await world.rollback.restore(world.request())
        assert not result.succeeded and f"started {MAX_ATTEMPTS} times and never finished" in result.reason
        assert "maintenance mode" in result.reason and len(world.ledger.alerts) == 1
        assert not world.touched_production()

    async def test_an_interrupted_step_is_tried_again_and_says_which_attempt(self, world):
        world.ledger.attempts[("shop-v2-1a2b3c4d", "compensate:production")] = 1
        result = await world.rollback.restore(world.request())
        assert result.succeeded and result.evidence["attempt"] == 2

    async def test_a_replay_after_an_interrupted_attempt_applies_nothing_twice(self, world):
        world.replayer.applied.add("order-1")  # the first attempt got this far before it died
        world.ledger.attempts[("shop-v2-1a2b3c4d", "compensate:production")] = 1
        result = await world.rollback.restore(world.request())
        assert result.evidence["replayed"] == 1 and result.evidence["already_present"] == 1


class TestNothingIsRestoredFromAFileThatIsNotTheBackupPoint:
    async def test_a_file_whose_sha256_differs_is_refused_before_anything_is_touched(self, world):
        world.dumps.files[str(world.path)] = "sha256:" + "e" * 64
        result = await world.rollback.restore(world.request())
        assert not result.succeeded and "does not match its recorded sha256" in result.reason
        assert "nothing was changed" in result.reason and not world.touched_production()
        [alert] = world.ledger.alerts
        assert alert.severity == "critical" and "maintenance" not in alert.title

    async def test_a_missing_file_is_refused_before_anything_is_touched(self, world):
        del world.dumps.files[str(world.path)]
        result = await world.rollback.restore(world.request())
        assert not result.succeeded and "missing" in result.reason and not world.touched_production()

    async def test_a_path_outside_the_backup_folder_is_refused_before_anything(self, world):
        outside = "/etc/" + dump_name("shop", TAKEN_AT)
        result = await world.rollback.restore(world.request(backup_point=world.point(path=outside)))
        assert not result.succeeded and "not inside the backup folder" in result.reason
        assert not world.touched_production()

    async def test_another_dump_in_the_folder_cannot_stand_in_for_the_backup_point(self, world):
        other = FOLDER / dump_name("shop", datetime(2026, 11, 20, tzinfo=UTC))
        world.dumps.files[str(other)] = DIGEST
        result = await world.rollback.restore(world.request(backup_point=world.point(path=str(other))))
        assert not result.succeeded and "is not the dump of shop taken at" in result.reason
        assert not world.touched_production()

    async def test_a_command_without_the_backup_point_is_refused_with_what_is_missing(self, world):
        result = await world.rollback.restore(world.request(backup_point=None))
        assert not result.succeeded and "carries no backup point" in result.reason
        assert not world.touched_production()


class TestDataRestoreSafety:
    async def test_events_no_longer_replayable_leave_production_untouched_and_alert(self, world):
        world.events.gap = (
            "shop.events no longer holds every event since 2026-11-27T09:59:55+00:00: "
            "partition 1: events up to offset 500 were deleted by retention"
        )
        result = await world.rollback.restore(world.request())
        assert not result.succeeded and "deleted by retention" in result.reason
        assert "nothing was changed: production traffic and data are as they were" in result.reason
        assert world.calls == []
        [alert] = world.ledger.alerts
        assert alert.severity == "critical" and "maintenance" not in alert.title

    async def test_a_service_whose_replayer_is_refused_is_not_restored(self, world):
        world.replayer_refusal = "the catalog entry of shop names no dr.replayer: it has no data restore"
        result = await world.rollback.restore(world.request())
        assert not result.succeeded and "names no dr.replayer" in result.reason and world.calls == []

    async def test_a_failure_after_writes_stopped_keeps_maintenance_on_and_says_so(self, world):
        world.dumps.restore_failure = RestoreInterrupted("restore of shop-x.dump into shop: killed after 180s")
        result = await world.rollback.restore(world.request())
        assert not result.succeeded and "killed after 180s" in result.reason
        assert "production STAYS IN MAINTENANCE MODE" in result.reason and result.evidence["maintenance"] == "on"
        assert ("maintenance", True) in world.calls and ("maintenance", False) not in world.calls
        [alert] = world.ledger.alerts
        assert alert.title.endswith("production is in maintenance mode")

    async def test_a_traffic_rollback_needs_no_backup_and_touches_no_data(self, world):
        result = await world.rollback.restore(world.request("restore_traffic"))
        assert result.succeeded and ("shift", {"v1": 100, "v2": 0}) in world.calls and ("retire", "v2") in world.calls
        assert not any(c[0] in ("restore", "maintenance", "read_events") for c in world.calls)


class TestTrafficBackToStable:
    async def test_a_canary_on_the_local_target_is_taken_back_and_its_instances_retired(self, world):
        world.target.with_candidate("v2", V2, 50, tenants=["initech"])
        result = await world.rollback.restore(world.request("restore_traffic"))
        assert result.succeeded, result.reason
        # the candidate's weight goes to 0 while it still runs, its routes are cleared, then its workload goes
        assert world.target.calls == [
            ("shift", {"v1": 100, "v2": 0}),
            ("clear_tenant_routes",),
            ("retire", "v2"),
        ]
        assert result.reason == "tenants initech routed back; 100% of production traffic on v1; retired v2"
        assert result.observed is not None and result.observed.weights == {"v1": 100}
        assert result.observed.tenants_on_candidate == [] and result.observed.stable_version == "v1"

    async def test_a_canary_on_a_kubernetes_target_is_taken_back_to_stable(self, tmp_path):
        world = World(tmp_path, production=KUBERNETES, supports_maintenance=False)
        world.target.with_candidate("v2", V2, 50, tenants=["initech"])
        result = await world.rollback.restore(world.request("restore_traffic"))
        assert result.succeeded, result.reason
        assert world.built == [("production", "kubernetes")] and world.local.calls == []
        # the HTTPRoute's weights back to stable 100, the tenant routes cleared, the candidate's Deployment gone
        assert world.target.weights == {"v1": 100} and world.target.tenants == []
        assert world.target.replicas == {"v1": 2}
        assert result.observed is not None and result.observed.weights == {"v1": 100}
        assert "tenants initech routed back" in result.reason and "retired v2" in result.reason
        assert world.ledger.alerts == []

    async def test_a_repeated_compensation_finds_nothing_left_to_retire(self, world):
        await world.rollback.restore(world.request("restore_traffic"))
        again = await world.rollback.restore(world.request("restore_traffic", step_id="compensate-again:production"))
        assert again.succeeded and again.reason == "100% of production traffic on v1; retired nothing (already clean)"

    async def test_without_a_serving_stable_version_nothing_is_moved(self, world):
        world.target.replicas["v1"] = 0
        result = await world.rollback.restore(world.request("restore_traffic"))
        assert not result.succeeded and "no serving v1 instance in production" in result.reason
        assert world.target.calls == [] and world.target.weights == {"v1": 90, "v2": 10}

    async def test_a_kubernetes_target_that_cannot_be_reached_fails_the_compensation_with_the_reason(
        self, tmp_path, monkeypatch
    ):
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        world = World(tmp_path, production=KUBERNETES, build=kubernetes_targets(None, setting="RG_ROLLBACK_KUBECONFIG"))
        result = await world.rollback.restore(world.request("restore_traffic"))
        assert not result.succeeded and "production deploys to kubernetes but RG_ROLLBACK_KUBECONFIG" in result.reason
        assert world.calls == []


class TestDataRestoreNeedsMaintenanceMode:
    async def test_a_restore_on_a_target_without_maintenance_mode_fails_and_changes_nothing(self, tmp_path):
        world = World(tmp_path, production=KUBERNETES, supports_maintenance=False)
        result = await world.rollback.restore(world.request())
        assert not result.succeeded
        assert "no data restore in production: writes must stop first, but maintenance mode is not supported" in (
            result.reason
        )
        assert "nothing was changed" in result.reason and "MAINTENANCE" not in result.reason
        assert not world.touched_production() and world.local.calls == []
        assert world.target.weights == {"v1": 90, "v2": 10} and world.target.replicas == {"v1": 2, "v2": 2}
        assert "maintenance" not in result.evidence
        [alert] = world.ledger.alerts
        assert alert.severity == "critical" and "maintenance" not in alert.title
