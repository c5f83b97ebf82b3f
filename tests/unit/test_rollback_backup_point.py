"""Which backup a data restore may restore: only the backup point the dr-checker took for this same release, of the
service's own database, as the command describes it (file name and time bound to the step grant's `since`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from contracts.events import BackupPoint, RollbackRequested
from releasegate_platform.pgtools.dumps import dump_name
from services.rollback.domain import backup_point_refusal

TAKEN_AT = datetime(2026, 11, 27, 10, 0, 0, 250000, tzinfo=UTC)


def point(**changes: Any) -> BackupPoint:
    fields = {
        "backup_id": 7,
        "database": "shop",
        "path": f"/run/backups/{dump_name('shop', TAKEN_AT)}",
        "sha256": "sha256:" + "d" * 64,
        "bytes": 10,
        "kind": "backup-point",
        "taken_at": TAKEN_AT,
        "release_id": "rel-1",
    }
    return BackupPoint(**(fields | changes))


def restore(**changes: Any) -> RollbackRequested:
    fields = {
        "release_id": "rel-1",
        "step_id": "compensate:production",
        "compensation": "restore_data",
        "service": "shop",
        "environment": "production",
        "candidate_version": "v2",
        "backup_id": 7,
        "since": TAKEN_AT,
        "backup_point": point(),
    }
    return RollbackRequested(**(fields | changes))


class TestOnlyTheReleasesOwnBackupPoint:
    def test_the_backup_point_of_the_same_release_may_be_restored(self):
        assert backup_point_refusal(restore(), "shop") is None

    def test_a_backup_point_of_another_release_is_refused(self):
        refusal = backup_point_refusal(restore(backup_point=point(release_id="rel-0")), "shop")
        assert refusal == "backup 7 is the backup point of release rel-0, not the backup point of release rel-1"

    def test_a_scheduled_backup_is_refused(self):
        refusal = backup_point_refusal(restore(backup_point=point(kind="scheduled", release_id=None)), "shop")
        assert refusal is not None and "a scheduled backup" in refusal

    def test_a_backup_of_another_database_is_refused(self):
        refusal = backup_point_refusal(restore(backup_point=point(database="billing")), "shop")
        assert refusal is not None and "of database billing" in refusal

    def test_a_command_describing_another_backup_than_it_names_is_refused(self):
        refusal = backup_point_refusal(restore(backup_point=point(backup_id=8)), "shop")
        assert refusal == "the command names backup 7 but describes backup 8"

    def test_a_command_without_a_backup_or_its_description_is_refused(self):
        assert "names no backup point" in (backup_point_refusal(restore(backup_id=None), "shop") or "")
        refusal = backup_point_refusal(restore(backup_point=None), "shop") or ""
        assert "carries no backup point" in refusal and "DRCheckFinished.backup_point" in refusal

    def test_a_backup_taken_at_another_time_than_the_granted_since_is_refused(self):
        refusal = backup_point_refusal(restore(since=TAKEN_AT - timedelta(days=1)), "shop")
        assert refusal is not None and "not at the command's" in refusal

    def test_another_file_in_the_folder_cannot_stand_in_for_the_dump(self):
        older = f"/run/backups/{dump_name('shop', TAKEN_AT - timedelta(days=3))}"
        refusal = backup_point_refusal(restore(backup_point=point(path=older)), "shop")
        assert refusal is not None and "is not the dump of shop taken at" in refusal

    def test_a_traffic_compensation_names_no_backup_and_needs_none(self):
        traffic = restore(compensation="restore_traffic", backup_id=None, since=None, backup_point=None)
        assert backup_point_refusal(traffic, "shop") is None
