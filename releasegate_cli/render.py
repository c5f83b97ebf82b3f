"""Human-readable timelines: every state change with time, actor and reason, and the KPI numbers behind it."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_entry(console: Console, row: dict[str, Any]) -> None:
    at = row["at"][11:23]
    step = f" [{row['step']}]" if row.get("step") else ""
    console.print(
        f"{at}  [bold]{row['state']:<15}[/bold]{escape(step)}  {escape(row['actor'])}: {escape(row['reason'])}",
        highlight=False,
        soft_wrap=True,
    )
    evidence = row.get("evidence") or {}
    if evidence.get("kpis"):
        table = Table(show_header=True, header_style="dim", box=None, padding=(0, 1), pad_edge=False)
        for col in ("KPI", "candidate", "baseline", "n cand", "n base", "verdict", "rule"):
            table.add_column(col)
        for k in evidence["kpis"]:
            table.add_row(
                escape(k["name"]),
                _fmt(k["candidate"]),
                _fmt(k["baseline"]),
                _fmt(k["candidate_samples"]),
                _fmt(k["baseline_samples"]),
                k["verdict"],
                escape(k["rule"]),
            )
        console.print(table)
    observed = (evidence.get("observed") or {}) if isinstance(evidence.get("observed"), dict) else {}
    if observed.get("weights"):
        tenants = observed.get("tenants_on_candidate") or []
        moved = f" (tenants on the candidate: {', '.join(tenants)})" if tenants else ""
        console.print(
            f"{'':14}traffic: " + ", ".join(f"{v} {w}%" for v, w in observed["weights"].items()) + moved,
            highlight=False,
        )
    incident = evidence.get("incident") if isinstance(evidence.get("incident"), dict) else None
    if incident and incident.get("described"):
        console.print(f"{'':14}{escape(str(incident['described']))} (`releasegate incident ID`)", highlight=False)
    for check in evidence.get("checks") or []:
        mark = "ok  " if check["passed"] else "FAIL"
        console.print(f"{'':14}{mark} {escape(check['name'])}: {escape(check['reason'])}", highlight=False)
