"""How a saga moves: the decision a handler builds, the step it issues next, advancing, failing into its
compensations and finishing. Pure; used by the result and operator handlers (`step_results`, `operations`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from contracts import topics
from contracts.events import (
    AlertRaised,
    CandidateSubmitted,
    Contract,
    DeployAction,
    DeployRequested,
    DRCheckRequested,
    GateCheckRequested,
    ReleaseState,
    Severity,
    StagingVerification,
    VerificationRequested,
)
from contracts.names import MAX_LABEL, MAX_TEXT, clip
from services.coordinator import compensation, control, incidents
from services.coordinator.model import (
    STEP_TIMEOUTS,
    Saga,
    Step,
)

COORDINATOR = "coordinator"
WAITING = (ReleaseState.AWAITING_APPROVAL, ReleaseState.WAITING_WINDOW)
# The core verifier: it judges business KPIs and runs the scripted journeys of previews.
CORE_VERIFIER = "business-kpis"


class SagaError(Exception):
    """Base error of the coordinator's domain."""


@dataclass
class Transition:
    state: ReleaseState
    step: str | None
    actor: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    # False: the audit log only, no status event (a follow-up changes nothing of the release's state, and a status
    # event in its terminal state would notify everyone of the rollback again)
    publish: bool = True


@dataclass
class Decision:
    saga: Saga
    commands: list[tuple[str, Contract]] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    deadline: tuple[str, datetime] | None = None
    clear_deadline: bool = False
    staging_verified: bool = False
    incident_changed: bool = False  # the saga's incident was opened or its follow-ups changed: write its tables
    ignored: str | None = None
    registry: dict[str, set[str]] | None = field(default=None, repr=False)  # alive verifiers → services covered
    registered: dict[str, set[str]] | None = field(default=None, repr=False)  # alive or not → services covered

    def note(
        self, reason: str, *, actor: str = COORDINATOR, evidence: dict[str, Any] | None = None, publish: bool = True
    ) -> None:
        self.transitions.append(
            Transition(self.saga.state, self.saga.waiting_for, actor, clip(reason, MAX_TEXT), evidence or {}, publish)
        )


def advance(d: Decision, now: datetime) -> None:
    s = d.saga
    step = s.current
    if step is not None and step.compensation is not None and step.environment not in s.deployed_environments:
        s.deployed_environments.append(_environment(step))
    s.cursor += 1
    while s.promote_full and s.current is not None and s.current.kind == "verify":
        d.note(f"{s.current.id} skipped: promoted in full by an operator")
        s.cursor += 1
    if s.current is None:
        s.waiting_for = None
        finish(d, ReleaseState.PROMOTED, f"{s.version} promoted: all traffic on {s.version}")
        return
    issue_current(d, now)


def _environment(step: Step) -> str:
    if step.environment is None:
        raise SagaError(f"step {step.id} names no environment")
    return step.environment


def issue_current(d: Decision, now: datetime) -> None:
    s = d.saga
    step = s.current
    assert step is not None
    s.waiting_for = step.id
    base: dict[str, Any] = {"release_id": s.release_id, "step_id": step.id}
    art: dict[str, Any] = {"service": s.service, "version": s.version, "digest": s.digest}
    timeout = STEP_TIMEOUTS.get(step.kind, 60.0)
    match step.kind:
        case "gate":
            d.commands.append(
                (
                    topics.GATE_COMMANDS,
                    GateCheckRequested(
                        **base,
                        **art,
                        environment=_environment(step),
                        tests=s.candidate["tests"],
                        candidate=CandidateSubmitted.model_validate(s.candidate),
                        approvals=s.approvals,
                        staging_verified=_staging_fact(s) if step.environment == "production" else None,
                    ),
                )
            )
        case "dr":
            dr = s.rules.dr
            d.commands.append(
                (
                    topics.DR_COMMANDS,
                    DRCheckRequested(
                        **base,
                        **art,
                        database=dr.database or s.service,
                        rpo_seconds=dr.rpo_seconds,
                        action=step.dr_action,
                    ),
                )
            )
        case "hold":
            s.state = ReleaseState.AWAITING_APPROVAL
            d.note(
                f"{step.id}: hold point, waiting for a go or no-go from "
                f"{' or '.join(sorted(control.allowed_groups(s, 'go')))}",
                evidence={
                    "dr_report": s.dr_report,
                    "staging_verdict": s.staging_verdict.model_dump(mode="json", exclude={"verified_at"})
                    if s.staging_verdict
                    else None,
                    "migrations": s.migrations,
                    "backup_point": s.backup_point,
                },
            )
            d.commands.append(
                (
                    topics.ALERTS,
                    alert(s, Severity.INFO, "go/no-go needed", f"{step.id}: evidence in the release timeline"),
                )
            )
            return
        case "deploy":
            batch = int(step.id.rsplit("-", 1)[1]) if step.action is DeployAction.ROLL else None
            d.commands.append(
                (
                    topics.DEPLOY_COMMANDS,
                    DeployRequested(
                        **base,
                        **art,
                        environment=_environment(step),
                        action=step.action or DeployAction.START,
                        weight=step.weight or 0,
                        instances=s.rules.instances,
                        tenants=step.tenants,
                        batch=batch,
                        batch_size=s.rules.batch_size,
                        attestation=s.candidate.get("attestation"),
                    ),
                )
            )
        case "verify":
            v = s.rules
            s.verdicts.pop(step.id, None)
            d.commands.append(
                (
                    topics.VERIFY_COMMANDS,
                    VerificationRequested(
                        **base,
                        service=s.service,
                        environment=_environment(step),
                        candidate_version=s.version,
                        stable_version=s.stable.get(_environment(step)),
                        window_seconds=step.window_seconds or 1.0,
                        min_samples=v.min_samples,
                        false_rollback_bound=v.false_rollback_bound,
                        thresholds=dict(v.thresholds),
                        synthetic=v.synthetic if step.synthetic else None,
                        tenants=step.tenants,
                        prometheus=dict(v.prometheus) or None,
                        journeys=v.synthetic
                        if v.synthetic and not step.synthetic and step.environment == "production"
                        else None,
                    ),
                )
            )
            timeout = (step.window_seconds or STEP_TIMEOUTS["synthetic"]) + v.grace_seconds
            dead = [n for n in sorted(expected_verifiers(s, step)[0]) if d.registry is not None and n not in d.registry]
            if dead:
                d.note(
                    f"{step.id}: waiting for {', '.join(dead)}, not alive (no heartbeat within 3 intervals); "
                    f"at the deadline the {v.on_inconclusive} policy applies"
                )
        case "wait":
            d.deadline = (step.id, now + timedelta(seconds=step.window_seconds or 0))
            d.note(f"{step.id}: waiting {step.window_seconds:.0f}s")
            return
    d.deadline = (step.id, now + timedelta(seconds=timeout))
    d.note(f"{step.id} requested")


def fail(
    d: Decision, reason: str, now: datetime, *, evidence: dict[str, Any] | None = None, rejected: bool = False
) -> None:
    end = ReleaseState.REJECTED if rejected else ReleaseState.ROLLED_BACK
    d.note(reason, evidence=evidence)
    if not rejected:
        incidents.record_finding(d.saga, reason, evidence, now)
    compensate(d, reason, end, now)


def compensate(d: Decision, reason: str, end: ReleaseState, now: datetime, *, actor: str = COORDINATOR) -> None:
    """Run the named compensations of the completed steps (and of the step in flight), latest first."""
    s = d.saga
    s.compensations = compensation.to_run(s)
    schema_kept = [
        env
        for env in s.migrated
        if next((c.kind for c in s.compensations if c.environment == env), "restore_traffic") == "restore_traffic"
    ]
    if schema_kept:
        names = ", ".join(m["name"] for m in s.migrations)
        why = (
            "expand migrations only, the stable version works with them"
            if not compensation.destructive(s.migrations)
            else "no backup point is taken there; recreate it from production if needed"
        )
        d.note(
            f"schema of {', '.join(schema_kept)} left in place ({names}): {why}", evidence={"migrations": s.migrations}
        )
    s.end_state = end
    if not s.compensations:
        finish(d, end, reason, actor=actor, now=now)
        return
    s.state = ReleaseState.ROLLING_BACK
    d.transitions.append(
        Transition(
            s.state, s.waiting_for, actor, f"rolling back: {reason}", {"compensations": [c.id for c in s.compensations]}
        )
    )
    s.failure_reason = reason
    next_compensation(d, now)


def next_compensation(d: Decision, now: datetime) -> None:
    s = d.saga
    comp = next((c for c in s.compensations if c.status == "pending"), None)
    if comp is None:
        end = s.end_state or ReleaseState.ROLLED_BACK
        reason = s.failure_reason or "compensated"
        traffic = ", ".join(f"{env} on {s.stable.get(env, 'stable')}" for env in s.deployed_environments) or "-"
        finish(
            d,
            end,
            f"{end.value}: {reason} (traffic: {traffic})",
            severity=Severity.WARNING if end is ReleaseState.ROLLED_BACK else None,
            now=now,
        )
        return
    comp.status = "requested"
    s.waiting_for = comp.id
    sent = compensation.run(s, comp)
    d.commands.append((sent.topic, sent.command))
    d.note(sent.note, evidence=sent.evidence)
    d.deadline = (comp.id, now + timedelta(seconds=sent.timeout_seconds))


def _staging_fact(s: Saga) -> StagingVerification | None:
    """What the production gate is told about staging: the verification this release passed there."""
    verdict = s.staging_verdict
    if verdict is None or verdict.verified_at is None:
        return None
    return StagingVerification(
        release_id=s.release_id, digest=s.digest, step_id=verdict.step, verified_at=verdict.verified_at
    )


def finish(
    d: Decision,
    end: ReleaseState,
    reason: str,
    *,
    actor: str = COORDINATOR,
    severity: Severity | None = None,
    now: datetime | None = None,
) -> None:
    """End the release in `end`. A rolled-back (or rollback-failed) release opens its incident here, in the same
    decision: the terminal transition's evidence carries what was learnt (`incidents`); its reason and alert stay
    what they were, so that readers of both see no change."""
    s = d.saga
    s.state = end
    s.waiting_for = None
    d.clear_deadline = True
    incident = incidents.opened(s, end, reason, now)
    evidence: dict[str, Any] = {}
    if incident is not None:
        d.incident_changed = True
        evidence = {
            "incident": incident.model_dump(mode="json", exclude={"followups"})
            | {"described": incidents.describe(incident)}
        }
    d.transitions.append(Transition(end, None, actor, reason, evidence))
    if severity is not None:
        d.commands.append((topics.ALERTS, alert(s, severity, f"release {end.value}", reason)))


def alert(s: Saga, severity: Severity, title: str, detail: str) -> AlertRaised:
    return AlertRaised(
        release_id=s.release_id,
        service=s.service,
        severity=severity,
        title=clip(f"{s.service} {s.version}: {title}", MAX_LABEL),
        detail=clip(detail, MAX_TEXT),
    )


def expected_verifiers(s: Saga, step: Step) -> tuple[set[str], set[str]]:
    if step.synthetic:
        return {CORE_VERIFIER}, set()
    verifiers = s.rules.verifiers.get(step.environment or "")
    if verifiers is None:
        return {CORE_VERIFIER}, set()
    return set(verifiers.required), set(verifiers.advisory)


def missing_verdicts(d: Decision) -> list[str]:
    s = d.saga
    step = s.current
    if step is None or step.kind != "verify":
        return []
    required, _ = expected_verifiers(s, step)
    return sorted(required - set(s.verdicts.get(step.id, {})))


def liveness(d: Decision, name: str) -> str:
    if d.registry is None:
        return "no verdict yet"
    return "alive, no verdict yet" if name in d.registry else "not alive: no heartbeat within 3 intervals"
