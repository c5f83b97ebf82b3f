"""DR readiness rules."""
from datetime import UTC, datetime, timedelta

from services.dr_checker.domain import Backup, backup_freshness

NOW = datetime(2026, 11, 27, tzinfo=UTC)


class TestBackupFreshness:
    def test_backup_within_rpo_passes_with_its_age(self):
        c = backup_freshness("shop", Backup("/b", NOW - timedelta(minutes=5), 10, True), 3600, NOW)
        assert c.passed and c.evidence["age_seconds"] == 300

    def test_backup_older_than_rpo_blocks(self):
        c = backup_freshness("shop", Backup("/b", NOW - timedelta(hours=2), 10, True), 3600, NOW)
        assert not c.passed and "older than the RPO" in c.reason

    def test_no_backup_blocks(self):
        assert not backup_freshness("shop", None, 3600, NOW).passed

    def test_tampered_backup_file_blocks(self):
        assert not backup_freshness("shop", Backup("/b", NOW, 10, False), 3600, NOW).passed
