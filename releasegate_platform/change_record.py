"""Change records: one signed evidence bundle per ended release, for an auditor or a change board to take away.
The record is built from the read models the release page and `explain` show (candidate, provenance, gate
decisions, approvals, DR evidence, verdicts with their KPI tables, traffic, compensations, incident), with release
notes from the candidate's changes and the gatekeeper's diff against production; it is sealed in a DSSE envelope
signed with releasegate's `records` key (ed25519), and opened again with the public key alone."""

from __future__ import annotations

import binascii
import copy
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import Error as SSLibError
from securesystemslib.signer import CryptoSigner, SSlibKey

from releasegate_runtime.keys import canonical_json, rfc3339

PAYLOAD_TYPE = "application/vnd.releasegate.change-record+json"
RECORD_VERSION = 1
KEY_NAME = "records"  # <secrets>/keys/records.key signs change records and nothing else
NO_INCIDENT = "no incident"
MAX_TEXT = 2_000  # a reason or a change summary longer than this is cut (and says so): a record stays readable


class RecordError(Exception):
    """A change record is refused: not an envelope of a change record, not signed by the key given, or altered."""


# --- building --------------------------------------------------------------------------------------------


def build(
    detail: Mapping[str, Any],
    extras: Mapping[str, Any],
    generated_at: datetime,
) -> dict[str, Any]:
    """The record of one ended release. `detail` is the API's release read model (release, timeline, traffic,
    verdicts, gates, dr, approvals, explain); `extras` what the release page does not show: the saga's `body`,
    the gates' `gate_inputs` (attestation facts and approvals as judged, by gate step), `backups`, `drills`,
    `incidents` (None: the incident tables do not exist) and `stable_source` (the source of the version the
    candidate replaced, when releasegate released it)."""
    release = detail["release"]
    body: Mapping[str, Any] = extras.get("body") or {}
    candidate: Mapping[str, Any] = body.get("candidate") or {}
    timeline = list(detail.get("timeline") or [])
    gates = list(detail.get("gates") or [])
    gate_inputs: Mapping[str, Any] = extras.get("gate_inputs") or {}
    return {
        "record_version": RECORD_VERSION,
        "release": {
            "release_id": release["release_id"],
            "service": release["service"],
            "version": release["version"],
            "digest": release["digest"],
            "strategy": release.get("strategy"),
            "outcome": release["state"],
            "started_at": release.get("created_at"),
            "ended_at": release.get("updated_at"),
            "failure_reason": _text(detail.get("failure_reason")),
        },
        "candidate": _candidate(candidate, release),
        "provenance": _provenance(gates, gate_inputs),
        "gates": [_gate(g) for g in gates],
        "approvals": _approvals(detail.get("approvals") or [], gates, gate_inputs),
        "dr": {
            "reports": list(detail.get("dr") or []),
            "backup_point": body.get("backup") or body.get("backup_point"),
            "backups": list(extras.get("backups") or []),
            "drills": list(extras.get("drills") or []),
        },
        "verdicts": list(detail.get("verdicts") or []),
        "traffic": list(detail.get("traffic") or []),
        "compensations": _compensations(body.get("compensations") or [], timeline),
        "incident": _incident(extras.get("incidents")),
        "release_notes": release_notes(candidate, gates, extras.get("stable_source"), release),
        "timeline": [
            {k: _text(e.get(k)) if k == "reason" else e.get(k) for k in ("at", "actor", "state", "step", "reason")}
            for e in timeline
        ],
        "explain": list(detail.get("explain") or []),
        "evidence_through": {"audit_log_id": max((int(e.get("id") or 0) for e in timeline), default=0)},
        "generated_at": rfc3339(generated_at),
    }


def _text(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + f"… [cut: {len(value)} characters]"
    return value


def _candidate(candidate: Mapping[str, Any], release: Mapping[str, Any]) -> dict[str, Any]:
    attestation = candidate.get("attestation")
    vulns = candidate.get("vulnerabilities") or None
    return {
        "service": candidate.get("service", release["service"]),
        "version": candidate.get("version", release["version"]),
        "artifact": candidate.get("artifact") or {"digest": release["digest"]},
        "source": candidate.get("source") or {},
        "author": candidate.get("author"),
        "changes": _text(candidate.get("changes") or ""),
        "submitted_by": candidate.get("submitted_by"),
        "tests": candidate.get("tests"),
        "vulnerabilities": (
            {k: vulns.get(k) for k in ("format", "tool", "components", "critical", "high", "medium", "low")}
            if isinstance(vulns, Mapping)
            else None
        ),
        # the attestation itself is in the candidate as CI sent it; the record cites it by digest
        "attestation_sha256": (
            f"sha256:{hashlib.sha256(canonical_json(attestation)).hexdigest()}" if attestation else None
        ),
    }


def _provenance(gates: list[dict[str, Any]], gate_inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance check of the last gate that judged it (the production gate when the release got there)."""
    for gate in reversed(gates):
        facts = (gate_inputs.get(gate["step_id"]) or {}).get("attestation")
        if isinstance(facts, Mapping):
            trust = (gate_inputs.get(gate["step_id"]) or {}).get("trust") or {}
            problems = list(facts.get("problems") or [])
            return {
                "checked_by": "gatekeeper",
                "step_id": gate["step_id"],
                "checked_at": gate.get("decided_at"),
                "verified": not problems and bool(facts.get("signature_verified")),
                "trust_root": trust.get("trust_root"),
                **{k: v for k, v in facts.items() if k != "problems"},
                "problems": problems,
            }
    return {"checked_by": None, "verified": False, "problems": ["no gate judged the candidate's provenance"]}


def _gate(gate: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "step_id": gate["step_id"],
        "environment": gate.get("environment"),
        "decision": gate.get("decision"),
        "risk": gate.get("risk"),
        "policy_version": gate.get("policy_version"),
        "input_digest": gate.get("input_digest"),
        "decided_at": gate.get("decided_at"),
        "rules": [
            {
                "name": r.get("name"),
                "passed": r.get("passed"),
                "outcome": (r.get("evidence") or {}).get("outcome") or ("pass" if r.get("passed") else "deny"),
                "reason": _text(r.get("reason")),
            }
            for r in gate.get("rules") or []
            if isinstance(r, Mapping)
        ],
        "warnings": [_text(w) for w in gate.get("warnings") or []],
        "refused": [_text(w) for w in gate.get("refused") or []],
    }


def _approvals(
    given: list[Mapping[str, Any]], gates: list[dict[str, Any]], gate_inputs: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Every signed approval the release got, with the identity's groups and whether its signature held, as the
    last gate that saw it judged them."""
    judged: dict[tuple[str, str], Mapping[str, Any]] = {}
    for gate in gates:
        for a in (gate_inputs.get(gate["step_id"]) or {}).get("approvals") or []:
            if isinstance(a, Mapping):
                judged[(str(a.get("actor")), str(a.get("kind")))] = {**a, "judged_at": gate["step_id"]}
    out = []
    for a in given:
        seen = judged.get((str(a.get("actor")), str(a.get("kind")))) or {}
        out.append(
            {
                "actor": a.get("actor"),
                "kind": a.get("kind"),
                "reason": _text(a.get("reason")),
                "signed_at": a.get("signed_at"),
                "attested_by": a.get("attested_by"),
                "groups": seen.get("groups"),
                "signature_valid": seen.get("signature_valid"),
                "refused_reason": seen.get("refused_reason"),
                "judged_at": seen.get("judged_at"),
            }
        )
    return out


def _compensations(compensations: list[Mapping[str, Any]], timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each compensation the saga ran (what it undid, how it ended) with the timeline entries of its step."""
    return [
        {
            "id": c.get("id"),
            "environment": c.get("environment"),
            "name": c.get("name"),
            "kind": c.get("kind"),
            "undoes": list(c.get("undoes") or []),
            "status": c.get("status"),
            "events": [
                {"at": e.get("at"), "actor": e.get("actor"), "state": e.get("state"), "reason": _text(e.get("reason"))}
                for e in timeline
                if e.get("step") == c.get("id")
            ],
        }
        for c in compensations
        if isinstance(c, Mapping)
    ]


def _incident(incidents: list[Mapping[str, Any]] | None) -> dict[str, Any]:
    if not incidents:
        return {"present": False, "note": NO_INCIDENT}
    return {"present": True, "incidents": [dict(i) for i in incidents]}


def release_notes(
    candidate: Mapping[str, Any],
    gates: list[Mapping[str, Any]],
    stable_source: Mapping[str, Any] | None,
    release: Mapping[str, Any],
) -> dict[str, Any]:
    """What the release changes: the candidate's own summary, the paths and domains the gatekeeper found changed
    against the bundle in production, and the commit range when the source allows one to be named. releasegate
    has the candidate's head commit only (and the stable version's, when it released it): it lists no commits it
    cannot read."""
    change: Mapping[str, Any] = {}
    for gate in gates:  # the last gate's diff is against what production ran when it decided
        if isinstance(gate.get("change"), Mapping):
            change = gate["change"]
    source = candidate.get("source") or {}
    head = source.get("commit")
    base = (stable_source or {}).get("commit")
    same_repo = stable_source is not None and stable_source.get("repository") == source.get("repository")
    if base and head and same_repo:
        note = (
            f"commits {base[:12]}..{head[:12]} of {source.get('repository')}: releasegate records the range; "
            "it has no access to the repository's history to list the commits in it"
        )
    else:
        note = (
            f"only the candidate's commit {str(head)[:12]} is known; the version it replaces "
            f"({change.get('baseline_version') or 'none'}) has no recorded source commit in releasegate, and "
            "releasegate has no access to the repository's history, so no commits are listed"
        )
    paths = list(change.get("paths") or [])
    domains = list(change.get("domains") or [])
    summary = _text(candidate.get("changes") or "")
    lines = [f"{release['service']} {release['version']}: {summary or '(no summary given by CI)'}"]
    if change:
        lines.append(
            f"Changed against {change.get('baseline_version') or 'an empty production'}: "
            f"{len(paths)} file(s), {change.get('lines_changed', 0)} line(s)"
            + (f", domains {', '.join(domains)}" if domains else "")
            + "."
        )
        lines += [f"  {p}" for p in paths[:200]]
    else:
        lines.append("No gate compared the candidate with production (the release ended before its first gate).")
    lines.append(f"Commits: {note}.")
    return {
        "summary": summary,
        "baseline_version": change.get("baseline_version"),
        "changed_paths": paths,
        "domains": domains,
        "unclassified": list(change.get("unclassified") or []),
        "files_changed": change.get("files_changed"),
        "lines_changed": change.get("lines_changed"),
        "commit_range": {"from": base if same_repo else None, "to": head, "repository": source.get("repository")},
        "commits": None,
        "commits_note": note,
        "text": "\n".join(lines),
    }


# --- sealing and opening ----------------------------------------------------------------------------------


def seal(record: Mapping[str, Any], signer: CryptoSigner) -> dict[str, Any]:
    """The DSSE envelope (JSON-able) of `record`, signed with `signer`. Canonical JSON: the same record always
    gives the same payload."""
    envelope = Envelope(canonical_json(record), PAYLOAD_TYPE, {})
    envelope.sign(signer)
    return envelope.to_dict()


def payload_digest(envelope: Mapping[str, Any]) -> str:
    """sha256 of the envelope's payload bytes, to cite a record by."""
    try:
        raw = Envelope.from_dict(copy.deepcopy(dict(envelope))).payload
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error, SSLibError) as exc:
        raise RecordError(f"not a DSSE envelope ({type(exc).__name__})") from None
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


def open_envelope(envelope: Any, key: SSlibKey) -> dict[str, Any]:
    """The record inside `envelope` if `key` signed exactly this payload; RecordError otherwise. Only the public key
    is needed. A signature by any other key does not count, whatever keyid it claims."""
    if not isinstance(envelope, Mapping):
        raise RecordError(f"a change record is a DSSE envelope (a JSON object), not a {type(envelope).__name__}")
    try:
        dsse = Envelope.from_dict(copy.deepcopy(dict(envelope)))
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error, SSLibError) as exc:
        raise RecordError(f"not a valid DSSE envelope ({type(exc).__name__}: {exc})") from None
    if dsse.payload_type != PAYLOAD_TYPE:
        raise RecordError(f"payload type is {dsse.payload_type!r}, not {PAYLOAD_TYPE!r}")
    signature = dsse.signatures.get(key.keyid)
    if signature is None:
        signed_by = ", ".join(sorted(dsse.signatures)) or "nobody"
        raise RecordError(f"not signed by the records key {key.keyid[:16]}… (signed by: {signed_by[:200]})")
    try:
        key.verify_signature(signature, dsse.pae())
    except SSLibError:
        raise RecordError(
            f"the signature of {key.keyid[:16]}… does not verify: the record was altered after it was signed"
        ) from None
    try:
        record = json.loads(dsse.payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"the signed payload is not JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("record_version") != RECORD_VERSION:
        raise RecordError(f"the signed payload is not a change record of version {RECORD_VERSION}")
    return record
