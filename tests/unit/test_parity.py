"""Staging vs production parity: the comparison against the accepted differences (deploy/parity.yaml), and the
production gate it feeds (the real Rego policy behind the gatekeeper's handler, the probes replaced by facts)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from contracts.events import StagingVerification
from releasegate_platform import parity, parity_probes, regional
from releasegate_platform.catalog import Catalog
from releasegate_platform.parity import Accepted, Facts
from shop import build_bundles
from tests.support.gatekeeper import CONTENT_CHANGE, OUTSIDE_FREEZE, World, outcome

REPO = Path(__file__).resolve().parents[2]


def accepted(key: str, staging: str, production: str, services: list[str] | None = None) -> Accepted:
    return Accepted(
        key=key,
        staging=staging,
        production=production,
        reason="staging has no customers to shift gradually",
        accepted_by="team-storefront",
        accepted_on=date(2026, 12, 5),
        services=services or [],
    )


def facts(environment: str, **values: str) -> Facts:
    return Facts(environment, {k.replace("__", "."): v for k, v in values.items()})


class TestComparison:
    def test_identical_environments_have_no_difference(self):
        report = parity.compare(
            "shop", facts("staging", database__work_mem="4MB"), facts("production", database__work_mem="4MB"), []
        )
        assert report.differences == [] and not report.blocking and report.compared == 1

    def test_a_documented_difference_passes_with_its_reason_and_who_accepted_it(self):
        report = parity.compare(
            "shop",
            facts("staging", deployment__strategy="all-at-once"),
            facts("production", deployment__strategy="canary"),
            [accepted("deployment.strategy", "all-at-once", "canary")],
        )
        assert not report.blocking
        (difference,) = report.differences
        assert difference.status == "documented" and "team-storefront" in difference.sentence()

    def test_an_undocumented_difference_is_drift_named_with_both_values(self):
        report = parity.compare(
            "shop", facts("staging", database__work_mem="4MB"), facts("production", database__work_mem="64MB"), []
        )
        assert report.blocking
        (drift,) = report.as_input()["drift"]
        assert (
            drift["key"] == "database.work_mem" and "staging 4MB" in drift["msg"] and "production 64MB" in drift["msg"]
        )

    def test_an_accepted_difference_whose_values_changed_again_is_drift(self):
        report = parity.compare(
            "shop",
            facts("staging", deployment__strategy="all-at-once"),
            facts("production", deployment__strategy="rolling"),
            [accepted("deployment.strategy", "all-at-once", "canary")],
        )
        (drift,) = report.drift
        assert drift.status == "changed" and "was staging all-at-once, production canary" in drift.sentence()

    def test_an_accepted_list_of_values_documents_each_and_only_those(self):
        entry = accepted("deployment.strategy", "all-at-once", "canary").model_copy(
            update={"production": ["canary", "blue-green"]}
        )
        for strategy, documented in (("canary", True), ("blue-green", True), ("rolling", False)):
            report = parity.compare(
                "shop",
                facts("staging", deployment__strategy="all-at-once"),
                facts("production", deployment__strategy=strategy),
                [entry],
            )
            assert report.blocking is not documented
        assert "production canary or blue-green" in report.drift[0].sentence()

    def test_the_shipped_file_documents_every_rollout_strategy_the_catalog_allows(self):
        shipped = parity.load_accepted(REPO / "deploy" / "parity.yaml")
        for directory in [REPO / "catalog", *sorted(REPO.glob("examples/catalog-*"))]:
            entry = Catalog(directory).get("shop")
            staging, production = (
                Facts(env, parity_probes.deployment(entry, env)) for env in ("staging", "production")
            )
            assert not parity.compare("shop", staging, production, shipped).blocking, directory.name

    def test_a_fact_only_one_environment_has_is_a_difference(self):
        report = parity.compare("shop", facts("staging"), facts("production", security__control__waf="declared"), [])
        (drift,) = report.drift
        assert (drift.staging, drift.production) == (parity.ABSENT, "declared")

    def test_an_entry_for_another_service_does_not_document_this_ones_difference(self):
        report = parity.compare(
            "shop",
            facts("staging", database__work_mem="4MB"),
            facts("production", database__work_mem="64MB"),
            [accepted("database.work_mem", "4MB", "64MB", services=["billing"])],
        )
        assert [d.key for d in report.drift] == ["database.work_mem"]

    def test_a_probe_error_blocks_even_when_every_measured_fact_agrees(self):
        staging = Facts("staging", {"edge.cache": "none"}, ["database unreachable (ConnectionRefusedError)"])
        report = parity.compare("shop", staging, facts("production", edge__cache="none"), [])
        assert report.blocking and report.errors == ["staging: database unreachable (ConnectionRefusedError)"]

    def test_edge_settings_are_compared_only_when_both_environments_have_an_edge(self):
        staging = facts("staging", edge__cache="none")
        production = facts("production", edge__cache="varnish", edge__default_ttl="300")
        report = parity.compare("shop", staging, production, [accepted("edge.cache", "none", "varnish")])
        assert not report.blocking and [d.key for d in report.differences] == ["edge.cache"]
        both = parity.compare(
            "shop",
            facts("staging", edge__cache="varnish", edge__default_ttl="60"),
            facts("production", edge__cache="varnish", edge__default_ttl="300"),
            [],
        )
        assert [d.key for d in both.drift] == ["edge.default_ttl"]


class TestAcceptedDifferencesFile:
    def test_the_shipped_file_is_valid_and_documents_why_and_who(self):
        entries = parity.load_accepted(REPO / "deploy" / "parity.yaml")
        assert {e.key for e in entries} >= {"deployment.strategy", "security.control.waf"}
        assert all(e.reason and e.accepted_by for e in entries)

    @pytest.mark.parametrize(
        "document, problem",
        [
            (
                {"version": 1, "accepted": [{"key": "database.work_mem", "staging": "4MB", "production": "64MB"}]},
                "reason",
            ),
            ({"version": 2, "accepted": []}, "version"),
            (
                {
                    "version": 1,
                    "accepted": [
                        {
                            "key": "../etc",
                            "staging": "a",
                            "production": "b",
                            "reason": "x" * 20,
                            "accepted_by": "me",
                            "accepted_on": "2026-12-05",
                        }
                    ],
                },
                "key",
            ),
            ("just a string", "parity.yaml is invalid"),
        ],
    )
    def test_an_invalid_file_is_refused_naming_what_is_wrong(self, document, problem):
        with pytest.raises(parity.ParityFileError, match=problem):
            parity.parse_accepted(document)

    def test_the_same_key_accepted_twice_is_refused(self):
        entry = accepted("edge.cache", "none", "varnish").model_dump(mode="json")
        with pytest.raises(parity.ParityFileError, match="twice"):
            parity.parse_accepted({"version": 1, "accepted": [entry, entry]})

    def test_an_unreadable_file_is_an_error_not_an_empty_list(self, tmp_path):
        (tmp_path / "parity.yaml").write_text("accepted: [unclosed")
        with pytest.raises(parity.ParityFileError, match="cannot read"):
            parity.load_accepted(tmp_path / "parity.yaml")


class TestProductionGate:
    """The handler asks its parity port for a production gate and the policy judges the report."""

    def _production(self, world: World):
        req = world.request(CONTENT_CHANGE, "production")
        verified = StagingVerification(
            release_id=req.release_id, digest=req.digest, step_id="verify-staging", verified_at=world.now
        )
        return req.model_copy(update={"staging_verified": verified})

    def test_documented_differences_let_the_production_gate_pass(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        world.parity.staging = facts("staging", deployment__strategy="all-at-once")
        world.parity.production = facts("production", deployment__strategy="canary")
        world.parity.accepted = [accepted("deployment.strategy", "all-at-once", "canary")]
        reply = world.decide(self._production(world))
        assert reply.decision == "pass", reply.checks
        assert outcome(reply, "parity") == "pass"

    def test_undocumented_drift_blocks_the_production_gate_naming_the_difference(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        world.parity.staging = facts("staging", kafka__shop__events__retention__ms="604800000")
        world.parity.production = facts("production", kafka__shop__events__retention__ms="86400000")
        reply = world.decide(self._production(world))
        assert reply.decision == "block" and outcome(reply, "parity") == "deny"
        reason = next(c.reason for c in reply.checks if c.name == "parity")
        assert "kafka.shop.events.retention.ms" in reason and "86400000" in reason

    def test_a_failed_probe_blocks_the_production_gate_with_its_reason(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        world.parity.production = Facts("production", {}, ["database unreachable (ConnectionRefusedError)"])
        reply = world.decide(self._production(world))
        assert reply.decision == "block"
        assert "database unreachable" in next(c.reason for c in reply.checks if c.name == "parity")

    def test_the_staging_gate_does_not_measure_parity(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        world.parity.production = Facts("production", {}, ["would block"])
        reply = world.decide(world.request(CONTENT_CHANGE, "staging"))
        assert reply.decision == "pass" and world.parity.regional == []


class TestFileProbes:
    """The probes that read files and the bundle: no guessing when something is missing or broken."""

    def test_the_edge_is_none_where_no_varnish_configuration_exists(self, tmp_path):
        assert parity_probes.edge(tmp_path, "production") == ({"edge.cache": "none"}, None)

    def test_production_has_the_varnish_edge_with_its_settings(self, tmp_path):
        (tmp_path / "varnish.params").write_text("# settings\nEDGE_STORAGE=malloc,64m\nEDGE_DEFAULT_TTL=300\n")
        values, error = parity_probes.edge(tmp_path, "production")
        assert error is None and values == {
            "edge.cache": "varnish",
            "edge.storage": "malloc,64m",
            "edge.default_ttl": "300",
        }
        assert parity_probes.edge(tmp_path, "staging")[0] == {"edge.cache": "none"}

    def test_security_controls_come_from_each_environment_manifest(self):
        staging, _ = parity_probes.security_controls(REPO / "deploy" / "environments", "staging")
        production, _ = parity_probes.security_controls(REPO / "deploy" / "environments", "production")
        assert "security.control.waf" in production and "security.control.waf" not in staging

    def test_a_broken_manifest_is_an_error_not_an_empty_list(self, tmp_path):
        (tmp_path / "staging.yaml").write_text("controls: [tls\n")
        values, error = parity_probes.security_controls(tmp_path, "staging")
        assert values == {} and error is not None and "staging.yaml" in error

    def test_integration_contracts_come_from_the_bundles_regional_configuration(self):
        loaded = regional.load(build_bundles.bundle_files("v1"))
        values, error = parity_probes.integrations(loaded, "staging")
        assert error is None and values["integration.us.tax.contract"] == "salestax-7"
        assert "feature.eu.express_checkout" in values and not any("endpoint" in k for k in values)

    def test_a_bundle_without_the_environments_configuration_or_with_a_refused_one_is_an_error(self):
        files = build_bundles.bundle_files("v1")
        del files["config/regions/staging.yaml"]
        assert "no regional configuration for staging" in str(
            parity_probes.integrations(regional.load(files), "staging")[1]
        )
        files["config/regions/staging.yaml"] = b"apiVersion: releasegate.dev/v1\ntoken: abcdefgh\n"
        assert "regional configuration refused" in str(parity_probes.integrations(regional.load(files), "staging")[1])

    def test_staging_is_deployed_whole_and_production_by_the_catalogs_strategy(self):
        shop = Catalog(REPO / "catalog").get("shop")
        assert parity_probes.deployment(shop, "staging")["deployment.strategy"] == "all-at-once"
        assert parity_probes.deployment(shop, "production") == {
            "deployment.target": "local",
            "deployment.strategy": "canary",
        }
