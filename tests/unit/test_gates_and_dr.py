"""Gate checks and DR readiness rules."""
from datetime import UTC, datetime, timedelta

from contracts.events import GateCheckRequested
from services.dr_checker.domain import Backup, backup_freshness
from services.gatekeeper.domain import Facts, evaluate

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def request(env="staging", failed=0):
    return GateCheckRequested(release_id="r", step_id="gate", service="shop", version="v2",
                              digest="sha256:" + "c" * 64, environment=env, tests={"passed": 10, "failed": failed})


OK = Facts(artifact_error=None, catalog_error=None, environments=("staging", "production"), passed_staging=True)


class TestGateChecks:
    def test_all_checks_pass_for_a_good_candidate(self):
        assert all(c.passed for c in evaluate(request("production"), OK))

    def test_failed_upstream_tests_block_with_counts(self):
        tests = next(c for c in evaluate(request(failed=2), OK) if c.name == "tests_passed")
        assert not tests.passed and "2 failed" in tests.reason

    def test_missing_artifact_blocks_with_the_store_reason(self):
        facts = Facts("artifact sha256:cc is not in the store", None, ("staging",), False)
        check = evaluate(request(), facts)[0]
        assert not check.passed and "not in the store" in check.reason

    def test_production_needs_a_digest_that_passed_staging(self):
        facts = Facts(None, None, ("staging", "production"), passed_staging=False)
        check = next(c for c in evaluate(request("production"), facts) if c.name == "passed_staging")
        assert not check.passed

    def test_unknown_service_blocks(self):
        check = evaluate(request(), Facts(None, "unknown service 'shop'", (), False))[1]
        assert not check.passed and "unknown service" in check.reason


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
