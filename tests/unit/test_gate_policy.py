"""The Rego gate policy, case by case: each YAML file in policies/tests/ overrides a passing base input and states
the outcome (decision, risk, which rules deny, wait or warn, and what their messages mention)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.gatekeeper.policy import Policy

POLICIES = Path(__file__).resolve().parents[2] / "policies"
BASE = yaml.safe_load((POLICIES / "tests" / "base-input.yaml").read_text())


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _cases() -> list[Any]:
    cases = []
    for path in sorted((POLICIES / "tests").glob("*.yaml")):
        if path.name == "base-input.yaml":
            continue
        for case in yaml.safe_load(path.read_text()):
            cases.append(pytest.param(case, id=f"{path.stem}: {case['name']}"))
    return cases


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy(POLICIES)


@pytest.mark.parametrize("case", _cases())
def test_policy_case(policy: Policy, case: dict[str, Any]) -> None:
    result = policy.evaluate(_merge(BASE, case.get("input", {})))
    expect = case["expect"]
    deny = {d["rule"] for d in result.deny}
    wait = {w["rule"] for w in result.wait}
    assert deny == set(expect.get("deny", [])), result.deny
    if "deny" in expect or "decision" in expect:
        assert wait == set(expect.get("wait", [])) or deny, result.wait
    if "wait" in expect:
        assert wait == set(expect["wait"]), result.wait
    if "decision" in expect:
        assert result.decision == expect["decision"], (result.deny, result.wait)
    if "risk" in expect:
        assert result.risk == expect["risk"], result.risk_reasons
    for rule in expect.get("warn", []):
        assert rule in {w["rule"] for w in result.warn}, result.warn
    if "requires" in expect:
        assert result.requires == expect["requires"]
    for text in expect.get("deny_mentions", []):
        assert any(text in d["msg"] for d in result.deny), result.deny
    for text in expect.get("refused_mentions", []):
        assert any(r.startswith(text) or text in r for r in result.refused), result.refused


class TestPolicyMetadata:
    def test_every_rule_has_a_sentence_and_every_result_names_a_known_rule(self, policy: Policy) -> None:
        noisy = _merge(
            BASE,
            {
                "tests": {"failed": 1},
                "staging": {"verified": False},
                "change": {"domains": ["checkout"]},
                "timing": {
                    "frozen": True,
                    "freeze_name": "bf",
                    "frozen_domains": ["checkout"],
                    "inside_business_hours": False,
                    "business_hours_reason": "closed",
                },
            },
        )
        result = policy.evaluate(noisy)
        assert result.rules and all(result.rules.values())
        assert {e["rule"] for e in result.deny + result.wait + result.warn} <= set(result.rules)

    def test_version_changes_when_a_policy_file_changes(self, tmp_path: Path) -> None:
        import shutil

        shutil.copytree(POLICIES, tmp_path / "p")
        before = Policy(tmp_path / "p").version
        (tmp_path / "p" / "data.yaml").write_text((tmp_path / "p" / "data.yaml").read_text().replace("400", "401"))
        assert Policy(tmp_path / "p").version != before
