"""A release's gate decisions told in plain sentences, from what the gatekeeper stored (`releasegate explain`, the
API and the dashboard)."""

from __future__ import annotations

from typing import Any

from releasegate_platform import regional

VERDICT = {"pass": "passed", "wait": "is waiting", "block": "was blocked"}


def explain_release(
    release: dict[str, Any], decisions: list[dict[str, Any]], timeline: list[dict[str, Any]] | None = None
) -> list[str]:
    """Each decision (latest per gate step last) with its policy version, input digest and every rule's result;
    then, from the timeline, the evidence of each verification whose KPIs must catch a stated drop (`detect`):
    what it saw, what a decision needs and how long that is at the traffic seen."""
    lines = [
        f"Release {release['release_id']} ({release['service']} {release['version']}) is "
        f"{release['state'].replace('_', ' ')}" + (f" at {release['step']}." if release.get("step") else ".")
    ]
    evidence = _evidence(timeline or [])
    if not decisions:
        lines.append("No gate has decided on it yet.")
        return lines + evidence
    latest = {d["step_id"]: d for d in decisions}
    for step_id, d in latest.items():
        earlier = sum(1 for x in decisions if x["step_id"] == step_id) - 1
        change = d.get("change") or {}
        lines.append("")
        lines.append(
            f"{step_id} ({d['environment']}) {VERDICT.get(d['decision'], d['decision'])} on "
            f"{d['decided_at'][:19]}Z under policy {d['policy_version']}, input {d['input_digest'][:19]}…"
            + (f" ({earlier} earlier evaluation{'s' if earlier != 1 else ''})" if earlier else "")
            + "."
        )
        domains = ", ".join(change.get("domains") or []) or "no classified domain"
        lines.append(
            f"  The change is {d['risk']} risk: {change.get('files_changed', '?')} files, "
            f"{change.get('lines_changed', '?')} lines changed against "
            f"{change.get('baseline_version') or 'nothing in production'}, touching {domains}."
        )
        regional_changes = regional.describe_diff(change.get("regional") or {})
        if regional_changes:
            lines.append("  Regional configuration against production (secret references not shown):")
            lines += [f"    {line}" for line in regional_changes]
        outcomes = {"deny": [], "wait": [], "pass": []}
        for rule in d["rules"]:
            outcomes[rule.get("evidence", {}).get("outcome", "pass" if rule["passed"] else "deny")].append(rule)
        for rule in outcomes["deny"]:
            lines.append(f"  Blocked by {rule['name']}: {_sentence(rule['reason'])}")
        for rule in outcomes["wait"]:
            lines.append(f"  Waiting on {rule['name']}: {_sentence(rule['reason'])}")
        if outcomes["pass"]:
            lines.append(
                f"  Passed {len(outcomes['pass'])} rules: "
                + "; ".join(f"{r['name']} ({r['reason']})" for r in outcomes["pass"])
                + "."
            )
        for warning in d.get("warnings") or []:
            lines.append(f"  Recorded warning: {_sentence(warning)}")
        for refused in d.get("refused") or []:
            lines.append(f"  Refused approval — {_sentence(refused)}")
    return lines + evidence


DETECTION_TEST = "SPRT for a drop"


def _evidence(timeline: list[dict[str, Any]]) -> list[str]:
    """A line per KPI judged by the detection test, at each verdict the coordinator recorded."""
    lines: list[str] = []
    for row in timeline:
        evidence = row.get("evidence") or {}
        kpis = evidence.get("kpis") if isinstance(evidence, dict) else None
        if not isinstance(kpis, list):
            continue
        for kpi in kpis:
            if not isinstance(kpi, dict) or not str(kpi.get("test") or "").startswith(DETECTION_TEST):
                continue
            if not lines:
                lines += ["", "Evidence for the drops the catalog says must be caught:"]
            need = kpi.get("needs_seconds")
            lines.append(
                f"  {row.get('step') or '?'} ({evidence.get('verifier') or 'verifier'}): {kpi.get('name')} "
                f"{kpi.get('verdict')}: {_sentence(str(kpi.get('rule') or ''))}"
                + (
                    f" A window of ≈{need:.0f}s would decide it at that traffic."
                    if isinstance(need, int | float)
                    else ""
                )
            )
    return lines


def _sentence(text: str) -> str:
    return text.rstrip(". ") + "."
