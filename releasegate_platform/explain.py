"""A release's gate decisions told in plain sentences, from what the gatekeeper stored (`releasegate explain`, the
API and the dashboard)."""

from __future__ import annotations

from typing import Any

VERDICT = {"pass": "passed", "wait": "is waiting", "block": "was blocked"}


def explain_release(release: dict[str, Any], decisions: list[dict[str, Any]]) -> list[str]:
    """Each decision (latest per gate step last) with its policy version, input digest and every rule's result."""
    lines = [
        f"Release {release['release_id']} ({release['service']} {release['version']}) is "
        f"{release['state'].replace('_', ' ')}" + (f" at {release['step']}." if release.get("step") else ".")
    ]
    if not decisions:
        lines.append("No gate has decided on it yet.")
        return lines
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
    return lines


def _sentence(text: str) -> str:
    return text.rstrip(". ") + "."
