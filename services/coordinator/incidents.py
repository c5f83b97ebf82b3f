"""Incidents: what a rolled-back release taught, and the follow-up actions that feed it back into verifiers,
policy, runbooks and tests. Pure. The failure is recorded when the release starts to roll back (`record_finding`,
from `movement.fail`); the incident is opened with the terminal state (`opened`, from `movement.finish`), in the
same decision and so the same transaction; signed operator commands add and close follow-ups (`on_followup_added`,
`on_followup_closed`, after `control.refusal` let them through). The handler writes the saga's incident to the
`incidents` and `incident_followups` tables whenever a decision changed it (`Decision.incident_changed`).

Which releases open one: `rolled_back` and `rollback_failed`, the releases the saga itself failed (a step's verdict,
a deploy, a deadline). A `rejected` release was stopped by a gate or a DR check before the candidate served
anything it should not have (the policy did its job), and an `aborted` one by a person whose reason is in the audit
log: neither opens an incident."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from contracts.events import FollowupAdded, FollowupClosed, OpenFollowup, ReleaseState
from contracts.names import MAX_LABEL, clip
from services.coordinator.model import Followup, Incident, Saga

if TYPE_CHECKING:
    from services.coordinator.movement import Decision

INCIDENT_STATES = frozenset({ReleaseState.ROLLED_BACK, ReleaseState.ROLLBACK_FAILED})
MAX_FOLLOWUPS = 100  # per incident (the contract's FollowupNumber bound)
_SEGMENT = re.compile(r"\[([a-z0-9][a-z0-9._-]{0,62})\]")
_KPI_FIELDS = ("name", "candidate", "baseline", "candidate_samples", "baseline_samples", "rule", "test", "statistic")


def record_finding(s: Saga, reason: str, evidence: dict[str, Any] | None, now: datetime) -> None:
    """What failed, as the release starts to roll back: the step, its environment and the traffic the candidate
    had there, the verifier and the KPIs that failed (candidate against stable), the tenants judged (the segment),
    and the migrations the release carried. The first failure is the one kept."""
    if s.finding is not None:
        return
    evidence = evidence or {}
    step = s.current
    environment = step.environment if step is not None else None
    kpis = [
        {k: kpi.get(k) for k in _KPI_FIELDS}
        for kpi in evidence.get("kpis") or []
        if isinstance(kpi, dict) and kpi.get("verdict") == "fail"
    ]
    segments = set(step.tenants or []) if step is not None else set()
    segments |= {m.group(1) for kpi in kpis for m in _SEGMENT.finditer(str(kpi.get("name") or ""))}
    s.finding = {
        "failed_at": now.isoformat(),
        "reason": reason,
        "step": step.id if step is not None else s.waiting_for,
        "step_kind": step.kind if step is not None else None,
        "environment": environment,
        "weight": _weight(s, environment),
        "verifier": evidence.get("verifier"),
        "verdict_reason": _verdict_reason(s, evidence),
        "kpis": kpis,
        "segments": sorted(segments),
        "window": evidence.get("window"),
        "checks": [c for c in evidence.get("checks") or [] if isinstance(c, dict) and not c.get("passed", True)],
        "migrations": list(s.migrations),
        "candidate_version": s.version,
        "stable_version": s.stable.get(environment or "production"),
    }


def _weight(s: Saga, environment: str | None) -> int | None:
    """The candidate's share of the environment's traffic when it failed: the last deploy step there, up to now."""
    for step in reversed(s.plan[: s.cursor + 1]):
        if step.kind == "deploy" and step.environment == environment and step.weight is not None:
            return step.weight
    return None


def _verdict_reason(s: Saga, evidence: dict[str, Any]) -> str | None:
    step, verifier = s.current, evidence.get("verifier")
    if step is None or not isinstance(verifier, str):
        return None
    record = s.verdicts.get(step.id, {}).get(verifier)
    return record.reason if record is not None else None


def opened(s: Saga, end: ReleaseState, reason: str, now: datetime | None) -> Incident | None:
    """The incident a release that ends in `end` opens (None if it opens none, or has one already)."""
    if end not in INCIDENT_STATES or s.incident is not None or s.config is None:
        return None
    findings = dict(s.finding or {"reason": s.failure_reason or reason})
    at = now or _parse(findings.get("failed_at"))
    s.incident = Incident(opened_at=at, outcome=end, summary=clip(reason, 4096), findings=findings)
    return s.incident


def _parse(value: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.fromtimestamp(0).astimezone()


def describe(incident: Incident) -> str:
    """One sentence of what was learnt, for the release's timeline."""
    f = incident.findings
    where = f.get("step") or "?"
    if f.get("environment"):
        where += f" in {f['environment']}"
    if f.get("weight") == 0 and f.get("segments"):
        where += f" serving only {', '.join(f['segments'])}"
    elif f.get("weight") is not None:
        where += f" at {f['weight']}%"
    parts = [f"incident opened: {where}"]
    if f.get("verifier"):
        parts.append(f"caught by {f['verifier']}")
    kpis = [
        f"{k['name']} {_figure(k.get('candidate'))} vs stable {_figure(k.get('baseline'))}" for k in f.get("kpis") or []
    ]
    if kpis:
        parts.append("failing: " + ", ".join(kpis))
    if f.get("segments"):
        parts.append("segment: " + ", ".join(f["segments"]))
    if f.get("migrations"):
        parts.append("migrations: " + ", ".join(str(m.get("name")) for m in f["migrations"]))
    return "; ".join(parts)


def _figure(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "no data"


def on_followup_added(d: Decision, event: FollowupAdded, now: datetime, known_owner: bool) -> None:
    """`known_owner`: the owner is a person or a group of the identities file (the handler checked)."""
    s = d.saga
    incident = s.incident
    if incident is None:
        d.note(
            f"follow-up by {event.actor} refused: release {s.release_id} has no incident "
            f"(it is {s.state.value}; only rolled_back and rollback_failed releases open one)",
            actor=event.actor,
            publish=False,
        )
        return
    if not known_owner:
        d.note(
            f"follow-up by {event.actor} refused: owner {event.owner} is neither a person nor a group of the "
            "identities file",
            actor=event.actor,
            publish=False,
        )
        return
    if len(incident.followups) >= MAX_FOLLOWUPS:
        d.note(
            f"follow-up by {event.actor} refused: the incident has {MAX_FOLLOWUPS} already",
            actor=event.actor,
            publish=False,
        )
        return
    followup = Followup(
        id=len(incident.followups) + 1,
        kind=event.kind,
        severity=event.severity,
        owner=event.owner,
        title=event.title,
        added_by=event.actor,
        added_at=now,
        reason=event.reason,
    )
    incident.followups.append(followup)
    d.incident_changed = True
    d.note(
        f"follow-up {followup.id} added by {event.actor}: {followup.severity} {followup.kind} "
        f"({followup.owner}): {followup.title}",
        actor=event.actor,
        evidence={"followup": followup.model_dump(mode="json")},
        publish=False,
    )


def on_followup_closed(d: Decision, event: FollowupClosed, now: datetime) -> None:
    s = d.saga
    incident = s.incident
    followup = next((f for f in incident.followups if f.id == event.followup), None) if incident else None
    if followup is None:
        d.note(
            f"close of follow-up {event.followup} by {event.actor} refused: release {s.release_id} has no such "
            "follow-up",
            actor=event.actor,
            publish=False,
        )
        return
    if followup.status == "closed":
        d.note(
            f"close of follow-up {followup.id} by {event.actor} ignored: closed already by {followup.closed_by}",
            actor=event.actor,
            publish=False,
        )
        return
    followup.status, followup.closed_by, followup.closed_at = "closed", event.actor, now
    followup.close_reason = event.reason
    d.incident_changed = True
    d.note(
        f"follow-up {followup.id} closed by {event.actor}: {event.reason}",
        actor=event.actor,
        evidence={"followup": followup.model_dump(mode="json")},
        publish=False,
    )


def open_followups(release_id: str, incident: Incident) -> list[OpenFollowup]:
    """An incident's open follow-ups as the production gate is told about them."""
    return [
        OpenFollowup(
            release_id=release_id,
            followup=f.id,
            kind=f.kind,
            severity=f.severity,
            owner=f.owner,
            title=clip(f.title, MAX_LABEL),
        )
        for f in incident.followups
        if f.status == "open"
    ]
