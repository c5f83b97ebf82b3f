"""A change record as one self-contained HTML page: no script, no external asset, every value escaped (release data
carries strings others chose: the candidate's `changes`, reasons, tenant names). Its own Content-Security-Policy
allows only its one style block, so even a value that escaped escaping could run nothing."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1b1f24;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .3rem}h2{font-size:1.15rem;margin:1.8rem 0 .5rem;border-bottom:1px solid #d0d7de}
h3{font-size:1rem;margin:1rem 0 .3rem}
table{border-collapse:collapse;width:100%;margin:.3rem 0 .8rem}th,td{border:1px solid #d0d7de;padding:.25rem .45rem;
text-align:left;vertical-align:top}th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.1rem .55rem;border-radius:1rem;font-weight:600;background:#ddd}
.promoted,.pass,.passed,.ok{background:#dafbe1}.rolled_back,.rollback_failed,.fail,.failed,.block,.refused{background:#ffebe9}
.aborted,.rejected,.wait,.inconclusive{background:#fff8c5}pre{white-space:pre-wrap;background:#f6f8fa;padding:.6rem}
code{word-break:break-all}.muted{color:#57606a}
""".strip()
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
# in the page itself (it travels with the file); `frame-ancestors` only works as a header, so the API adds it there
META_CSP = f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'none'; base-uri 'none'; form-action 'none'"
CSP = f"{META_CSP}; frame-ancestors 'none'"


def _e(value: Any) -> str:
    """Any value as escaped text (None as a dash; a structure as compact JSON)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return escape(f"{value:.4g}")
    if isinstance(value, (dict, list)):
        return escape(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str))
    return escape(str(value), quote=True)


def _cls(value: Any) -> str:
    """A CSS class from a known outcome word only; anything else gets none (values never become markup)."""
    word = str(value)
    known = {"promoted", "rolled_back", "rollback_failed", "aborted", "rejected", "pass", "passed", "fail", "failed"}
    return word if word in known | {"block", "wait", "inconclusive", "ok", "refused"} else ""


def _cell_class(value: Any) -> str:
    if isinstance(value, str):
        return _cls(value)
    return "num" if isinstance(value, int | float) and not isinstance(value, bool) else ""


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]], table_id: str = "") -> str:
    names = list(headers)
    head = f"<thead><tr>{''.join(f'<th>{escape(h)}</th>' for h in names)}</tr></thead>" if names else ""
    body = "".join(
        "<tr>" + "".join(f'<td class="{_cell_class(c)}">{_e(c)}</td>' for c in row) + "</tr>" for row in rows
    )
    ident = f' id="{escape(table_id)}"' if table_id else ""
    return f"<table{ident}>{head}<tbody>{body}</tbody></table>"


def _pairs(items: Mapping[str, Any], table_id: str = "") -> str:
    return _table([], [(k, v) for k, v in items.items()], table_id)


def render(record: Mapping[str, Any], signature: Mapping[str, Any]) -> str:
    """The page of a verified record. `signature` says how it was verified (keyid, payload digest, verified)."""
    r = record["release"]
    c = record.get("candidate") or {}
    parts = [
        f"<h1>Change record: {_e(r['service'])} {_e(r['version'])} "
        f'<span id="outcome" class="badge {_cls(r["outcome"])}">{_e(r["outcome"])}</span></h1>',
        f'<p class="muted">Release <code>{_e(r["release_id"])}</code>, {_e(r.get("strategy"))} rollout, '
        f"{_e(r.get('started_at'))} → {_e(r.get('ended_at'))}. Record generated {_e(record.get('generated_at'))}.</p>",
        _signature(signature),
    ]
    if r.get("failure_reason"):
        parts.append(f"<p><strong>Why it was compensated:</strong> {_e(r['failure_reason'])}</p>")
    notes = record.get("release_notes") or {}
    parts += ["<h2>Release notes</h2>", f'<pre id="release-notes">{_e(notes.get("text"))}</pre>']
    parts += [
        "<h2>Candidate</h2>",
        _pairs(
            {
                "artifact digest": (c.get("artifact") or {}).get("digest"),
                "source": " ".join(str((c.get("source") or {}).get(k) or "") for k in ("repository", "ref")),
                "commit": (c.get("source") or {}).get("commit"),
                "author": c.get("author"),
                "submitted by": c.get("submitted_by"),
                "changes": c.get("changes"),
                "tests": c.get("tests"),
                "vulnerabilities": c.get("vulnerabilities"),
                "attestation": c.get("attestation_sha256"),
            },
            "candidate-table",
        ),
    ]
    p = record.get("provenance") or {}
    parts += [
        "<h2>Provenance verification</h2>",
        _pairs(
            {
                "verified": p.get("verified"),
                "checked by": f"{p.get('checked_by') or '–'} at {p.get('step_id') or '–'} ({p.get('checked_at') or '–'})",
                "builder": p.get("builder_id"),
                "signatures": f"{p.get('valid_signatures', 0)} valid of {p.get('threshold', 0)} required",
                "source": f"{p.get('source_repository') or '–'}@{p.get('source_ref') or '–'} ({p.get('source_commit') or '–'})",
                "trust root": p.get("trust_root"),
                "problems": "; ".join(p.get("problems") or []) or "none",
            },
            "provenance-table",
        ),
    ]
    parts.append("<h2>Gate decisions</h2>")
    for g in record.get("gates") or []:
        parts.append(
            f"<h3>{_e(g['step_id'])} ({_e(g.get('environment'))}): "
            f'<span class="badge {_cls(g.get("decision"))}">{_e(g.get("decision"))}</span> '
            f"{_e(g.get('risk'))} risk, policy {_e(g.get('policy_version'))}, {_e(g.get('decided_at'))}</h3>"
            f'<p class="muted">input digest <code>{_e(g.get("input_digest"))}</code></p>'
        )
        parts.append(
            _table(["rule", "outcome", "reason"], [(x["name"], x["outcome"], x["reason"]) for x in g["rules"]])
        )
        for w in g.get("warnings") or []:
            parts.append(f"<p>Warning: {_e(w)}</p>")
        for w in g.get("refused") or []:
            parts.append(f"<p>Refused approval: {_e(w)}</p>")
    if not record.get("gates"):
        parts.append("<p>No gate decided on this release.</p>")
    parts += [
        "<h2>Approvals</h2>",
        _table(
            ["who", "kind", "groups", "signature valid", "signed at", "attested by", "reason"],
            [
                (
                    a["actor"],
                    a["kind"],
                    ", ".join(a.get("groups") or []),
                    a.get("signature_valid"),
                    a.get("signed_at"),
                    a.get("attested_by"),
                    a.get("reason"),
                )
                for a in record.get("approvals") or []
            ],
            "approvals-table",
        )
        if record.get("approvals")
        else "<p>No approval was needed or given.</p>",
    ]
    parts += _dr(record.get("dr") or {})
    parts += _verdicts(record.get("verdicts") or [])
    parts += [
        "<h2>Traffic</h2>",
        _table(
            ["at", "step", "environment", "split", "tenants on the candidate"],
            [
                (
                    t["at"],
                    t["step"],
                    t["environment"],
                    ", ".join(f"{v} {w}%" for v, w in t["weights"].items()),
                    ", ".join(t.get("tenants_on_candidate") or []),
                )
                for t in record.get("traffic") or []
            ],
            "traffic-table",
        ),
    ]
    parts += _compensations(record.get("compensations") or [])
    parts += _incident(record.get("incident") or {})
    parts += [
        "<h2>Timeline</h2>",
        _table(
            ["at", "actor", "state", "step", "reason"],
            [(e["at"], e["actor"], e["state"], e.get("step"), e["reason"]) for e in record.get("timeline") or []],
            "timeline-table",
        ),
        "<h2>Explanation</h2>",
        f"<pre>{_e(chr(10).join(record.get('explain') or []))}</pre>",
    ]
    title = f"Change record {r['service']} {r['version']} ({r['outcome']})"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{escape(META_CSP)}">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>" + "\n".join(parts) + "</body></html>\n"
    )


def _signature(sig: Mapping[str, Any]) -> str:
    state = "verified" if sig.get("verified") else "NOT verified"
    return (
        f'<p id="signature" class="badge {"ok" if sig.get("verified") else "refused"}">Signature {state}: '
        f"records key <code>{_e(sig.get('keyid'))}</code>, payload <code>{_e(sig.get('payload_sha256'))}</code></p>"
    )


def _dr(dr: Mapping[str, Any]) -> list[str]:
    out = ["<h2>Disaster recovery evidence</h2>"]
    for report in dr.get("reports") or []:
        out.append(f"<h3>{_e(report.get('step_id'))}: ready {_e(report.get('ready'))} ({_e(report.get('at'))})</h3>")
        out.append(
            _table(
                ["check", "passed", "reason"],
                [
                    (x.get("name"), "passed" if x.get("passed") else "failed", x.get("reason"))
                    for x in report.get("checks") or []
                ],
            )
        )
    if dr.get("backup_point"):
        out.append(f"<p>Pre-release backup point: {_e(dr['backup_point'])}</p>")
    if dr.get("backups"):
        out.append(
            _table(
                ["backup", "database", "kind", "finished", "bytes", "sha256"],
                [
                    (
                        b.get("id"),
                        b.get("database"),
                        b.get("kind"),
                        b.get("finished_at"),
                        b.get("bytes"),
                        b.get("sha256"),
                    )
                    for b in dr["backups"]
                ],
                "backups-table",
            )
        )
    if dr.get("drills"):
        out.append(
            _table(
                ["drill", "database", "backup", "started", "seconds", "passed", "reason"],
                [
                    (
                        d.get("id"),
                        d.get("database"),
                        d.get("backup_id"),
                        d.get("started_at"),
                        d.get("seconds"),
                        "passed" if d.get("passed") else "failed",
                        d.get("reason"),
                    )
                    for d in dr["drills"]
                ],
                "drills-table",
            )
        )
    if len(out) == 1:
        out.append("<p>No DR step ran for this release.</p>")
    return out


def _verdicts(verdicts: list[Mapping[str, Any]]) -> list[str]:
    out = ['<h2>Verification verdicts</h2><div id="verdicts">']
    for v in verdicts:
        out.append(
            f"<h3>{_e(v.get('step_id'))} ({_e(v.get('environment'))}) by {_e(v.get('verifier'))}: "
            f'<span class="badge {_cls(v.get("outcome"))}">{_e(v.get("outcome"))}</span></h3><p>{_e(v.get("reason"))}</p>'
        )
        out.append(
            _table(
                ["KPI", "candidate", "stable", "n candidate", "n stable", "verdict", "rule"],
                [
                    (
                        k.get("name"),
                        k.get("candidate"),
                        k.get("baseline"),
                        k.get("candidate_samples"),
                        k.get("baseline_samples"),
                        k.get("verdict"),
                        k.get("rule"),
                    )
                    for k in v.get("kpis") or []
                ],
            ).replace("<table>", '<table class="kpis">', 1)
        )
    if not verdicts:
        out.append("<p>No verification step reached a verdict.</p>")
    return [*out, "</div>"]


def _compensations(compensations: list[Mapping[str, Any]]) -> list[str]:
    out = ['<h2>Compensations</h2><div id="compensations">']
    for c in compensations:
        out.append(
            f"<h3>{_e(c.get('id'))}: {_e(c.get('name'))} ({_e(c.get('status'))}), undoes "
            f"{_e(', '.join(c.get('undoes') or []))}</h3>"
        )
        out.append(
            _table(
                ["at", "actor", "state", "reason"],
                [(e["at"], e["actor"], e["state"], e["reason"]) for e in c.get("events") or []],
            )
        )
    if not compensations:
        out.append("<p>None: nothing had to be undone.</p>")
    return [*out, "</div>"]


def _incident(incident: Mapping[str, Any]) -> list[str]:
    out = ['<h2>Incident</h2><div id="incident">']
    if not incident.get("present"):
        out.append(f"<p>{_e(incident.get('note') or 'no incident')}</p>")
    for i in incident.get("incidents") or []:
        follow = i.get("followups") or []
        out.append(_pairs({k: v for k, v in i.items() if k != "followups"}))
        if follow:
            out.append(
                _table(
                    sorted({k for f in follow for k in f}),
                    [[f.get(k) for k in sorted({k for f in follow for k in f})] for f in follow],
                )
            )
    return [*out, "</div>"]
