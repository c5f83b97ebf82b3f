"""The release saga as pure logic: given the saga and one event, decide the new saga, the commands to send and
the transitions to record. No I/O here, so every rule is unit-testable. The plan comes from `plans`, the undoing
of a failed release from `compensation`, the rules the release runs under from `config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from contracts import topics
from contracts.events import (
    AbortRequested,
    AlertRaised,
    ApprovalGiven,
    CandidateSubmitted,
    Contract,
    DeployAction,
    DeployFinished,
    DeployRequested,
    DRCheckFinished,
    DRCheckRequested,
    GateCheckFinished,
    GateCheckRequested,
    OperatorCommand,
    PauseRequested,
    PromoteRequested,
    ReleaseState,
    ResumeRequested,
    RollbackFinished,
    Severity,
    StagingVerification,
    Verdict,
    VerificationFinished,
    VerificationRequested,
)
from contracts.names import MAX_LABEL, MAX_TEXT, clip
from releasegate_platform.catalog import ServiceEntry
from services.coordinator import compensation, control
from services.coordinator.config import SagaConfig
from services.coordinator.model import (
    STEP_TIMEOUTS,
    Saga,
    StagingVerdict,
    Step,
    VerdictRecord,
)
from services.coordinator.plans import build_plan

__all__ = [
    "STEP_TIMEOUTS",
    "Decision",
    "Saga",
    "SagaError",
    "Step",
    "Transition",
    "build_plan",
    "handle",
    "on_deadline",
    "reject_unknown",
    "start",
]
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


@dataclass
class Decision:
    saga: Saga
    commands: list[tuple[str, Contract]] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    deadline: tuple[str, datetime] | None = None
    clear_deadline: bool = False
    staging_verified: bool = False
    ignored: str | None = None
    registry: dict[str, set[str]] | None = field(default=None, repr=False)

    def note(self, reason: str, *, actor: str = COORDINATOR, evidence: dict[str, Any] | None = None) -> None:
        self.transitions.append(
            Transition(self.saga.state, self.saga.waiting_for, actor, clip(reason, MAX_TEXT), evidence or {})
        )


def start(candidate: CandidateSubmitted, entry: ServiceEntry, now: datetime, trace: dict[str, str]) -> Decision:
    saga = Saga(
        release_id=candidate.release_id,
        service=candidate.service,
        version=candidate.version,
        digest=candidate.artifact.digest,
        candidate=candidate.model_dump(mode="json"),
        plan=build_plan(entry),
        trace=trace,
        operators=entry.approvers.actions,
        config=SagaConfig.from_entry(entry),
    )
    decision = Decision(saga)
    decision.transitions.append(
        Transition(
            ReleaseState.RUNNING,
            None,
            candidate.submitted_by,
            f"candidate {candidate.service} {candidate.version} submitted",
            {"digest": saga.digest, "plan": [s.id for s in saga.plan]},
        )
    )
    _issue_current(decision, now)
    return decision


def reject_unknown(candidate: CandidateSubmitted, reason: str) -> Decision:
    """A candidate the catalog cannot place is rejected at once, with the reason."""
    saga = Saga(
        release_id=candidate.release_id,
        service=candidate.service,
        version=candidate.version,
        digest=candidate.artifact.digest,
        candidate=candidate.model_dump(mode="json"),
        plan=[],
        state=ReleaseState.REJECTED,
    )
    decision = Decision(saga)
    decision.note(reason)
    decision.commands.append((topics.ALERTS, _alert(saga, Severity.INFO, "release rejected", reason)))
    return decision


def handle(
    saga: Saga,
    event: Contract,
    now: datetime,
    *,
    signer: control.Signer | None = None,
    replayed: bool = False,
    registry: dict[str, set[str]] | None = None,
) -> Decision:
    """For operator commands: `signer` is what their signature proved (the caller checked it against the
    identities file), `replayed` whether their nonce was used before. A refused command changes nothing but the
    audit log. `registry`: alive verifiers → services they cover (None: not known)."""
    decision = Decision(saga.model_copy(deep=True), registry=registry)
    signer = signer or control.UNCHECKED
    if isinstance(event, OperatorCommand):
        refusal = control.refusal(event, decision.saga, now, signer=signer, replayed=replayed)
        if refusal is not None:
            decision.note(f"{control.describe(event)} by {event.actor} refused: {refusal}", actor=event.actor)
            return decision
    match event:
        case ApprovalGiven():
            _on_approval(decision, event, now, signer.groups)
        case AbortRequested():
            _on_abort(decision, event, now)
        case PauseRequested():
            _on_pause(decision, event)
        case ResumeRequested():
            _on_resume(decision, event, now)
        case PromoteRequested():
            _on_promote(decision, event, now)
        case RollbackFinished():
            _on_rollback_finished(decision, event, now)
        case DeployFinished() if decision.saga.state is ReleaseState.ROLLING_BACK:
            _on_rollback_finished(decision, event, now)
        case GateCheckFinished() | DRCheckFinished() | DeployFinished() | VerificationFinished():
            _on_step_result(decision, event, now)
        case _:
            raise SagaError(f"the coordinator has no rule for {type(event).__name__}")
    return decision


def on_deadline(saga: Saga, step_id: str, now: datetime, registry: dict[str, set[str]] | None = None) -> Decision:
    decision = Decision(saga.model_copy(deep=True), registry=registry)
    s = decision.saga
    if s.state.terminal or s.waiting_for != step_id:
        decision.ignored = f"deadline of {step_id} no longer relevant"
        return decision
    decision.clear_deadline = True
    if s.state is ReleaseState.ROLLING_BACK:
        _finish(
            decision,
            ReleaseState.ROLLBACK_FAILED,
            f"compensation {step_id} got no answer before its deadline",
            severity=Severity.CRITICAL,
        )
        return decision
    step = s.current
    if step is not None and step.kind == "gate" and s.state in WAITING:
        s.state = ReleaseState.RUNNING
        decision.note(f"{step.id}: re-evaluating at the time the policy gave")
        _issue_current(decision, now)
        return decision
    if step is not None and step.kind == "wait":
        decision.note(f"{step.id} done")
        _advance(decision, now)
        return decision
    if step is not None and step.kind == "verify":
        missing = _missing_verdicts(decision)
        who = "; ".join(f"{name} ({_liveness(decision, name)})" for name in missing) or "none"
        _on_inconclusive(
            decision,
            f"no verdict for {step.id} within window + grace from required verifiers: {who}",
            {"verdicts": {n: v.model_dump() for n, v in s.verdicts.get(step.id, {}).items()}},
            now,
        )
    else:
        _fail(decision, f"{step_id} got no answer before its deadline", now)
    return decision


# --- results -----------------------------------------------------------------------------------------------


def _on_step_result(d: Decision, event: Any, now: datetime) -> None:
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
                _advance(d, now)
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
                    d.commands.append((topics.ALERTS, _alert(s, Severity.WARNING, "release waiting", failed)))
                    return
                _fail(d, f"{step.id} failed: {failed}", now, evidence=evidence, rejected=True)
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
                _advance(d, now)
            else:
                _fail(d, f"{step.id} failed: {event.reason}", now, evidence=evidence)


def _expected_verifiers(s: Saga, step: Step) -> tuple[set[str], set[str]]:
    if step.synthetic:
        return {CORE_VERIFIER}, set()
    verifiers = s.rules.verifiers.get(step.environment or "")
    if verifiers is None:
        return {CORE_VERIFIER}, set()
    return set(verifiers.required), set(verifiers.advisory)


def _missing_verdicts(d: Decision) -> list[str]:
    s = d.saga
    step = s.current
    if step is None or step.kind != "verify":
        return []
    required, _ = _expected_verifiers(s, step)
    return sorted(required - set(s.verdicts.get(step.id, {})))


def _liveness(d: Decision, name: str) -> str:
    if d.registry is None:
        return "no verdict yet"
    return "alive, no verdict yet" if name in d.registry else "not alive: no heartbeat within 3 intervals"


def _on_verdict(d: Decision, event: VerificationFinished, now: datetime) -> None:
    """Every required verifier must answer; any required fail fails the step, advisory verdicts are recorded."""
    s = d.saga
    step = s.current
    assert step is not None
    required, advisory = _expected_verifiers(s, step)
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
    registry = d.registry
    if registry is not None and not registry.get(event.verifier, set()) & {s.service, "*"}:
        d.note(
            f"verdict of {event.verifier} on {step.id} refused: {event.verifier} is not registered (alive) "
            f"for {s.service}",
            actor=event.verifier,
            evidence=evidence,
        )
        return
    verdicts = s.verdicts.setdefault(step.id, {})
    verdicts[event.verifier] = VerdictRecord(verdict=event.verdict.value, reason=event.reason)
    if event.verifier in advisory and event.verifier not in required:
        d.note(
            f"advisory verdict of {event.verifier} on {step.id}: {event.verdict.value}: {event.reason}",
            actor=event.verifier,
            evidence=evidence,
        )
        return
    if event.verdict is Verdict.FAIL:
        d.clear_deadline = True
        _fail(d, f"{step.id} failed: {event.reason}" + _by(event, required), now, evidence=evidence)
        return
    missing = _missing_verdicts(d)
    if missing:
        d.note(
            f"{step.id}: {event.verifier} says {event.verdict.value}; waiting for "
            + ", ".join(f"{m} ({_liveness(d, m)})" for m in missing),
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
        _advance(d, now)
    else:
        unsure = [f"{n}: {verdicts[n].reason}" for n in sorted(required) if verdicts[n].verdict != "pass"]
        _on_inconclusive(d, f"{step.id} inconclusive: {'; '.join(unsure)}", evidence, now)


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
            (topics.ALERTS, _alert(s, Severity.INFO, "waiting for approval", "; ".join(event.waiting_for)))
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


def _on_inconclusive(d: Decision, reason: str, evidence: dict[str, Any], now: datetime) -> None:
    s = d.saga
    policy = s.rules.on_inconclusive
    if policy == "rollback":
        _fail(d, reason, now, evidence=evidence)
        return
    step = s.current
    extended = s.extended
    if policy == "extend" and step is not None and step.id not in extended and step.window_seconds:
        extended.append(step.id)
        step.window_seconds *= 2
        d.note(f"{reason}; window extended once to {step.window_seconds:.0f}s (catalog policy)", evidence=evidence)
        _issue_current(d, now)
        return
    s.state = ReleaseState.PAUSED
    d.note(f"{reason}; paused for a human (approve to re-verify, abort to roll back)", evidence=evidence)
    d.commands.append((topics.ALERTS, _alert(s, Severity.WARNING, "release paused", reason)))


def _on_rollback_finished(d: Decision, event: RollbackFinished | DeployFinished, now: datetime) -> None:
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
        _finish(
            d,
            ReleaseState.ROLLBACK_FAILED,
            f"compensation {comp.id} failed: {event.reason}",
            severity=Severity.CRITICAL,
        )
        return
    comp.status = "done"
    d.note(f"compensation {comp.id} done: {event.reason}", actor=actor, evidence=evidence)
    _next_compensation(d, now)


# --- operator control ----------------------------------------------------------------------------------------


def _on_approval(d: Decision, event: ApprovalGiven, now: datetime, groups: frozenset[str]) -> None:
    """The approval passed `control.refusal` (signer's `groups`); which approvals count at a gate is the gate
    policy's call, a go/no-go at a hold point is decided here. An approval resumes a paused release only when a
    resume by its signer would, and while such a resume would still be valid."""
    s = d.saga
    if s.state.terminal:
        d.note(f"{event.kind} by {event.actor} ignored: release is {s.state.value}", actor=event.actor)
        return
    step = s.current
    if event.kind in ("go", "no-go"):
        _on_go_no_go(d, event, now)
        return
    # one approval per signer and kind counts (the newest): a flood of signed approvals cannot grow the saga
    s.approvals = [a for a in s.approvals if (a.actor, a.kind) != (event.actor, event.kind)] + [event.signed()]
    if s.state is ReleaseState.PAUSED:
        assert event.signed_at is not None  # control.refusal let no unsigned command through
        cannot = control.permission(s, "resume", event.actor, groups) or control.expired("resume", event.signed_at, now)
        if cannot is not None:
            d.note(
                f"{event.kind} by {event.actor} recorded; it does not resume the release: {cannot}", actor=event.actor
            )
            return
        s.state = ReleaseState.RUNNING
        d.note(f"resumed by {event.actor}: {event.reason}", actor=event.actor)
        _issue_current(d, now)
    elif s.state in WAITING and step is not None and step.kind == "gate":
        s.state = ReleaseState.RUNNING
        d.clear_deadline = True
        d.note(f"{event.kind} by {event.actor} recorded: {event.reason}; {step.id} re-evaluated", actor=event.actor)
        _issue_current(d, now)
    else:
        d.note(
            f"{event.kind} by {event.actor} recorded: {event.reason}; it counts at the production gate",
            actor=event.actor,
        )


def _on_go_no_go(d: Decision, event: ApprovalGiven, now: datetime) -> None:
    s = d.saga
    step = s.current
    if s.state is not ReleaseState.AWAITING_APPROVAL or step is None or step.kind != "hold":
        d.note(f"{event.kind} by {event.actor} ignored: the release is not at a hold point", actor=event.actor)
        return
    if event.kind == "no-go":
        _compensate(
            d, f"no-go at {step.id} by {event.actor}: {event.reason}", ReleaseState.ABORTED, now, actor=event.actor
        )
        return
    s.state = ReleaseState.RUNNING
    d.note(f"go at {step.id} by {event.actor}: {event.reason}", actor=event.actor)
    _advance(d, now)


def _on_abort(d: Decision, event: AbortRequested, now: datetime) -> None:
    s = d.saga
    if s.state.terminal or s.state is ReleaseState.ROLLING_BACK:
        d.note(f"abort by {event.actor} ignored: release is {s.state.value}", actor=event.actor)
        return
    d.clear_deadline = True
    _compensate(d, f"aborted by {event.actor}: {event.reason}", ReleaseState.ABORTED, now, actor=event.actor)


def _on_pause(d: Decision, event: PauseRequested) -> None:
    s = d.saga
    if s.state is not ReleaseState.RUNNING:
        d.note(f"pause by {event.actor} ignored: release is {s.state.value}", actor=event.actor)
        return
    s.state = ReleaseState.PAUSED
    d.clear_deadline = True
    d.note(f"paused by {event.actor}: {event.reason}", actor=event.actor)


def _on_resume(d: Decision, event: ResumeRequested, now: datetime) -> None:
    s = d.saga
    if s.state is not ReleaseState.PAUSED:
        d.note(f"resume by {event.actor} ignored: release is {s.state.value}", actor=event.actor)
        return
    s.state = ReleaseState.RUNNING
    d.note(f"resumed by {event.actor}: {event.reason}", actor=event.actor)
    _issue_current(d, now)


def _on_promote(d: Decision, event: PromoteRequested, now: datetime) -> None:
    s = d.saga
    full = next(
        (
            i
            for i, st in enumerate(s.plan)
            if st.kind == "deploy"
            and st.environment == "production"
            and st.action is not DeployAction.FINALIZE
            and st.weight == 100
        ),
        None,
    )
    gate = next((i for i, st in enumerate(s.plan) if st.id == "gate-production"), None)
    if (
        s.state not in (ReleaseState.RUNNING, ReleaseState.PAUSED)
        or full is None
        or gate is None
        or s.cursor <= gate
        or s.cursor > full
    ):
        d.note(
            f"promote --full by {event.actor} refused: only between the production gate and the last canary "
            f"step of a running or paused release (release is {s.state.value} at {s.waiting_for})",
            actor=event.actor,
        )
        return
    s.state = ReleaseState.RUNNING
    s.promote_full = True
    s.cursor = full
    d.clear_deadline = True
    d.note(
        f"promote --full by {event.actor}: {event.reason}; remaining canary steps and their verification skipped",
        actor=event.actor,
    )
    _issue_current(d, now)


# --- movement ------------------------------------------------------------------------------------------------


def _advance(d: Decision, now: datetime) -> None:
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
        _finish(d, ReleaseState.PROMOTED, f"{s.version} promoted: all traffic on {s.version}")
        return
    _issue_current(d, now)


def _environment(step: Step) -> str:
    if step.environment is None:
        raise SagaError(f"step {step.id} names no environment")
    return step.environment


def _issue_current(d: Decision, now: datetime) -> None:
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
                    _alert(s, Severity.INFO, "go/no-go needed", f"{step.id}: evidence in the release timeline"),
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
            dead = [
                n for n in sorted(_expected_verifiers(s, step)[0]) if d.registry is not None and n not in d.registry
            ]
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


def _fail(
    d: Decision, reason: str, now: datetime, *, evidence: dict[str, Any] | None = None, rejected: bool = False
) -> None:
    end = ReleaseState.REJECTED if rejected else ReleaseState.ROLLED_BACK
    d.note(reason, evidence=evidence)
    _compensate(d, reason, end, now)


def _compensate(d: Decision, reason: str, end: ReleaseState, now: datetime, *, actor: str = COORDINATOR) -> None:
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
        _finish(d, end, reason, actor=actor)
        return
    s.state = ReleaseState.ROLLING_BACK
    d.transitions.append(
        Transition(
            s.state, s.waiting_for, actor, f"rolling back: {reason}", {"compensations": [c.id for c in s.compensations]}
        )
    )
    s.failure_reason = reason
    _next_compensation(d, now)


def _next_compensation(d: Decision, now: datetime) -> None:
    s = d.saga
    comp = next((c for c in s.compensations if c.status == "pending"), None)
    if comp is None:
        end = s.end_state or ReleaseState.ROLLED_BACK
        reason = s.failure_reason or "compensated"
        traffic = ", ".join(f"{env} on {s.stable.get(env, 'stable')}" for env in s.deployed_environments) or "-"
        _finish(
            d,
            end,
            f"{end.value}: {reason} (traffic: {traffic})",
            severity=Severity.WARNING if end is ReleaseState.ROLLED_BACK else None,
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


def _finish(
    d: Decision, end: ReleaseState, reason: str, *, actor: str = COORDINATOR, severity: Severity | None = None
) -> None:
    s = d.saga
    s.state = end
    s.waiting_for = None
    d.clear_deadline = True
    d.transitions.append(Transition(end, None, actor, reason))
    if severity is not None:
        d.commands.append((topics.ALERTS, _alert(s, severity, f"release {end.value}", reason)))


def _alert(s: Saga, severity: Severity, title: str, detail: str) -> AlertRaised:
    return AlertRaised(
        release_id=s.release_id,
        service=s.service,
        severity=severity,
        title=clip(f"{s.service} {s.version}: {title}", MAX_LABEL),
        detail=clip(detail, MAX_TEXT),
    )
