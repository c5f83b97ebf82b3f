"""What a saga does with its steps' results: gate and DR checks, deploys, verdicts of the required and advisory
verifiers, and the results of its compensations. Pure."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from contracts import topics
from contracts.events import (
    DeployAction,
    DeployFinished,
    DRCheckFinished,
    GateCheckFinished,
    ReleaseState,
    RollbackFinished,
    Severity,
    Verdict,
    VerificationFinished,
)
from services.coordinator import compensation
from services.coordinator.model import (
    StagingVerdict,
    Step,
    VerdictRecord,
)
from services.coordinator.movement import (
    Decision,
    advance,
    alert,
    expected_verifiers,
    fail,
    finish,
    issue_current,
    liveness,
    missing_verdicts,
    next_compensation,
)
from services.coordinator.plans._steps import shift, verify


def on_step_result(d: Decision, event: Any, now: datetime) -> None:
    s = d.saga
    if s.state is not ReleaseState.RUNNING or s.waiting_for != event.step_id:
        d.ignored = f"result for {event.step_id} not awaited (release {s.state.value}, awaiting {s.waiting_for})"
        return
    step = s.current
    assert step is not None
    if isinstance(event, VerificationFinished):
        _on_verdict(d, event, now)
        return
    d.clear_deadline = True
    evidence: dict[str, Any]
    match event:
        case GateCheckFinished() if event.decision == "wait":
            _on_gate_wait(d, event, now)
        case GateCheckFinished() | DRCheckFinished():
            evidence = {"checks": [c.model_dump(mode="json") for c in event.checks]}
            if isinstance(event, GateCheckFinished):
                evidence |= _gate_evidence(event)
                if event.passed:
                    _insert_required_steps(d, event)
            ok = event.passed if isinstance(event, GateCheckFinished) else event.ready
            if ok:
                if isinstance(event, DRCheckFinished) and step.dr_action == "backup-point":
                    s.backup_point = event.checks[0].evidence | {"release_id": s.release_id}
                    s.backup = event.backup_point
                elif isinstance(event, DRCheckFinished):
                    s.dr_report = [c.model_dump(mode="json") for c in event.checks]
                d.note(f"{step.id} passed: all {len(event.checks)} checks passed", evidence=evidence)
                advance(d, now)
            else:
                failed = "; ".join(f"{c.name}: {c.reason}" for c in event.checks if not c.passed)
                if (
                    isinstance(event, DRCheckFinished)
                    and step.dr_action == "backup-point"
                    and all(c.evidence.get("outcome") == "wait" for c in event.checks if not c.passed)
                ):
                    # nothing is wrong with the candidate, but a restore could not replay every order (the
                    # business events' retention): hold before production changes, resume re-takes the point
                    s.state = ReleaseState.PAUSED
                    d.note(
                        f"{step.id} waiting: {failed}; paused until this is fixed (resume takes the backup "
                        "point again, abort ends the release)",
                        evidence=evidence,
                    )
                    d.commands.append((topics.ALERTS, alert(s, Severity.WARNING, "release waiting", failed)))
                    return
                fail(d, f"{step.id} failed: {failed}", now, evidence=evidence, rejected=True)
        case DeployFinished():
            evidence = {"observed": event.observed.model_dump(mode="json") if event.observed else None}
            if event.succeeded:
                if event.observed and event.observed.stable_version:
                    s.stable[event.environment] = event.observed.stable_version
                if step.action is DeployAction.FINALIZE:
                    s.stable[event.environment] = s.version
                if step.action is DeployAction.MIGRATE and event.environment not in s.migrated:
                    s.migrated.append(event.environment)
                d.note(f"{step.id} done: {event.reason}", evidence=evidence)
                advance(d, now)
            else:
                fail(d, f"{step.id} failed: {event.reason}", now, evidence=evidence)


def _on_verdict(d: Decision, event: VerificationFinished, now: datetime) -> None:
    """Every required verifier must answer; any required fail fails the step, advisory verdicts are recorded."""
    s = d.saga
    step = s.current
    assert step is not None
    required, advisory = expected_verifiers(s, step)
    evidence: dict[str, Any] = {
        "verdict": event.verdict.value,
        "kpis": [k.model_dump(mode="json") for k in event.kpis],
        "window": [event.window_start.isoformat(), event.window_end.isoformat()],
        "verifier": event.verifier,
    }
    if event.verifier not in required | advisory:
        d.note(
            f"verdict of {event.verifier} on {step.id} refused: not a required or advisory verifier of "
            f"{s.service} in {step.environment}",
            actor=event.verifier,
            evidence=evidence,
        )
        return
    # registration, not liveness: under a backlog the verifier's newer heartbeats may wait behind its verdict
    registered = d.registered
    if registered is not None and not registered.get(event.verifier, set()) & {s.service, "*"}:
        d.note(
            f"verdict of {event.verifier} on {step.id} refused: {event.verifier} is not registered for {s.service}",
            actor=event.verifier,
            evidence=evidence,
        )
        return
    verdicts = s.verdicts.setdefault(step.id, {})
    needs = [k.needs_seconds for k in event.kpis if k.needs_seconds is not None]
    verdicts[event.verifier] = VerdictRecord(
        verdict=event.verdict.value, reason=event.reason, needs_seconds=max(needs) if needs else None
    )
    if event.verifier in advisory and event.verifier not in required:
        d.note(
            f"advisory verdict of {event.verifier} on {step.id}: {event.verdict.value}: {event.reason}",
            actor=event.verifier,
            evidence=evidence,
        )
        return
    if event.verdict is Verdict.FAIL:
        d.clear_deadline = True
        fail(d, f"{step.id} failed: {event.reason}" + _by(event, required), now, evidence=evidence)
        return
    missing = missing_verdicts(d)
    if missing:
        d.note(
            f"{step.id}: {event.verifier} says {event.verdict.value}; waiting for "
            + ", ".join(f"{m} ({liveness(d, m)})" for m in missing),
            actor=event.verifier,
            evidence=evidence,
        )
        return
    d.clear_deadline = True
    evidence["verdicts"] = {name: v.model_dump() for name, v in verdicts.items()}
    if all(verdicts[name].verdict == Verdict.PASS.value for name in required):
        d.note(f"{step.id} passed: {event.reason}" + _by(event, required), evidence=evidence)
        if step.environment == "staging":
            d.staging_verified = True
            s.staging_verdict = StagingVerdict(step=step.id, reason=event.reason, verified_at=now)
        advance(d, now)
    else:
        unsure = [f"{n}: {verdicts[n].reason}" for n in sorted(required) if verdicts[n].verdict != "pass"]
        needs = [r.needs_seconds for n, r in verdicts.items() if n in required and r.needs_seconds is not None]
        if needs:
            evidence["needs_seconds"] = max(needs)
        on_inconclusive(d, f"{step.id} inconclusive: {'; '.join(unsure)}", evidence, now)


def _by(event: VerificationFinished, required: set[str]) -> str:
    return f" (verdict of {event.verifier})" if len(required) > 1 else ""


def _gate_evidence(event: GateCheckFinished) -> dict[str, Any]:
    return {
        "decision": event.decision,
        "risk": event.risk,
        "policy_version": event.policy_version,
        "input_digest": event.input_digest,
        "warnings": event.warnings,
        "waiting_for": event.waiting_for,
    }


def _on_gate_wait(d: Decision, event: GateCheckFinished, now: datetime) -> None:
    """Nothing is wrong, but approvals or a release window are missing: hold at the gate, say what for, and
    re-evaluate when an approval arrives or at the time the policy gave."""
    s = d.saga
    approvals_missing = any(
        c.name in ("approvals", "freeze_window") and c.evidence.get("outcome") == "wait" for c in event.checks
    )
    s.state = ReleaseState.AWAITING_APPROVAL if approvals_missing else ReleaseState.WAITING_WINDOW
    evidence = {"checks": [c.model_dump(mode="json") for c in event.checks]} | _gate_evidence(event)
    retry = f"; re-evaluated at {event.retry_at.isoformat(timespec='minutes')}" if event.retry_at else ""
    d.note(f"{event.step_id} waiting ({event.risk} risk): {'; '.join(event.waiting_for)}{retry}", evidence=evidence)
    if event.retry_at is not None:
        d.deadline = (event.step_id, max(event.retry_at, now))
    if s.state is ReleaseState.AWAITING_APPROVAL:
        d.commands.append(
            (topics.ALERTS, alert(s, Severity.INFO, "waiting for approval", "; ".join(event.waiting_for)))
        )


def _insert_required_steps(d: Decision, event: GateCheckFinished) -> None:
    """Steps this change needs: a DR check right after the gate when the policy requires it; with migrations,
    each environment's migration right before its first deploy, and in production a backup point before that."""
    s = d.saga
    if "dr-check" in event.requires and not any(st.kind == "dr" for st in s.plan):
        s.plan.insert(s.cursor + 1, Step(id="dr-check", kind="dr"))
        d.note("dr-check added to the plan: the policy requires it for this change")
    if not event.migrations or s.migrations:
        return
    s.migrations = list(event.migrations)
    for env in ("staging", "production"):
        first = next(
            (
                i
                for i, st in enumerate(s.plan)
                if st.kind == "deploy" and st.environment == env and st.action is not DeployAction.FINALIZE
            ),
            None,
        )
        if first is None or first <= s.cursor:
            continue
        steps = [
            Step(
                id=f"migrate-{env}",
                kind="deploy",
                environment=env,
                action=DeployAction.MIGRATE,
                weight=0,
                compensation=compensation.for_migration(env, s.migrations),
            )
        ]
        if env == "production":
            steps.insert(0, Step(id="backup-point", kind="dr", environment=env, dr_action="backup-point"))
        s.plan[first:first] = steps
    names = ", ".join(
        f"{m['name']} ({m['kind']}{', rewrites data' if m.get('rewrites_data') else ''})" for m in s.migrations
    )
    d.note(
        f"migrations added to the plan: {names}; each environment migrates before its new code starts, "
        "production after a backup point"
    )


EVIDENCE_MARGIN = 1.25
"""An extended window is this much longer than the evidence's expected need: the need is an average."""


def evidence_seconds(evidence: dict[str, Any]) -> float | None:
    """The longest window a required verifier's KPIs said their evidence needs at the traffic seen
    (`needs_seconds`, from a rate with `detect`); None when none said."""
    need = evidence.get("needs_seconds")
    return float(need) if isinstance(need, int | float) else None


EVIDENCE_STEP = "-evidence"


def _raise_for_evidence(
    d: Decision, reason: str, evidence: dict[str, Any], needed: float, longest: float, now: datetime
) -> bool:
    """A canary step whose evidence needs more than the longest window at its weight: raise the canary, within
    the catalog's risk budget (`evidence_weight_max`), to the weight that gathers it within that window (the
    candidate's traffic grows with its weight), and verify there. Inserted as two steps after the current one;
    once per step. False when the budget does not allow it (or the step is not a canary share of traffic)."""
    s = d.saga
    step, budget = s.current, s.rules.evidence_weight_max
    before = s.plan[s.cursor - 1] if s.cursor > 0 else None
    if (
        budget is None
        or step is None
        or step.kind != "verify"
        or step.tenants
        or step.id.endswith(EVIDENCE_STEP)
        or before is None
        or before.kind != "deploy"
        or before.action not in (DeployAction.SHIFT, DeployAction.START)
        or not before.weight
    ):
        return False
    weight = math.ceil(before.weight * needed * EVIDENCE_MARGIN / longest)
    if weight > budget or weight >= 100:
        evidence["evidence_weight_needed"] = weight
        return False
    s.extended.append(step.id)
    s.plan[s.cursor + 1 : s.cursor + 1] = [
        shift(f"canary-{weight}{EVIDENCE_STEP}", DeployAction.SHIFT, weight),
        verify(f"verify-canary-{weight}{EVIDENCE_STEP}", longest),
    ]
    d.note(
        f"{reason}; at {before.weight}% the evidence needs ≈{needed:.0f}s, longer than the catalog allows "
        f"({longest:.0f}s): canary raised to {weight}% (the risk budget allows {budget}%) to gather it within "
        f"{longest:.0f}s (catalog policy)",
        evidence=evidence,
    )
    advance(d, now)
    return True


def on_inconclusive(d: Decision, reason: str, evidence: dict[str, Any], now: datetime) -> None:
    s = d.saga
    policy = s.rules.on_inconclusive
    if policy == "rollback":
        fail(d, reason, now, evidence=evidence)
        return
    step = s.current
    extended = s.extended
    if policy == "extend" and step is not None and step.id not in extended and step.window_seconds:
        needed = evidence_seconds(evidence)
        longest = s.rules.max_window_seconds or step.window_seconds * 2
        if needed is not None and needed > longest:
            if _raise_for_evidence(d, reason, evidence, needed, longest, now):
                return
            reason += (
                f"; the evidence needs a window of ≈{needed:.0f}s at this traffic, longer than the catalog allows "
                f"({longest:.0f}s): more traffic, a higher canary weight or a larger `detect` would decide it"
            )
        else:
            extended.append(step.id)
            window = step.window_seconds * 2 if needed is None else min(max(needed * EVIDENCE_MARGIN, 1.0), longest)
            step.window_seconds = window
            why = "" if needed is None else f": the evidence needs ≈{needed:.0f}s at this traffic"
            d.note(f"{reason}; window extended once to {window:.0f}s{why} (catalog policy)", evidence=evidence)
            issue_current(d, now)
            return
    s.state = ReleaseState.PAUSED
    d.note(f"{reason}; paused for a human (approve to re-verify, abort to roll back)", evidence=evidence)
    d.commands.append((topics.ALERTS, alert(s, Severity.WARNING, "release paused", reason)))


def on_rollback_finished(d: Decision, event: RollbackFinished | DeployFinished, now: datetime) -> None:
    s = d.saga
    if s.state is not ReleaseState.ROLLING_BACK or s.waiting_for != event.step_id:
        d.ignored = f"rollback result {event.step_id} does not match the awaited {s.waiting_for}"
        return
    d.clear_deadline = True
    comp = next(c for c in s.compensations if c.id == event.step_id)
    actor = "deployer" if isinstance(event, DeployFinished) else "rollback"
    evidence = {"observed": event.observed.model_dump(mode="json") if event.observed else None}
    if isinstance(event, RollbackFinished) and event.evidence:
        evidence["incident_report"] = event.evidence
    if not event.succeeded:
        comp.status = "failed"
        d.note(f"compensation {comp.id} failed: {event.reason}", actor=actor, evidence=evidence)
        finish(
            d,
            ReleaseState.ROLLBACK_FAILED,
            f"compensation {comp.id} failed: {event.reason}",
            severity=Severity.CRITICAL,
            now=now,
        )
        return
    comp.status = "done"
    d.note(f"compensation {comp.id} done: {event.reason}", actor=actor, evidence=evidence)
    next_compensation(d, now)
