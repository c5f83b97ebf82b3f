"""DR readiness rules; the database always the catalog's; no backup point unless the events since it would all
still be replayable."""

from datetime import UTC, datetime, timedelta

import pytest

from releasegate_runtime.settings import ServiceSettings
from services.dr_checker import retention
from services.dr_checker.domain import (
    Backup,
    Drill,
    TopicRetention,
    backup_freshness,
    database_refusal,
    events_replayable,
    replica_lag,
    restore_drill,
    runbooks,
)

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


DAY = 86400.0
KEEPS_A_WEEK = TopicRetention("shop.events", retention_ms=7 * 86400 * 1000, retention_bytes=-1, cleanup_policy="delete")


class TestDatabaseComesFromTheCatalog:
    def test_the_refusal_names_a_hostile_value_shortened(self):
        reason = database_refusal("shop", "shop", "x" * 10_000)
        assert reason is not None and len(reason) < 300


class TestEventsReplayableBeforeABackupPoint:
    def test_time_retention_longer_than_the_hold_passes_with_its_figures(self):
        c = events_replayable(KEEPS_A_WEEK, DAY)
        assert c.passed and c.evidence["retention_ms"] == 7 * 86400 * 1000 and c.evidence["hold_seconds"] == DAY

    def test_unlimited_retention_passes(self):
        assert events_replayable(TopicRetention("shop.events", -1, -1, "delete"), DAY).passed

    def test_retention_shorter_than_the_hold_makes_the_release_wait_with_the_reason(self):
        c = events_replayable(TopicRetention("shop.events", 3600 * 1000, -1, "delete"), DAY)
        assert not c.passed and c.evidence["outcome"] == "wait"
        assert "keeps events for 3600s, less than the 86400s a release may hold its backup point" in c.reason

    def test_a_size_limit_fails_whatever_the_time_retention(self):
        c = events_replayable(TopicRetention("shop.events", -1, 10 * 2**30, "delete"), DAY)
        assert not c.passed and "retention.bytes=10737418240" in c.reason

    @pytest.mark.parametrize("policy", ["compact", "compact,delete", None])
    def test_a_compacted_topic_keeps_one_event_per_key_and_fails(self, policy):
        c = events_replayable(TopicRetention("shop.events", -1, -1, policy), DAY)
        assert not c.passed and "cleanup.policy" in c.reason

    def test_a_retention_that_cannot_be_read_fails_with_the_brokers_reason(self):
        c = events_replayable(TopicRetention("shop.events", error="TOPIC_AUTHORIZATION_FAILED: denied"), DAY)
        assert not c.passed and "cannot read the retention of shop.events: TOPIC_AUTHORIZATION_FAILED" in c.reason

    async def test_a_broker_that_cannot_be_reached_is_a_reason_not_an_exception(self, monkeypatch):
        monkeypatch.setattr(retention, "TIMEOUT", 0.5)
        settings = ServiceSettings(kafka_bootstrap="127.0.0.1:1", principal="dr-checker", kafka_password="x")
        read = await retention.topic_retention(settings, "shop.events")
        assert read.error and "destroyed" not in read.error and read.retention_ms is None
        assert not events_replayable(read, DAY).passed
