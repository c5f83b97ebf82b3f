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


from services.dr_checker.domain import Drill, replica_lag, restore_drill, runbooks  # noqa: E402


class TestRestoreDrill:
    def drill(self, minutes_ago=10, seconds=1.5, passed=True):
        return Drill(NOW - timedelta(minutes=minutes_ago), seconds, passed, "restored", [{"name": "x", "passed": True}])

    def test_recent_fast_drill_passes_both_checks_with_figures_and_thresholds(self):
        recency, rto = restore_drill("shop", self.drill(), 3600, 120, NOW)
        assert recency.passed and rto.passed
        assert rto.evidence == {"restore_seconds": 1.5, "rto_seconds": 120}
        assert recency.evidence["age_seconds"] == 600 and recency.evidence["max_age_seconds"] == 3600

    def test_drill_older_than_the_tier_allows_blocks(self):
        recency, _ = restore_drill("shop", self.drill(minutes_ago=120), 3600, 120, NOW)
        assert not recency.passed and "older than the 3600s the tier allows" in recency.reason

    def test_restore_slower_than_the_rto_blocks(self):
        _, rto = restore_drill("shop", self.drill(seconds=200), 3600, 120, NOW)
        assert not rto.passed and "slower than the RTO of 120s" in rto.reason

    def test_a_failed_drill_blocks_with_its_reason(self):
        recency, _ = restore_drill("shop", self.drill(passed=False), 3600, 120, NOW)
        assert not recency.passed and "failed: restored" in recency.reason

    def test_no_drill_on_record_blocks_both(self):
        assert not any(c.passed for c in restore_drill("shop", None, 3600, 120, NOW))


class TestReplicaAndRunbooks:
    def test_replica_lag_within_the_rpo_passes(self):
        assert replica_lag(2.0, None, 60).passed

    def test_replica_lag_above_the_rpo_blocks(self):
        check = replica_lag(90.0, None, 60)
        assert not check.passed and "more than the RPO of 60s" in check.reason

    def test_unreachable_standby_blocks(self):
        assert not replica_lag(None, "cannot connect: refused", 60).passed

    def test_tier_one_needs_restore_and_failover_runbooks(self):
        check = runbooks(1, {"restore": "docs/r.md"}, {"restore": True})
        assert not check.passed and "no failover runbook" in check.reason

    def test_a_declared_runbook_that_does_not_exist_blocks(self):
        check = runbooks(1, {"restore": "a.md", "failover": "b.md"}, {"restore": True, "failover": False})
        assert not check.passed and "runbook not found: failover (b.md)" in check.reason

    def test_lower_tiers_need_no_runbook(self):
        assert runbooks(2, {}, {}).passed
