"""The coordinator saga's test helpers: a candidate, the result a worker would send for the awaited step, signed
operator commands, walking a saga to a step. Shared by tests/unit/test_saga.py, test_step_grants.py and
test_operator_commands.py."""

from datetime import UTC, datetime
from pathlib import Path

from contracts.events import (
    CandidateSubmitted,
    CheckResult,
    DeployFinished,
    DRCheckFinished,
    GateCheckFinished,
    KpiResult,
    ObservedState,
    Verdict,
    VerificationFinished,
)
from releasegate_platform import identity
from releasegate_platform.catalog import Catalog
from services.coordinator import control
from services.coordinator import saga as domain

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]
SHOP = Catalog(REPO / "catalog").get("shop")
# The demo people (alice, bob: shop-approvers; carol: also release-managers; dave: release-managers; dev: the
# author of the demo changes) sign with their demo keys, checked as the coordinator checks them.
PEOPLE = identity.Identities.load(REPO / "policies" / "identities.yaml")
KEYS = REPO / "examples" / "keys"
# The saga's walk, answered by the core verifier alone; TestRequiredAndAdvisoryVerifiers adds the team verifiers.
ENTRY = SHOP.model_copy(update={"verification": SHOP.verification.model_copy(update={"by_environment": {}})})
DIGEST = "sha256:" + "a" * 64


def candidate(**over) -> CandidateSubmitted:
    data = {
        "release_id": "rel-1",
        "service": "shop",
        "version": "v2",
        "artifact": {"digest": DIGEST, "uri": "store://x"},
        "source": {"repository": "r", "ref": "refs/heads/main", "commit": "c" * 40},
        "tests": {"passed": 3, "failed": 0},
        "author": "dev@shop",
    }
    return CandidateSubmitted.model_validate({**data, **over})


def answer(saga: domain.Saga, ok: bool = True, verdict: Verdict = Verdict.PASS):
    """The result a worker would send for the step the saga waits for."""
    step = saga.current
    rid, sid = saga.release_id, saga.waiting_for
    if step.kind == "gate":
        return GateCheckFinished(
            release_id=rid,
            step_id=sid,
            environment=step.environment,
            passed=ok,
            checks=[CheckResult(name="tests_passed", passed=ok, reason="r")],
        )
    if step.kind == "dr":
        evidence = {"backup_id": 7, "taken_at": NOW.isoformat()} if step.dr_action == "backup-point" else {}
        return DRCheckFinished(
            release_id=rid,
            step_id=sid,
            ready=ok,
            checks=[CheckResult(name="backup_freshness", passed=ok, reason="r", evidence=evidence)],
        )
    if step.kind == "deploy":
        return DeployFinished(
            release_id=rid,
            step_id=sid,
            environment=step.environment,
            succeeded=ok,
            reason="r",
            observed=ObservedState(weights={"v2": step.weight}, stable_version="v1"),
        )
    return VerificationFinished(
        release_id=rid,
        step_id=sid,
        environment=step.environment,
        verdict=verdict,
        reason="r",
        window_start=NOW,
        window_end=NOW,
        verifier="business-kpis",
        kpis=[
            KpiResult(
                name="checkout_success_rate",
                candidate=0.5,
                baseline=0.98,
                candidate_samples=30,
                baseline_samples=200,
                verdict=verdict,
                rule="candidate >= 0.85",
            )
        ],
    )


def signed(command, *, at: datetime = NOW, key: str | None = None):
    """`command` signed at `at` with its actor's demo key (or `key`'s)."""
    return identity.sign_command(KEYS / f"{key or command.actor}.key", command, now=at)


def operate(saga: domain.Saga, command, now: datetime = NOW, *, replayed: bool = False) -> domain.Decision:
    """What the saga decides on an operator command (sign it first with `signed`), its signature checked
    against the identities file as the coordinator checks it."""
    return domain.handle(saga, command, now, signer=control.signer(PEOPLE, command), replayed=replayed)


def run_until(saga: domain.Saga, step_id: str) -> domain.Saga:
    while saga.waiting_for != step_id:
        saga = domain.handle(saga, answer(saga), NOW).saga
    return saga


def gate_wait(saga: domain.Saga, *, rule: str = "approvals", retry_at=None) -> GateCheckFinished:
    return GateCheckFinished(
        release_id=saga.release_id,
        step_id=saga.waiting_for,
        environment="production",
        passed=False,
        decision="wait",
        risk="high",
        policy_version="v1",
        waiting_for=["high risk: needs 2 approvals from shop-approvers, has 0"],
        checks=[CheckResult(name=rule, passed=False, reason="waiting", evidence={"outcome": "wait"})],
        retry_at=retry_at,
    )


MIGRATIONS = [{"name": "0003_backfill.sql", "kind": "expand", "rewrites_data": True}]


def with_migrations(migrations=MIGRATIONS, entry=ENTRY):
    saga = domain.start(candidate(), entry, NOW, {}).saga
    gate = GateCheckFinished(
        release_id="rel-1",
        step_id="gate-staging",
        environment="staging",
        passed=True,
        decision="pass",
        checks=[],
        requires=["dr-check"],
        migrations=migrations,
    )
    return domain.handle(saga, gate, NOW).saga
