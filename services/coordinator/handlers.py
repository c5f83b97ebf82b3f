"""What the coordinator does when an event arrives or a deadline passes: load the saga, decide, persist the
decision (saga row, audit log, deadlines, outbox) in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import structlog
from opentelemetry import trace
from securesystemslib.signer import CryptoSigner

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import CandidateSubmitted, OperatorCommand, ReleaseStatusChanged
from releasegate_platform import identity
from releasegate_platform.catalog import Catalog, CatalogError
from releasegate_platform.verifier_registry import alive_verifiers
from releasegate_runtime import db, outbox, telemetry
from releasegate_runtime.kafka import PermanentError
from services.coordinator import control, step_grants, upcast
from services.coordinator import saga as domain

CONSUMER = "coordinator"
SOURCE = "releasegate/coordinator"
log = structlog.get_logger()
tracer = trace.get_tracer("releasegate.coordinator")


# (saga, alive verifiers → services they cover, whether the operator command's nonce was used before)
Decide = Callable[[domain.Saga, dict[str, set[str]], bool], domain.Decision]


class ConcurrentUpdate(Exception):
    """Another writer changed the saga first (optimistic concurrency); the caller retries."""


def utcnow() -> datetime:
    return datetime.now(UTC)


async def _first_use_of_nonce(conn: asyncpg.Connection, command: OperatorCommand, at: datetime) -> bool:
    """Record the command's nonce in the ledger; False if it was there already (a replay). Commands without a
    nonce are refused by `control.refusal`, so they have nothing to record."""
    if not command.nonce:
        return True
    row = await conn.fetchrow(
        "INSERT INTO operator_nonces (nonce, release_id, actor, event_type, used_at) VALUES ($1,$2,$3,$4,$5)"
        " ON CONFLICT (nonce) DO NOTHING RETURNING 1",
        command.nonce,
        command.release_id,
        command.actor,
        command.event_type,
        at,
    )
    return row is not None


class Coordinator:
    def __init__(
        self,
        pool: asyncpg.Pool,
        catalog: Catalog,
        identities_file: Path,
        grant_signer: CryptoSigner,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """`grant_signer`: the coordinator's ed25519 key; it signs the step grant of every deploy and
        compensation command."""
        self._pool, self._catalog, self._clock = pool, catalog, clock
        self._identities_file = identities_file
        self._grant_signer = grant_signer

    async def on_event(self, envelope: Envelope) -> None:
        with tracer.start_as_current_span(f"coordinator {envelope.type}", context=telemetry.extract(envelope.trace)):
            event = envelope.data
            if isinstance(event, CandidateSubmitted):
                await self._start(envelope)
            elif isinstance(event, OperatorCommand):
                signer = self._signer(event)
                await self._apply(
                    event.release_id,
                    envelope.id,
                    lambda saga, registry, replayed: domain.handle(
                        saga, event, self._clock(), signer=signer, replayed=replayed, registry=registry
                    ),
                    command=event if signer.verified else None,
                )
            else:
                await self._apply(
                    event.release_id,
                    envelope.id,
                    lambda saga, registry, _: domain.handle(saga, event, self._clock(), registry=registry),
                )

    def _signer(self, event: OperatorCommand) -> control.Signer:
        """What the command's signature proves about who gave it; the identities file is re-read per command:
        people change."""
        if event.signed_at is None or not event.signature:
            return control.Signer(identity.NO_SIGNATURE)
        try:
            identities = identity.Identities.load(self._identities_file)
        except identity.IdentityError as exc:
            return control.Signer(f"cannot check the signature: {exc}")
        return control.signer(identities, event)

    async def fire_due_deadlines(self, limit: int = 20) -> int:
        async with self._pool.acquire() as conn:
            due = await conn.fetch(
                "SELECT release_id, step_id, due_at FROM saga_deadlines WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
                self._clock(),
                limit,
            )
        for row in due:
            step_id = row["step_id"]
            await self._apply(
                row["release_id"],
                f"deadline:{row['release_id']}:{step_id}:{row['due_at'].isoformat()}",
                lambda saga, registry, _, step_id=step_id: domain.on_deadline(saga, step_id, self._clock(), registry),
            )
        return len(due)

    async def _start(self, envelope: Envelope) -> None:
        candidate: CandidateSubmitted = envelope.data  # type: ignore[assignment]
        async with self._pool.acquire() as conn, conn.transaction():
            if not await db.first_time(conn, CONSUMER, envelope.id):
                return
            if await conn.fetchval("SELECT 1 FROM sagas WHERE release_id = $1", candidate.release_id):
                raise PermanentError(f"release id {candidate.release_id} already exists; submit with a new id")
            trace_ctx = telemetry.inject()
            try:
                decision = domain.start(candidate, self._catalog.get(candidate.service), self._clock(), trace_ctx)
            except CatalogError as exc:
                decision = domain.reject_unknown(candidate, f"rejected: {exc}")
            s = decision.saga
            await conn.execute(
                "INSERT INTO sagas (release_id, service, version, digest, state, body) VALUES ($1,$2,$3,$4,$5,$6)",
                s.release_id,
                s.service,
                s.version,
                s.digest,
                s.state.value,
                s.model_dump(mode="json"),
            )
            await self._persist(conn, decision)
        log.info("release started", release_id=candidate.release_id, state=decision.saga.state.value)

    async def _apply(
        self, release_id: str, event_id: str, decide: Decide, command: OperatorCommand | None = None
    ) -> None:
        """`command`: an operator command whose signature verified; its nonce goes into the ledger in the same
        transaction as the decision, and a nonce already there makes it a replay."""
        for _ in range(5):
            try:
                await self._apply_once(release_id, event_id, decide, command)
                return
            except ConcurrentUpdate:
                log.info("saga changed concurrently; retrying", release_id=release_id)
        raise ConcurrentUpdate(f"saga {release_id} kept changing under us")

    async def _apply_once(
        self, release_id: str, event_id: str, decide: Decide, command: OperatorCommand | None = None
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await db.first_time(conn, CONSUMER, event_id):
                return
            row = await conn.fetchrow("SELECT body, revision FROM sagas WHERE release_id = $1", release_id)
            if row is None:
                raise PermanentError(f"unknown release {release_id!r}")
            replayed = command is not None and not await _first_use_of_nonce(conn, command, self._clock())
            decision = decide(upcast.load(row["body"]), await alive_verifiers(conn, self._clock()), replayed)
            if decision.ignored:
                log.info("event ignored", release_id=release_id, why=decision.ignored)
                return
            s = decision.saga
            updated = await conn.execute(
                "UPDATE sagas SET state = $2, body = $3, revision = revision + 1, updated_at = now()"
                " WHERE release_id = $1 AND revision = $4",
                release_id,
                s.state.value,
                s.model_dump(mode="json"),
                row["revision"],
            )
            if updated != "UPDATE 1":
                raise ConcurrentUpdate(release_id)
            await self._persist(conn, decision)

    async def _persist(self, conn: asyncpg.Connection, decision: domain.Decision) -> None:
        s = decision.saga
        trace_ctx = telemetry.inject() or s.trace
        if decision.clear_deadline or decision.deadline:
            await conn.execute("DELETE FROM saga_deadlines WHERE release_id = $1", s.release_id)
        if decision.deadline:
            step_id, due = decision.deadline
            await conn.execute(
                "INSERT INTO saga_deadlines (release_id, step_id, due_at) VALUES ($1, $2, $3)",
                s.release_id,
                step_id,
                due,
            )
        if decision.staging_verified:
            await conn.execute(
                "INSERT INTO staging_verified_artifacts (service, digest, release_id) VALUES ($1,$2,$3)"
                " ON CONFLICT DO NOTHING",
                s.service,
                s.digest,
                s.release_id,
            )
        for t in decision.transitions:
            await conn.execute(
                "INSERT INTO audit_log (release_id, actor, state, step, reason, evidence) VALUES ($1,$2,$3,$4,$5,$6)",
                s.release_id,
                t.actor,
                t.state.value,
                t.step,
                t.reason,
                t.evidence,
            )
            status = ReleaseStatusChanged(
                release_id=s.release_id,
                service=s.service,
                version=s.version,
                state=t.state,
                step=t.step,
                actor=t.actor,
                reason=t.reason,
                evidence=t.evidence,
            )
            await outbox.add(conn, CONSUMER, topics.STATUS, Envelope.new(status, SOURCE, s.release_id, trace=trace_ctx))
        for topic, command in step_grants.signed(decision.commands, self._grant_signer, self._clock()):
            await outbox.add(conn, CONSUMER, topic, Envelope.new(command, SOURCE, s.release_id, trace=trace_ctx))
