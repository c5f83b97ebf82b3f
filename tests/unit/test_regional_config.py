"""Regional configuration as a versioned asset: the schema, the secret check (hostile inputs), the diff between a
candidate and production, and the gate that refuses a secret-bearing or invalid configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from releasegate_platform import regional
from releasegate_platform.explain import explain_release
from shop import build_bundles
from tests.support.gatekeeper import (
    CONTENT_CHANGE,
    OUTSIDE_FREEZE,
    STABLE_DIGEST,
    STABLE_FILES,
    World,
    outcome,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "shop" / "bundle_src" / "config" / "regions"
SECRET_VALUE = "hunter2-Zq8vX3pL9wK2mN7r"


def document(environment: str = "production") -> dict:
    return yaml.safe_load((SHIPPED / f"{environment}.yaml").read_text())


def encoded(doc: dict) -> bytes:
    return yaml.safe_dump(doc).encode()


def problems_of(doc: dict | bytes, name: str = "config/regions/production.yaml") -> list[str]:
    return regional.load({name: doc if isinstance(doc, bytes) else encoded(doc)}).problems


class TestSchema:
    def test_the_shipped_configurations_are_valid_for_staging_and_production(self):
        loaded = regional.load(build_bundles.bundle_files("v1"))
        assert loaded.problems == [] and set(loaded.configs) == {"staging", "production"}
        assert loaded.configs["staging"].regions["eu"].payment.sandbox

    def test_every_version_of_the_shop_ships_the_same_regional_configuration(self):
        configs = {v: regional.load(build_bundles.bundle_files(v)).configs for v in build_bundles.LINEAGE}
        assert all(c == configs["v1"] for c in configs.values())

    def test_a_missing_integration_is_refused_naming_where(self):
        doc = document()
        del doc["regions"]["eu"]["tax"]
        (problem,) = problems_of(doc)
        assert "regions.eu.tax" in problem and "Field required" in problem

    def test_a_file_that_names_another_environment_than_its_own_is_refused(self):
        (problem,) = problems_of(encoded(document("staging")), "config/regions/production.yaml")
        assert "declares environment 'staging'" in problem

    def test_a_bad_contract_version_or_endpoint_is_refused(self):
        doc = document()
        doc["regions"]["eu"]["payment"]["contract"] = "2.4; DROP"
        doc["regions"]["us"]["tax"]["endpoint"] = "ftp://tax.example/us"
        (problem,) = problems_of(doc)
        assert "regions.eu.payment.contract" in problem and "regions.us.tax.endpoint" in problem

    def test_the_published_json_schema_is_the_one_the_code_validates_with(self):
        published = json.loads((REPO / "docs" / "schemas" / "regional-config.json").read_text())
        assert published == regional.json_schema(), "regenerate: python -m releasegate_platform.regional"


class TestSecrets:
    @pytest.mark.parametrize(
        "path, value, why",
        [
            (("eu", "payment", "credentials"), SECRET_VALUE, "regions.eu.payment.credentials"),
            (("eu", "features", "api_key"), SECRET_VALUE, "regions.eu.features.api_key holds a literal value"),
            (("eu", "features", "db_password"), "x", "regions.eu.features.db_password holds a literal value"),
            (("eu", "tax", "endpoint"), f"https://shop:{SECRET_VALUE}@tax.example/eu", "URL with credentials"),
            (("us", "features", "banner"), "sk_live_51HxYzAbCdEfGhIjKlMn", "shape of a credential"),
            (("us", "features", "banner"), "AKIAIOSFODNN7EXAMPLE", "shape of a credential"),
            (("us", "features", "note"), "Zk3q9LmX2pR8vT4wY7bN1cD6fH0jK5s", "high entropy"),
            (("us", "features", "key"), "-----BEGIN RSA PRIVATE KEY-----\nMIIE", "shape of a credential"),
        ],
    )
    def test_a_secret_value_is_refused_naming_its_key_path_never_the_value(self, path, value, why):
        doc = document()
        doc["regions"][path[0]][path[1]][path[2]] = value
        problems = problems_of(doc)
        assert problems and why in problems[0]
        assert value not in problems[0] and value.split("\n")[0] not in json.dumps(problems)

    def test_a_secret_in_a_list_or_an_unknown_key_is_found_too(self):
        doc = document()
        doc["extra"] = [{"token": SECRET_VALUE}]
        (problem,) = problems_of(doc)
        assert "extra[0].token" in problem and SECRET_VALUE not in problem

    @pytest.mark.parametrize(
        "ref, allowed",
        [
            ("secret://vault/shop/production/payments-eu", True),
            ("file:shop/fulfilment-eu.token", True),
            ("secret://vault/../root", False),
            ("file:../../etc/shadow", False),
            ("file:/etc/shadow", False),
            ("secret://vault", False),
            ("secret://vault//x", False),
        ],
    )
    def test_only_references_into_a_secret_store_are_references(self, ref, allowed):
        assert regional.is_secret_ref(ref) is allowed
        doc = document()
        doc["regions"]["eu"]["payment"]["credentials"] = ref
        assert (problems_of(doc) == []) is allowed


class TestHostileFiles:
    @pytest.mark.parametrize(
        "name",
        ["config/regions/../../etc/production.yaml", "config/regions/Production.yaml", "config/regions/eu/x.yaml"],
    )
    def test_a_file_not_named_config_regions_environment_yaml_is_refused(self, name):
        (problem,) = problems_of(encoded(document()), name)
        assert "not a regional configuration name" in problem

    def test_a_huge_file_is_refused_before_it_is_parsed(self):
        (problem,) = problems_of(b"# " + b"x" * (regional.MAX_FILE_BYTES + 1))
        assert "more than the" in problem

    def test_a_yaml_alias_bomb_is_refused_not_expanded(self):
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
        (problem,) = problems_of("\n".join(lines).encode())
        assert "more than" in problem and "values" in problem

    def test_a_file_that_is_not_utf8_yaml_is_refused(self):
        (problem,) = problems_of(b"\xff\xfe: [")
        assert "not UTF-8 YAML" in problem


class TestDiff:
    def test_the_candidate_diff_names_keys_added_removed_and_changed_hiding_secret_refs(self):
        before = document()
        after = document()
        after["regions"]["eu"]["payment"]["contract"] = "2.5"
        after["regions"]["eu"]["payment"]["credentials"] = "secret://vault/shop/production/payments-eu-2"
        after["regions"]["eu"]["features"]["gift_wrap"] = True
        del after["regions"]["us"]["features"]["express_checkout"]
        name = "config/regions/production.yaml"
        changes = regional.diff(regional.load({name: encoded(before)}), regional.load({name: encoded(after)}))
        lines = regional.describe_diff(changes)
        assert "production: ~ eu.payment.contract: 2.4 → 2.5" in lines
        assert "production: + eu.features.gift_wrap = true" in lines
        assert "production: - us.features.express_checkout (was true)" in lines
        assert "production: ~ eu.payment.credentials now names another secret" in lines
        assert "payments-eu-2" not in json.dumps(changes)

    def test_identical_configurations_have_no_diff(self):
        files = build_bundles.bundle_files("v1")
        assert regional.diff(regional.load(files), regional.load(files)) == {}


class TestGate:
    def test_a_candidate_with_a_secret_value_is_blocked_at_the_staging_gate_without_echoing_it(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        doc = document("staging")
        doc["regions"]["eu"]["payment"]["api_key"] = SECRET_VALUE
        reply = world.decide(world.request({**CONTENT_CHANGE, "config/regions/staging.yaml": encoded(doc)}))
        assert reply.decision == "block" and outcome(reply, "regional_config") == "deny"
        reason = next(c.reason for c in reply.checks if c.name == "regional_config")
        assert "regions.eu.payment.api_key" in reason
        (stored,) = world.store.decisions.values()
        assert SECRET_VALUE not in json.dumps(stored.input) and SECRET_VALUE not in reply.model_dump_json()

    def test_the_regional_diff_against_production_is_recorded_with_the_change(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        name = "config/regions/production.yaml"
        stable = {**STABLE_FILES, name: encoded(document())}
        world.bundles.bundles[STABLE_DIGEST] = stable  # what production runs
        changed = document()
        changed["regions"]["us"]["tax"]["contract"] = "salestax-8"
        reply = world.decide(world.request({**stable, name: encoded(changed)}))
        assert outcome(reply, "regional_config") == "pass"
        (stored,) = world.store.decisions.values()
        (item,) = stored.input["change"]["regional"]["production"]["changed"]
        assert item == {"key": "us.tax.contract", "from": "salestax-7", "to": "salestax-8"}


class TestExplain:
    def test_explain_shows_the_regional_diff_of_a_gate_decision_without_secret_refs(self):
        release = {"release_id": "shop-v3-1", "service": "shop", "version": "v3", "state": "promoted"}
        change = {
            "files_changed": 1,
            "lines_changed": 2,
            "baseline_version": "v2",
            "domains": [],
            "regional": {
                "production": {
                    "added": [{"key": "eu.features.gift_wrap", "value": "true"}],
                    "removed": [],
                    "changed": [
                        {"key": "us.tax.contract", "from": "salestax-7", "to": "salestax-8"},
                        {"key": "eu.payment.credentials", "from": "(secret reference)", "to": "(secret reference)"},
                    ],
                }
            },
        }
        decision = {
            "step_id": "gate-production",
            "environment": "production",
            "decision": "pass",
            "risk": "low",
            "policy_version": "v2",
            "input_digest": "sha256:" + "f" * 64,
            "decided_at": "2026-12-05T10:00:00",
            "change": change,
            "rules": [],
        }
        text = "\n".join(explain_release(release, [decision]))
        assert "production: ~ us.tax.contract: salestax-7 → salestax-8" in text
        assert "production: + eu.features.gift_wrap = true" in text
        assert "eu.payment.credentials now names another secret" in text
