"""The gatekeeper's own model: its errors, what the policy concludes, how that becomes the per-rule checks of a
decision, the decision it stores, and which published environment state it keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from contracts.events import CheckResult, EnvironmentState
from contracts.names import clip


class GateError(Exception):
    """Base error of the gatekeeper."""


class BundleUnreadable(GateError):
    """An artifact that is missing, does not match its digest, or is not a bundle the deployer would unpack: a
    fact the policy judges (`artifact_digest`), not a broken gatekeeper."""


@dataclass(frozen=True)
class GateDecision:
    """One decision as stored for audit: the policy's version, its whole input and digest, each rule's result."""

    request_id: str
    release_id: str
    step_id: str
    environment: str
    decision: str
    risk: str
    policy_version: str
    input_digest: str
    input: dict[str, Any]
    rules: list[dict[str, Any]]
    warnings: list[str]
    refused: list[str]


def supersedes(incoming: EnvironmentState, kept: EnvironmentState | None) -> bool:
    """Whether a published environment state replaces the one kept: only a newer one does (states may arrive
    twice, or an old one after a new one when a topic is re-read)."""
    return kept is None or incoming.sequence > kept.sequence


@dataclass(frozen=True)
class PolicyResult:
    """What the gate policy concluded: deny/wait/warn messages per rule, the risk class and what it requires."""

    deny: list[dict[str, str]]
    wait: list[dict[str, str]]
    warn: list[dict[str, str]]
    risk: str
    risk_reasons: list[str]
    required_approvals: int
    approvers: list[str]
    exceptions: list[str]
    refused: list[str]
    rules: dict[str, str] = field(default_factory=dict)
    requires: list[str] = field(default_factory=list)

    @property
    def decision(self) -> str:
        return "block" if self.deny else "wait" if self.wait else "pass"

    def messages(self, rule: str) -> tuple[list[str], list[str]]:
        """Deny and wait messages of one rule."""
        return ([d["msg"] for d in self.deny if d["rule"] == rule], [w["msg"] for w in self.wait if w["rule"] == rule])


def checks_from(result: PolicyResult) -> list[CheckResult]:
    """One check per policy rule: failed with the deny reasons, waiting with the wait reasons, else passed with
    the rule's own sentence."""
    checks = []
    for rule, sentence in sorted(result.rules.items()):
        denied, waiting = result.messages(rule)
        if denied:
            checks.append(
                CheckResult(name=rule, passed=False, reason=clip("; ".join(denied)), evidence={"outcome": "deny"})
            )
        elif waiting:
            checks.append(
                CheckResult(name=rule, passed=False, reason=clip("; ".join(waiting)), evidence={"outcome": "wait"})
            )
        else:
            checks.append(CheckResult(name=rule, passed=True, reason=sentence, evidence={"outcome": "pass"}))
    return checks


def environment_controls(directory: Path, environment: str) -> list[str]:
    """Security controls an environment's manifest declares; none when it has no manifest."""
    path = directory / f"{environment}.yaml"
    if not path.is_file():
        return []
    try:
        manifest = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise GateError(f"environment manifest {path.name} is not valid YAML: {exc}") from None
    return [str(c) for c in manifest.get("controls", [])]
