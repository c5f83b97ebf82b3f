"""The release saga as pure logic: given the saga and one event, decide the new saga, the commands to send and
the transitions to record. No I/O here, so every rule is unit-testable. The plan comes from `plans`, the undoing
of a failed release from `compensation`, the rules the release runs under from `config`."""

from __future__ import annotations

from datetime import datetime

from contracts import topics
from contracts.events import (
    AbortRequested,
    ApprovalGiven,
    CandidateSubmitted,
    Contract,
    DeployFinished,
    DRCheckFinished,
    FollowupAdded,
    FollowupClosed,
    GateCheckFinished,
    OperatorCommand,
    PauseRequested,
    PromoteRequested,
    ReleaseState,
    ResumeRequested,
    RollbackFinished,
    Severity,
    VerificationFinished,
)
from releasegate_platform.catalog import ServiceEntry
from services.coordinator import control, incidents
from services.coordinator.config import SagaConfig
from services.coordinator.model import (
    STEP_TIMEOUTS,
    Saga,
    Step,
)
from services.coordinator.movement import (
    WAITING,
    Decision,
    SagaError,
    Transition,
    advance,
    alert,
    fail,
    finish,
    issue_current,
    liveness,
    missing_verdicts,
)
from services.coordinator.operations import on_abort, on_approval, on_pause, on_promote, on_resume
from services.coordinator.plans import build_plan
from services.coordinator.step_results import on_inconclusive, on_rollback_finished, on_step_result

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
    issue_current(decision, now)
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
    decision.commands.append((topics.ALERTS, alert(saga, Severity.INFO, "release rejected", reason)))
    return decision


def _copy(saga: Saga) -> Saga:
    """The saga a decision changes, apart from the one it was given (callers compare them). A dump and
    validation: pydantic's deep copy took five times as long, on every decision."""
    return Saga.model_validate(saga.model_dump())


def handle(
    saga: Saga,
    event: Contract,
    now: datetime,
    *,
    signer: control.Signer | None = None,
    replayed: bool = False,
    registry: dict[str, set[str]] | None = None,
    registered: dict[str, set[str]] | None = None,
    owner_known: bool = False,
) -> Decision:
    """For operator commands: `signer` is what their signature proved (the caller checked it against the
    identities file), `replayed` whether their nonce was used before. A refused command changes nothing but the
    audit log. `registry`: alive verifiers → services they cover (None: not known); `registered`: every verifier
    the registry holds, alive or not (None: the alive ones); a verdict counts when its verifier is registered.
    `owner_known`: a follow-up's owner is a person or group of the identities file (the caller checked)."""
    decision = Decision(_copy(saga), registry=registry, registered=registered if registered is not None else registry)
    signer = signer or control.UNCHECKED
    if isinstance(event, OperatorCommand):
        refusal = control.refusal(event, decision.saga, now, signer=signer, replayed=replayed)
        if refusal is not None:
            decision.note(f"{control.describe(event)} by {event.actor} refused: {refusal}", actor=event.actor)
            return decision
    match event:
        case ApprovalGiven():
            on_approval(decision, event, now, signer.groups)
        case AbortRequested():
            on_abort(decision, event, now)
        case PauseRequested():
            on_pause(decision, event)
        case ResumeRequested():
            on_resume(decision, event, now)
        case PromoteRequested():
            on_promote(decision, event, now)
        case FollowupAdded():
            incidents.on_followup_added(decision, event, now, owner_known)
        case FollowupClosed():
            incidents.on_followup_closed(decision, event, now)
        case RollbackFinished():
            on_rollback_finished(decision, event, now)
        case DeployFinished() if decision.saga.state is ReleaseState.ROLLING_BACK:
            on_rollback_finished(decision, event, now)
        case GateCheckFinished() | DRCheckFinished() | DeployFinished() | VerificationFinished():
            on_step_result(decision, event, now)
        case _:
            raise SagaError(f"the coordinator has no rule for {type(event).__name__}")
    return decision


def on_deadline(saga: Saga, step_id: str, now: datetime, registry: dict[str, set[str]] | None = None) -> Decision:
    decision = Decision(_copy(saga), registry=registry)
    s = decision.saga
    if s.state.terminal or s.waiting_for != step_id:
        decision.ignored = f"deadline of {step_id} no longer relevant"
        return decision
    decision.clear_deadline = True
    if s.state is ReleaseState.ROLLING_BACK:
        finish(
            decision,
            ReleaseState.ROLLBACK_FAILED,
            f"compensation {step_id} got no answer before its deadline",
            severity=Severity.CRITICAL,
            now=now,
        )
        return decision
    step = s.current
    if step is not None and step.kind == "gate" and s.state in WAITING:
        s.state = ReleaseState.RUNNING
        decision.note(f"{step.id}: re-evaluating at the time the policy gave")
        issue_current(decision, now)
        return decision
    if step is not None and step.kind == "wait":
        decision.note(f"{step.id} done")
        advance(decision, now)
        return decision
    if step is not None and step.kind == "verify":
        missing = missing_verdicts(decision)
        who = "; ".join(f"{name} ({liveness(decision, name)})" for name in missing) or "none"
        on_inconclusive(
            decision,
            f"no verdict for {step.id} within window + grace from required verifiers: {who}",
            {"verdicts": {n: v.model_dump() for n, v in s.verdicts.get(step.id, {}).items()}},
            now,
        )
    else:
        fail(decision, f"{step_id} got no answer before its deadline", now)
    return decision
