"""Change records in the control database, as rg_api: the evidence of an ended release gathered from the read models
the API serves (plus the gate inputs, backups, drills and incident the release page does not show), and the
`change_records` table the API may only read and append to."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from contracts.events import TERMINAL_STATES
from services.api.read_models import PgReadModels

_TERMINAL = [s.value for s in TERMINAL_STATES]
MAX_LISTED = 500


@dataclass(frozen=True)
class StoredRecord:
    release_id: str
    service: str
    version: str
    outcome: str
    keyid: str
    payload_sha256: str
    envelope: dict[str, Any]


def plain(value: Any) -> Any:
    """A database value as JSON: timestamps as ISO 8601, jsonb text decoded, nested values alike."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class PgRecordStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._read_models = PgReadModels(pool)

    async def evidence(self, release_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        detail = await self._read_models.release(release_id)
        if detail is None:
            return None
        release = detail["release"]
        async with self._pool.acquire() as conn:
            body = _json(await conn.fetchval("SELECT body FROM sagas WHERE release_id = $1", release_id)) or {}
            inputs = await conn.fetch(
                "SELECT step_id, input->'attestation' AS attestation, input->'approvals' AS approvals,"
                " input->'trust' AS trust FROM gate_decisions WHERE release_id = $1 ORDER BY decided_at",
                release_id,
            )
            # the release's own backup point, and the newest backup and drill its DR check could have relied on
            backups = await conn.fetch(
                "SELECT id, database, kind, bytes, sha256, started_at, finished_at FROM backups"
                " WHERE release_id = $1 OR id = (SELECT id FROM backups WHERE finished_at <="
                " (SELECT max(at) FROM dr_reports WHERE release_id = $1) ORDER BY finished_at DESC LIMIT 1)"
                " ORDER BY id",
                release_id,
            )
            drills = await conn.fetch(
                "SELECT id, database, backup_id, started_at, seconds, passed, reason FROM dr_drills"
                " WHERE started_at <= (SELECT max(at) FROM dr_reports WHERE release_id = $1)"
                " ORDER BY started_at DESC LIMIT 1",
                release_id,
            )
            stable = (body.get("stable") or {}).get("production")
            stable_source = (
                _json(
                    await conn.fetchval(
                        "SELECT body->'candidate'->'source' FROM sagas WHERE service = $1 AND version = $2"
                        " AND state = 'promoted' ORDER BY updated_at DESC LIMIT 1",
                        release["service"],
                        stable,
                    )
                )
                if stable
                else None
            )
            incidents = await self._incidents(conn, release_id)
        gate_inputs = {r["step_id"]: {k: _json(r[k]) for k in ("attestation", "approvals", "trust")} for r in inputs}
        extras = {
            "body": body,
            "gate_inputs": gate_inputs,
            "backups": plain([dict(b) for b in backups]),
            "drills": plain([dict(d) for d in drills]),
            "stable_source": stable_source,
            "incidents": incidents,
        }
        return detail, extras

    async def _incidents(self, conn: asyncpg.Connection, release_id: str) -> list[dict[str, Any]] | None:
        """The release's incident (the coordinator opens one in the transaction of a rolled-back release's end) with
        its follow-ups as they stand when the record is written; None where the incident tables do not exist. Read as
        whole rows (`to_jsonb`), so the record shows every column the incident model has."""
        if await conn.fetchval("SELECT to_regclass('public.incidents')") is None:
            return None
        rows = await conn.fetch("SELECT to_jsonb(i) AS row FROM incidents i WHERE i.release_id = $1", release_id)
        incidents = [_json(r["row"]) for r in rows]
        if incidents and await conn.fetchval("SELECT to_regclass('public.incident_followups')") is not None:
            followups = await conn.fetch(
                "SELECT to_jsonb(f) AS row FROM incident_followups f WHERE f.release_id = $1 ORDER BY f.followup_id",
                release_id,
            )
            for incident in incidents:
                incident["followups"] = [_json(f["row"]) for f in followups]
        return incidents

    async def unrecorded(self, limit: int) -> list[str]:
        """Ended releases without a record yet, the most recently ended first."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT s.release_id FROM sagas s WHERE s.state = ANY($1::text[]) AND NOT EXISTS"
                " (SELECT 1 FROM change_records c WHERE c.release_id = s.release_id)"
                " ORDER BY s.updated_at DESC LIMIT $2",
                _TERMINAL,
                limit,
            )
        return [r["release_id"] for r in rows]

    async def insert(self, record: StoredRecord) -> bool:
        """Store the record unless the release has one already; whether this one was stored."""
        async with self._pool.acquire() as conn:
            stored = await conn.fetchval(
                "INSERT INTO change_records (release_id, service, version, outcome, keyid, payload_sha256, envelope)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (release_id) DO NOTHING RETURNING true",
                record.release_id,
                record.service,
                record.version,
                record.outcome,
                record.keyid,
                record.payload_sha256,
                record.envelope,  # the pool's jsonb codec encodes it
            )
        return bool(stored)

    async def envelope(self, release_id: str) -> dict[str, Any] | None:
        async with self._pool.acquire() as conn:
            found = await conn.fetchval("SELECT envelope FROM change_records WHERE release_id = $1", release_id)
        return None if found is None else dict(_json(found))

    async def listing(self, service: str, limit: int) -> list[dict[str, Any]]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT release_id, service, version, outcome, keyid, payload_sha256, recorded_at FROM change_records"
                " WHERE service = $1 ORDER BY recorded_at DESC LIMIT $2",
                service,
                min(max(limit, 1), MAX_LISTED),
            )
        return [plain(dict(r)) for r in rows]
