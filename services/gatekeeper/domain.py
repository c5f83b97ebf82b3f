"""Gate checks as pure functions over what the gatekeeper knows about a candidate."""
from __future__ import annotations

from dataclasses import dataclass

from contracts.events import CheckResult, GateCheckRequested


class GateError(Exception):
    """Base error of the gatekeeper."""


@dataclass(frozen=True)
class Facts:
    """What the adapters found out; the checks only judge."""

    artifact_error: str | None
    catalog_error: str | None
    environments: tuple[str, ...]
    passed_staging: bool


def evaluate(req: GateCheckRequested, facts: Facts) -> list[CheckResult]:
    checks = [
        CheckResult(name="artifact_by_digest_in_store", passed=facts.artifact_error is None,
                    reason=facts.artifact_error or f"{req.digest} present in the store and its content matches",
                    evidence={"digest": req.digest}),
        CheckResult(name="catalog_entry", passed=facts.catalog_error is None
                    and req.environment in facts.environments,
                    reason=facts.catalog_error or (
                        f"{req.service} is in the catalog and deploys to {req.environment}"
                        if req.environment in facts.environments
                        else f"{req.service} has no {req.environment} environment in the catalog")),
        CheckResult(name="tests_passed", passed=req.tests.failed == 0 and req.tests.passed > 0,
                    reason=(f"{req.tests.passed} tests passed, none failed in {req.tests.suite}"
                            if req.tests.failed == 0 and req.tests.passed > 0
                            else f"upstream tests: {req.tests.passed} passed, {req.tests.failed} failed"),
                    evidence=req.tests.model_dump()),
    ]
    if req.environment == "production":
        checks.append(CheckResult(
            name="passed_staging", passed=facts.passed_staging,
            reason=("this digest passed staging verification" if facts.passed_staging
                    else "production only takes a digest that already passed staging verification")))
    return checks
