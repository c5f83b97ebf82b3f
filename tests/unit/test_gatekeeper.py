"""The gatekeeper's pure parts: what a candidate changes relative to production, and how policy results become
the per-rule checks of a decision."""

from __future__ import annotations

from pathlib import Path

from services.gatekeeper.adapters import bundles
from services.gatekeeper.domain import PolicyResult, checks_from, environment_controls

DOMAINS = {
    "payment": ["storefront/payments.py"],
    "content": ["storefront/catalog.py", "bundle.json"],
    "schema": ["migrations/*"],
}
OLD = {"bundle.json": b'{"version": "v1"}', "storefront/payments.py": b"a\nb\n", "storefront/catalog.py": b"x\n"}


class TestChangeClassification:
    def test_a_content_only_change_has_only_the_content_domain(self):
        new = {**OLD, "bundle.json": b'{"version": "v2"}', "storefront/catalog.py": b"x\ny\n"}
        change = bundles.change(OLD, new, DOMAINS, [])
        assert change.domains == ("content",) and change.unclassified == ()
        assert change.lines_changed == 3 and change.paths == ("bundle.json", "storefront/catalog.py")

    def test_a_payment_change_takes_the_payment_domain(self):
        change = bundles.change(OLD, {**OLD, "storefront/payments.py": b"a\nc\n"}, DOMAINS, [])
        assert change.domains == ("payment",) and change.lines_changed == 2

    def test_files_matching_no_domain_are_unclassified(self):
        change = bundles.change(OLD, {**OLD, "storefront/new.py": b"n\n"}, DOMAINS, [])
        assert change.unclassified == ("storefront/new.py",)

    def test_service_wide_domains_always_apply(self):
        assert "erp-sync" in bundles.change(OLD, OLD, DOMAINS, ["erp-sync"]).domains

    def test_without_a_production_bundle_everything_is_new(self):
        assert bundles.change(None, OLD, DOMAINS, []).paths == tuple(sorted(OLD))

    def test_migrations_are_read_in_file_name_order(self):
        files = {"migrations/0002_b.sql": b"B", "migrations/0001_a.sql": b"A", "migrations/readme.md": b""}
        assert list(bundles.migrations(files).items()) == [("0001_a.sql", "A"), ("0002_b.sql", "B")]


class TestChecksFromPolicy:
    def test_each_rule_becomes_one_check_with_its_outcome(self):
        result = PolicyResult(
            deny=[{"rule": "signed_provenance", "msg": "the artifact is unsigned"}],
            wait=[{"rule": "approvals", "msg": "needs 2 approvals"}],
            warn=[],
            risk="high",
            risk_reasons=[],
            required_approvals=2,
            approvers=[],
            exceptions=[],
            refused=[],
            rules={"signed_provenance": "signed", "approvals": "approved", "tests_passed": "ok"},
        )
        checks = {c.name: c for c in checks_from(result)}
        assert result.decision == "block"
        assert (
            not checks["signed_provenance"].passed and checks["signed_provenance"].reason == "the artifact is unsigned"
        )
        assert checks["approvals"].evidence == {"outcome": "wait"}
        assert checks["tests_passed"].passed and checks["tests_passed"].reason == "ok"


class TestEnvironmentManifests:
    def test_controls_come_from_the_environment_manifest(self):
        root = Path(__file__).resolve().parents[2] / "deploy" / "environments"
        assert "waf" in environment_controls(root, "production")
        assert "waf" not in environment_controls(root, "staging")

    def test_an_environment_without_a_manifest_declares_nothing(self, tmp_path):
        assert environment_controls(tmp_path, "production") == []
