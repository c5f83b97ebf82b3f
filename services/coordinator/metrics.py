"""What a committed decision says to Prometheus: steps that ended (and how long they took since this process
issued them), state changes, a failing verdict turned into a rollback, and traffic as read back from a target.
Step start times live in this process only: a step issued before a restart is not timed."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Any

import structlog

from contracts.events import (
    DeployFinished,
    DRCheckFinished,
    GateCheckFinished,
    OperatorCommand,
    ReleaseState,
    RollbackFinished,
    Verdict,
    VerificationFinished,
)
from releasegate_runtime import metrics
from services.coordinator.model import Saga
from services.coordinator.movement import Decision

TIMED_KINDS = frozenset({"gate", "dr", "deploy", "verify"})
COMPENSATION_PREFIX = "compensate:"
STARTS_TRACKED = 4096
log = structlog.get_logger()


def step_kind(s: Saga, step_id: str) -> str | None:
    """The kind of a step or compensation id of the saga (`rollback` for compensations); None if unknown."""
    if step_id.startswith(COMPENSATION_PREFIX):
        return "rollback"
    return next((step.kind for step in s.plan if step.id == step_id), None)


def outcome(event: Any) -> str:
    """How the step ended, in a bounded word: passed, failed, inconclusive, timeout (a deadline), operator."""
    match event:
        case None:
            return "timeout"
        case OperatorCommand():
            return "operator"
        case VerificationFinished():
            return {Verdict.PASS: "passed", Verdict.FAIL: "failed"}.get(event.verdict, "inconclusive")
        case GateCheckFinished():
            return "passed" if event.passed else "failed"
        case DRCheckFinished():
            return "passed" if event.ready else "failed"
        case DeployFinished() | RollbackFinished():
            return "passed" if event.succeeded else "failed"
    return "other"


class DecisionMetrics:
    def __init__(self, limit: int = STARTS_TRACKED) -> None:
        self._limit = limit
        self._started: OrderedDict[tuple[str, str], datetime] = OrderedDict()

    def decided(
        self, before: Saga | None, decision: Decision, event: Any, event_time: datetime | None, now: datetime
    ) -> None:
        """`before`: the saga as loaded (None for a new release); `event`: what was decided on (None: a deadline);
        `event_time`: its CloudEvent time. Called once the decision is committed; never raises."""
        try:
            self._decided(before, decision, event, event_time, now)
        except Exception as exc:
            log.warning("decision metrics not recorded", error=repr(exc))

    def _decided(
        self, before: Saga | None, decision: Decision, event: Any, event_time: datetime | None, now: datetime
    ) -> None:
        after = decision.saga
        waited = before.waiting_for if before is not None else None
        if waited is not None and (after.waiting_for != waited or after.state.terminal):
            self._ended(before, waited, event, now)  # type: ignore[arg-type]
        resumed = (
            before is not None and before.state is not ReleaseState.RUNNING and after.state is ReleaseState.RUNNING
        )
        if after.waiting_for is not None and (after.waiting_for != waited or resumed):
            self._start(after.release_id, after.waiting_for, now)
        for t in decision.transitions:
            if before is None or t.state != before.state:
                metrics.transition(after.service, t.state.value)
        if (
            isinstance(event, VerificationFinished)
            and event.verdict is Verdict.FAIL
            and event_time is not None
            and before is not None
            and before.state is not ReleaseState.ROLLING_BACK
            and after.state in (ReleaseState.ROLLING_BACK, ReleaseState.ROLLED_BACK, ReleaseState.ROLLBACK_FAILED)
        ):
            metrics.breach_to_decision(event.environment, event_time, now)
        if isinstance(event, DeployFinished | RollbackFinished) and event.observed is not None:
            metrics.traffic(after.service, event.environment, event.observed.weights)

    def _start(self, release_id: str, step_id: str, now: datetime) -> None:
        self._started.pop((release_id, step_id), None)
        self._started[(release_id, step_id)] = now
        while len(self._started) > self._limit:
            self._started.popitem(last=False)

    def _ended(self, before: Saga, step_id: str, event: Any, now: datetime) -> None:
        started = self._started.pop((before.release_id, step_id), None)
        kind = step_kind(before, step_id)
        if started is None or (kind not in TIMED_KINDS and kind != "rollback"):
            return
        metrics.step_finished(kind, outcome(event), (now - started).total_seconds())
