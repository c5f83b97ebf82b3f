"""The read models the API serves, from the control database as the read-only role rg_api: releases, their
timelines, traffic split over time, verdicts with their KPI tables, gate decisions, DR evidence, pending
approvals, the verifier registry and dead letters. Every query is bounded."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from contracts.events import TERMINAL_STATES
from releasegate_platform.explain import explain_release

MAX_RELEASES = 500
MAX_TIMELINE = 2_000
MAX_DEAD_LETTERS = 200
_TERMINAL = [s.value for s in TERMINAL_STATES]
_GATE_JSON = frozenset({"rules", "warnings", "refused", "change"})  # the jsonb columns of gate_decisions


class ReadModels(Protocol):
    async def releases(self, limit: int, service: str | None = None) -> list[dict[str, Any]]: ...
    async def release(self, release_id: str) -> dict[str, Any] | None: ...
    async def saga_rules(self, release_id: str) -> tuple[str, str, dict[str, Any]] | None: ...
    async def verifiers(self) -> list[dict[str, Any]]: ...
    async def dead_letters(self, limit: int) -> list[dict[str, Any]]: ...
    async def pending_approvals(self) -> list[dict[str, Any]]: ...


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def summary(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    body = _json(row["body"]) or {}
    return {
        "release_id": row["release_id"],
        "service": row["service"],
        "version": row["version"],
        "digest": row["digest"],
        "strategy": _strategy(body),
        "state": row["state"],
        "step": body.get("waiting_for"),
        "environment": _step_environment(body),
        "terminal": row["state"] in _TERMINAL,
        "author": (body.get("candidate") or {}).get("author"),
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "age_seconds": round((now - row["created_at"]).total_seconds(), 1),
    }


def _step_environment(body: Mapping[str, Any]) -> str | None:
    """The environment of the step the release is at (or ended at)."""
    step = body.get("waiting_for")
    for s in body.get("plan") or []:
        if s.get("id") == step:
            env = s.get("environment")
            return str(env) if env else None
    if isinstance(step, str) and step.startswith("compensate:"):
        return step.split(":", 1)[1]
    deployed = body.get("deployed_environments") or []
    return deployed[-1] if deployed else None


def _strategy(body: Mapping[str, Any]) -> str:
    """The rollout strategy, told by the plan's steps (services/coordinator/plans)."""
    ids = [str(s.get("id", "")) for s in body.get("plan") or []]
    if any(i.startswith("wave-") for i in ids):
        return "tenant-phased"
    if any(i.startswith("roll-") for i in ids):
        return "rolling"
    if "keep-blue-warm" in ids:
        return "blue-green"
    return "canary"


def traffic(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The traffic split after each step that moved it, from what the deployer or the rollback reported
    (`evidence.observed`), per environment."""
    points = []
    for row in timeline:
        observed = (row.get("evidence") or {}).get("observed")
        if not isinstance(observed, Mapping) or not isinstance(observed.get("weights"), Mapping):
            continue
        step = row.get("step") or ""
        points.append(
            {
                "at": row["at"],
                "step": step,
                "environment": _environment(step, row.get("reason") or ""),
                "weights": {str(k): int(v) for k, v in observed["weights"].items()},
                "tenants_on_candidate": list(observed.get("tenants_on_candidate") or []),
            }
        )
    return points


def _environment(step: str, reason: str) -> str:
    if step.endswith("staging") or " in staging" in reason or "of staging" in reason:
        return "staging"
    return "production"


def verdicts(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each verification step's outcome with its KPI table (candidate vs stable, samples, test, statistic, rule
    with its decision boundary), as the coordinator recorded it."""
    out = []
    for row in timeline:
        evidence = row.get("evidence") or {}
        kpis = evidence.get("kpis")
        if not isinstance(kpis, list):
            continue
        out.append(
            {
                "at": row["at"],
                "step_id": row.get("step"),
                "environment": _environment(row.get("step") or "", row.get("reason") or ""),
                "outcome": _outcome(row.get("reason") or ""),
                "reason": row.get("reason"),
                "verifier": evidence.get("verifier") or "all required",
                "verdict": evidence.get("verdict") or _outcome(row.get("reason") or ""),
                "window": evidence.get("window"),
                "kpis": [kpi_row(k) for k in kpis if isinstance(k, Mapping)],
            }
        )
    return out


_LAMBDA_BOUND = re.compile(r"1/[αβ]\s*=\s*([0-9.]+)")
_THRESHOLD = re.compile(r"(?:<=|>=|<|>|≤|≥|min|max)\s*([0-9]+(?:\.[0-9]+)?)")


def kpi_row(kpi: Mapping[str, Any]) -> dict[str, Any]:
    """A KPI of a verdict as the dashboard charts it: candidate vs stable with their sample sizes, the test's
    statistic and the boundary it is decided against (1/α for a sequential test's likelihood ratio, else the
    threshold of the rule), taken from the rule the verifier wrote."""
    rule = str(kpi.get("rule") or "")
    found = _LAMBDA_BOUND.search(rule) if kpi.get("statistic") is not None else None
    found = found or _THRESHOLD.search(rule)
    return {
        **kpi,
        "stable": kpi.get("baseline"),
        "candidate_n": kpi.get("candidate_samples"),
        "stable_n": kpi.get("baseline_samples"),
        "boundary": float(found.group(1)) if found else None,
        "passed": kpi.get("verdict") == "pass" if kpi.get("verdict") in ("pass", "fail") else None,
    }


def _outcome(reason: str) -> str:
    for word in ("failed", "inconclusive", "passed"):
        if f" {word}" in reason:
            return word
    return "recorded"


class PgReadModels:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def releases(self, limit: int, service: str | None = None) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT release_id, service, version, digest, state, body, created_at, updated_at FROM sagas"
                " WHERE $2::text IS NULL OR service = $2 ORDER BY created_at DESC LIMIT $1",
                min(max(limit, 1), MAX_RELEASES),
                service,
            )
        return [summary(r, now) for r in rows]

    async def saga_rules(self, release_id: str) -> tuple[str, str, dict[str, Any]] | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow("SELECT service, state, body FROM sagas WHERE release_id = $1", release_id)
        return None if row is None else (row["service"], row["state"], _json(row["body"]))

    async def release(self, release_id: str) -> dict[str, Any] | None:
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT release_id, service, version, digest, state, body, created_at, updated_at FROM sagas"
                " WHERE release_id = $1",
                release_id,
            )
            if row is None:
                return None
            audit = await conn.fetch(
                "SELECT id, at, actor, state, step, reason, evidence FROM audit_log WHERE release_id = $1"
                " ORDER BY id LIMIT $2",
                release_id,
                MAX_TIMELINE,
            )
            gates = await conn.fetch(
                "SELECT step_id, environment, decision, risk, policy_version, input_digest, rules, warnings,"
                " refused, decided_at, input->'change' AS change FROM gate_decisions WHERE release_id = $1"
                " ORDER BY decided_at",
                release_id,
            )
            dr = await conn.fetch(
                "SELECT step_id, ready, checks, at FROM dr_reports WHERE release_id = $1 ORDER BY at", release_id
            )
        body = _json(row["body"]) or {}
        release = summary(row, now)
        timeline = [{**dict(r), "at": _iso(r["at"]), "evidence": _json(r["evidence"]) or {}} for r in audit]
        decisions = [
            {
                **{k: _json(v) if k in _GATE_JSON else v for k, v in dict(g).items()},
                "decided_at": _iso(g["decided_at"]),
            }
            for g in gates
        ]
        split = traffic(timeline)
        release["weights"] = split[-1]["weights"] if split else {}
        return {
            "release": release,
            "timeline": timeline,
            "traffic": split,
            "verdicts": verdicts(timeline),
            "gates": decisions,
            "explain": explain_release(release, decisions, timeline),
            "dr": [
                {"step_id": d["step_id"], "ready": d["ready"], "checks": _json(d["checks"]), "at": _iso(d["at"])}
                for d in dr
            ],
            "approvals": [
                {k: a.get(k) for k in ("actor", "kind", "reason", "signed_at")}
                | {"attested_by": (a.get("attested") or {}).get("by")}
                for a in body.get("approvals") or []
            ],
            "pending_approvals": pending(release, body, timeline),
            "failure_reason": body.get("failure_reason"),
        }

    async def verifiers(self) -> list[dict[str, Any]]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT name, instance, version, services, environments, kpis, interval_seconds, first_seen,"
                " last_heartbeat FROM verifier_registry ORDER BY name, instance LIMIT 500"
            )
        now = datetime.now(UTC)
        return [
            {
                **dict(r),
                "first_seen": _iso(r["first_seen"]),
                "last_heartbeat": _iso(r["last_heartbeat"]),
                "alive": (now - r["last_heartbeat"]).total_seconds() <= 3 * r["interval_seconds"],
            }
            for r in rows
        ]

    async def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        """Records a consumer could not process and could not dead-letter either (parked), and commands the
        deployer or the rollback refused; the dead-letter topic itself is read with `releasegate dead-letters`."""
        async with self._pool.acquire() as conn:
            parked = await conn.fetch(
                "SELECT consumer_group, topic, partition, record_offset, reason, error_type, value_bytes,"
                " value_digest, parked_at FROM parked_records ORDER BY parked_at DESC LIMIT $1",
                min(limit, MAX_DEAD_LETTERS),
            )
            refused = await conn.fetch(
                "SELECT * FROM refused_commands ORDER BY 1 DESC LIMIT $1", min(limit, MAX_DEAD_LETTERS)
            )
        return [{"kind": "parked", **dict(p), "parked_at": _iso(p["parked_at"])} for p in parked] + [
            {
                "kind": "refused_command",
                **{k: (_iso(v) if isinstance(v, datetime) else v) for k, v in dict(r).items()},
            }
            for r in refused
        ]

    async def pending_approvals(self) -> list[dict[str, Any]]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT release_id, service, version, digest, state, body, created_at, updated_at FROM sagas"
                " WHERE state IN ('awaiting_approval', 'waiting_window', 'paused') ORDER BY created_at LIMIT 200"
            )
        now = datetime.now(UTC)
        out = []
        for r in rows:
            body = _json(r["body"]) or {}
            for p in pending(summary(r, now), body, []):
                out.append({"release_id": r["release_id"], "service": r["service"], "version": r["version"], **p})
        return out


def pending(
    release: Mapping[str, Any], body: Mapping[str, Any], timeline: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """What the release waits for from people, and which groups may give it."""
    config = body.get("config") or {}
    given = [a.get("actor") for a in body.get("approvals") or [] if a.get("kind") == "approval"]
    why = next((r["reason"] for r in reversed(timeline) if r.get("state") == release["state"]), None)
    state = release["state"]
    if state == "awaiting_approval":
        return [
            {
                "kind": "approval",
                "step": release["step"],
                "groups": [config.get("approver_group") or "approvers"],
                "given": given,
                "reason": why,
            }
        ]
    if state == "waiting_window":
        return [
            {
                "kind": "exception",
                "step": release["step"],
                "groups": [config.get("exception_group") or "release-managers"],
                "given": [],
                "reason": why,
            }
        ]
    if state == "paused":
        operators = body.get("operators") or {}
        return [
            {
                "kind": "go",
                "step": release["step"],
                "groups": operators.get("go") or [config.get("approver_group") or "approvers"],
                "given": [],
                "reason": why,
            }
        ]
    return []
