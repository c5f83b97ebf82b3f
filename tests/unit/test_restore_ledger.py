"""The rollback service's step ledger and the safety of a data restore: a redelivered command restores once; a
restore that cannot be proven complete never starts; one that fails after writes stopped says maintenance is on,
in its reason and in an alert."""

from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contracts.events import AlertRaised, ObservedState, RollbackFinished, RollbackRequested
from releasegate_platform.local_target import Instance
from releasegate_runtime.settings import REPO_ROOT, ServiceSettings
from services.dr_checker.backup import RestoreInterrupted
from services.rollback import handlers
from services.rollback.handlers import Rollback
from services.rollback.ledger import MAX_ATTEMPTS, Begun
from services.rollback.replay import ReplayError

TAKEN_AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


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


class FakeTarget:
    """Production with v1 serving (this test's own pid stands for a live instance) and v2 as the candidate."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.instances = [
            Instance(1, "shop", "production", "v1", "sha256:" + "1" * 64, "a", 18001, os.getpid(), "serving"),
            Instance(2, "shop", "production", "v2", "sha256:" + "2" * 64, "b", 18002, os.getpid(), "serving"),
        ]

    async def stable(self, service, environment):
        return "v1", "sha256:" + "1" * 64

    async def live(self, service, environment):
        return list(self.instances)

    async def routed_tenants(self, environment):
        return []

    async def clear_tenant_routes(self, service, environment):
        self.calls.append(("clear_tenant_routes", environment))

    async def split(self, service, environment, weights):
        self.calls.append(("split", weights))

    async def stop(self, inst):
        self.calls.append(("stop", inst.version))
        self.instances = [i for i in self.instances if i.id != inst.id]

    async def maintenance(self, service, environment, on):
        self.calls.append(("maintenance", on))

    async def observe(self, service, environment):
        return ObservedState(weights={"v1": 100}, stable_version="v1")


class FakePool:
    """Answers the one query a restore asks the control database: the release's backup point."""

    def __init__(self, point: dict[str, Any]) -> None:
        self.point = point

    @asynccontextmanager
    async def acquire(self):
        yield self

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        assert "FROM backups" in sql
        return self.point


def request(compensation: str = "restore_data") -> RollbackRequested:
    return RollbackRequested(
        release_id="shop-v2-1a2b3c4d",
        step_id="compensate:production",
        compensation=compensation,
        service="shop",
        environment="production",
        candidate_version="v2",
        backup_id=7 if compensation == "restore_data" else None,
    )


@pytest.fixture
def env(tmp_path: Path):
    shutil.copytree(REPO_ROOT / "catalog", tmp_path / "catalog")
    settings = ServiceSettings(catalog_dir=tmp_path / "catalog", run_dir=tmp_path / "run")
    dump = tmp_path / "run" / "backups" / "shop-20261127T100000.dump"
    dump.parent.mkdir(parents=True)
    dump.write_bytes(b"PGDMP fake")
    point = {
        "id": 7,
        "path": str(dump),
        "sha256": "sha256:" + hashlib.sha256(dump.read_bytes()).hexdigest(),
        "started_at": TAKEN_AT,
    }
    ledger, target = MemoryLedger(), FakeTarget()
    rollback = Rollback(FakePool(point), target, settings, None, ledger)  # type: ignore[arg-type]
    return rollback, ledger, target


class TestStepLedger:
    async def test_a_redelivered_restore_restores_once_and_returns_the_recorded_outcome(self, env, monkeypatch):
        rollback, ledger, _ = env
        restores = []

        async def restore_data(req, evidence):
            restores.append(req.step_id)
            evidence["replayed"] = 3
            return "shop restored to backup point 7"

        monkeypatch.setattr(rollback, "_restore_data", restore_data)
        first = await rollback.restore(request())
        again = await rollback.restore(request())
        assert restores == ["compensate:production"]
        assert first.succeeded and again == first and again.evidence["replayed"] == 3

    async def test_a_step_interrupted_too_often_ends_failed_without_another_restore(self, env, monkeypatch):
        rollback, ledger, _ = env
        ledger.attempts[("shop-v2-1a2b3c4d", "compensate:production")] = MAX_ATTEMPTS

        async def restore_data(req, evidence):
            raise AssertionError("restored again")

        monkeypatch.setattr(rollback, "_restore_data", restore_data)
        result = await rollback.restore(request())
        assert not result.succeeded and f"started {MAX_ATTEMPTS} times and never finished" in result.reason
        assert "maintenance mode" in result.reason and len(ledger.alerts) == 1

    async def test_an_interrupted_step_is_tried_again_and_says_which_attempt(self, env, monkeypatch):
        rollback, ledger, _ = env
        ledger.attempts[("shop-v2-1a2b3c4d", "compensate:production")] = 1

        async def restore_data(req, evidence):
            return "restored"

        monkeypatch.setattr(rollback, "_restore_data", restore_data)
        result = await rollback.restore(request())
        assert result.succeeded and result.evidence["attempt"] == 2


class TestDataRestoreSafety:
    async def test_events_no_longer_replayable_leave_production_untouched_and_alert(self, env, monkeypatch):
        rollback, ledger, target = env

        async def gap(settings, since):
            raise ReplayError(
                "shop.events no longer holds every event since 2026-11-27T09:59:55+00:00: "
                "partition 1: events up to offset 500 were deleted by retention"
            )

        monkeypatch.setattr(handlers, "check_replayable", gap)
        result = await rollback.restore(request())
        assert not result.succeeded and "deleted by retention" in result.reason
        assert "nothing was changed: production traffic and data are as they were" in result.reason
        assert target.calls == []
        [alert] = ledger.alerts
        assert alert.severity == "critical" and "maintenance" not in alert.title

    async def test_a_failure_after_writes_stopped_keeps_maintenance_on_and_says_so(self, env, monkeypatch):
        rollback, ledger, target = env

        async def complete(settings, since):
            return {"partitions": 3, "events_since_backup_point": 12}

        async def drained(database_url, database):
            return None

        async def interrupted(settings, database, path, *, clean):
            raise RestoreInterrupted("restore of shop-20261127T100000.dump into shop: killed after 180s")

        monkeypatch.setattr(handlers, "check_replayable", complete)
        monkeypatch.setattr(handlers, "_wait_for_no_writes", drained)

        async def relayed(database_url, database, since):
            return []

        monkeypatch.setattr(handlers, "_wait_for_outbox_drained", relayed)
        monkeypatch.setattr(handlers, "restore", interrupted)
        result = await rollback.restore(request())
        assert not result.succeeded and "killed after 180s" in result.reason
        assert "production STAYS IN MAINTENANCE MODE" in result.reason and result.evidence["maintenance"] == "on"
        assert ("maintenance", True) in target.calls and ("maintenance", False) not in target.calls
        [alert] = ledger.alerts
        assert alert.title.endswith("production is in maintenance mode")

    async def test_a_backup_point_file_outside_the_backup_folder_is_refused_before_anything(self, env, tmp_path):
        rollback, ledger, target = env
        outside = tmp_path / "elsewhere.dump"
        outside.write_bytes(b"PGDMP fake")
        rollback._pool.point = rollback._pool.point | {"path": str(outside)}
        result = await rollback.restore(request())
        assert not result.succeeded and "not inside the backup folder" in result.reason and target.calls == []
