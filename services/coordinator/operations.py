"""What a saga does with an operator's command once `control` let it through: approvals and go/no-go, abort,
pause, resume and promote in full. Pure."""

from __future__ import annotations

from datetime import datetime

from contracts.events import (
    AbortRequested,
    ApprovalGiven,
    DeployAction,
    PauseRequested,
    PromoteRequested,
    ReleaseState,
    ResumeRequested,
)
from services.coordinator import control
from services.coordinator.movement import (
    WAITING,
    Decision,
    advance,
    compensate,
    issue_current,
)


def on_approval(d: Decision, event: ApprovalGiven, now: datetime, groups: frozenset[str]) -> None:
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
        issue_current(d, now)
    elif s.state in WAITING and step is not None and step.kind == "gate":
        s.state = ReleaseState.RUNNING
        d.clear_deadline = True
        d.note(f"{event.kind} by {event.actor} recorded: {event.reason}; {step.id} re-evaluated", actor=event.actor)
        issue_current(d, now)
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
        compensate(
            d, f"no-go at {step.id} by {event.actor}: {event.reason}", ReleaseState.ABORTED, now, actor=event.actor
        )
        return
    s.state = ReleaseState.RUNNING
    d.note(f"go at {step.id} by {event.actor}: {event.reason}", actor=event.actor)
    advance(d, now)


def on_abort(d: Decision, event: AbortRequested, now: datetime) -> None:
    s = d.saga
    if s.state.terminal or s.state is ReleaseState.ROLLING_BACK:
        d.note(f"abort by {event.actor} ignored: release is {s.state.value}", actor=event.actor)
        return
    d.clear_deadline = True
    compensate(d, f"aborted by {event.actor}: {event.reason}", ReleaseState.ABORTED, now, actor=event.actor)


def on_pause(d: Decision, event: PauseRequested) -> None:
    s = d.saga
    if s.state is not ReleaseState.RUNNING:
        d.note(f"pause by {event.actor} ignored: release is {s.state.value}", actor=event.actor)
        return
    s.state = ReleaseState.PAUSED
    d.clear_deadline = True
    d.note(f"paused by {event.actor}: {event.reason}", actor=event.actor)


def on_resume(d: Decision, event: ResumeRequested, now: datetime) -> None:
    s = d.saga
    if s.state is not ReleaseState.PAUSED:
        d.note(f"resume by {event.actor} ignored: release is {s.state.value}", actor=event.actor)
        return
    s.state = ReleaseState.RUNNING
    d.note(f"resumed by {event.actor}: {event.reason}", actor=event.actor)
    issue_current(d, now)


def on_promote(d: Decision, event: PromoteRequested, now: datetime) -> None:
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
    issue_current(d, now)
