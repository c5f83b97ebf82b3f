"""What the CLI talks to: Kafka for commands (candidates, approvals, aborts), PostgreSQL for read models."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from opentelemetry import trace

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import TERMINAL_STATES, AbortRequested, CandidateSubmitted, Contract
from contracts.names import MAX_RELEASE_ID
from releasegate_platform import identity
from releasegate_runtime import db, telemetry
from releasegate_runtime.kafka import Producer
from releasegate_runtime.settings import ServiceSettings

SOURCE = "releasegate/cli"


def load_candidate(path: Path, release_id: str | None = None, submitted_by: str = "cli") -> CandidateSubmitted:
    raw: dict[str, Any] = json.loads(path.read_text())
    rid = release_id or new_release_id(str(raw.get("service", "unknown")), str(raw.get("version", "x")))
    return CandidateSubmitted.model_validate({**raw, "release_id": rid, "submitted_by": submitted_by})


def new_release_id(service: str, version: str) -> str:
    """`<service>-<version>-<8 random hex>`, e.g. `shop-v2-1a2b3c4d`; a long service and version are shortened to
    fit the release id's length limit (the random tail keeps it unique)."""
    tail = uuid.uuid4().hex[:8]
    return f"{f'{service}-{version}'[: MAX_RELEASE_ID - len(tail) - 1]}-{tail}"


# Who the CLI is on the bus when RG_PRINCIPAL does not say: a CI job submits as `ci`, an operator acts as `ops`
# (deploy/kafka/acls.yaml); each only with its own password file.
DEFAULT_PRINCIPALS = {topics.CANDIDATES: "ci", topics.CONTROL: "ops"}


async def publish(settings: ServiceSettings, topic: str, event: Contract, subject: str) -> None:
    telemetry.configure("cli", settings.otlp_endpoint)
    settings = settings.model_copy(update={"principal": settings.principal or DEFAULT_PRINCIPALS.get(topic)})
    with trace.get_tracer("releasegate.cli").start_as_current_span(f"cli publish {event.event_type}"):
        producer = Producer(settings, "releasegate-cli")
        await producer.start()
        try:
            await producer.send_envelope(topic, Envelope.new(event, SOURCE, subject, trace=telemetry.inject()))
        finally:
            await producer.stop()


async def submit(settings: ServiceSettings, candidate: CandidateSubmitted) -> str:
    await publish(settings, topics.CANDIDATES, candidate, candidate.release_id)
    return candidate.release_id


async def control(settings: ServiceSettings, event: Contract) -> None:
    await publish(settings, topics.CONTROL, event, event.release_id)


async def releases(settings: ServiceSettings, release_id: str | None, limit: int = 20) -> list[dict[str, Any]]:
    pool = await db.create_pool(settings.database_url)
    try:
        async with pool.acquire() as conn:
            if release_id:
                rows = await conn.fetch(
                    "SELECT release_id, service, version, digest, state, body, created_at,"
                    " updated_at FROM sagas WHERE release_id = $1",
                    release_id,
                )
            else:
                rows = await conn.fetch(
                    "SELECT release_id, service, version, digest, state, body, created_at,"
                    " updated_at FROM sagas ORDER BY created_at DESC LIMIT $1",
                    limit,
                )
        return [_release(dict(r)) for r in rows]
    finally:
        await pool.close()


def _release(r: dict[str, Any]) -> dict[str, Any]:
    body = r.pop("body")
    return {
        **r,
        "step": body.get("waiting_for"),
        "created_at": r["created_at"].isoformat(),
        "updated_at": r["updated_at"].isoformat(),
    }


async def timeline(settings: ServiceSettings, release_id: str, after_id: int = 0) -> list[dict[str, Any]]:
    pool = await db.create_pool(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, at, actor, state, step, reason, evidence FROM audit_log"
                " WHERE release_id = $1 AND id > $2 ORDER BY id",
                release_id,
                after_id,
            )
        return [{**dict(r), "at": r["at"].isoformat()} for r in rows]
    finally:
        await pool.close()


async def gate_decisions(settings: ServiceSettings, release_id: str) -> list[dict[str, Any]]:
    pool = await db.create_pool(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT step_id, environment, decision, risk, policy_version, input_digest, rules,"
                " warnings, refused, decided_at, input->'change' AS change FROM gate_decisions"
                " WHERE release_id = $1 ORDER BY decided_at",
                release_id,
            )
        return [{**dict(r), "decided_at": r["decided_at"].isoformat()} for r in rows]
    finally:
        await pool.close()


def actor_for(settings: ServiceSettings, key: Path, actor: str | None = None) -> str:
    """`actor` if given, else the person in the identities file (RG_POLICY_DIR/identities.yaml) whose key `key`
    is; IdentityError if nobody's."""
    if actor:
        return actor
    keyid = identity.key_id(key)
    owner = identity.Identities.load(settings.identities_file).owner(keyid)
    if owner is None:
        raise identity.IdentityError(
            f"nobody in {settings.identities_file} has the key of {key} ({keyid}); say who you are with --actor"
        )
    return owner


async def abort_in_flight(settings: ServiceSettings, actor: str | None, reason: str, *, key: Path) -> list[str]:
    """Abort every release that has not ended (used to give demos and tests a clean start), each abort signed
    with `key` (by `actor`, default: the identity that key belongs to)."""
    name = actor_for(settings, key, actor)
    pool = await db.create_pool(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT release_id FROM sagas WHERE state <> ALL($1::text[])", [s.value for s in TERMINAL_STATES]
            )
    finally:
        await pool.close()
    for row in rows:
        await control(
            settings,
            identity.sign_command(key, AbortRequested(release_id=row["release_id"], actor=name, reason=reason)),
        )
    return [r["release_id"] for r in rows]


async def all_ended(settings: ServiceSettings, release_ids: list[str]) -> bool:
    rows = await releases(settings, None, limit=1000)
    states = {r["release_id"]: r["state"] for r in rows}
    return all(states.get(rid) in {s.value for s in TERMINAL_STATES} for rid in release_ids)
