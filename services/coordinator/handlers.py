"""What the coordinator does when an event arrives or a deadline passes: load the saga, decide, persist the
decision (saga row, audit log, deadlines, outbox) in one transaction. The store, catalog, identities and clock
are ports, wired by `bootstrap`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import structlog
from opentelemetry import trace
from securesystemslib.signer import CryptoSigner

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import (
    CandidateSubmitted,
    FollowupAdded,
    GateCheckRequested,
    OperatorCommand,
    ReleaseEvent,
    ReleaseStatusChanged,
    VerifierHeartbeat,
)
from releasegate_platform import identity
from releasegate_platform.catalog import CatalogError
from releasegate_platform.verifier_registry import Known
from releasegate_runtime import telemetry
from releasegate_runtime.kafka import PermanentError
from services.coordinator import control, saga, step_grants
from services.coordinator.metrics import DecisionMetrics
from services.coordinator.ports import (
    AuditEntry,
    CatalogPort,
    Clock,
    ConcurrentUpdate,
    Due,
    LoadIdentities,
    SagaStore,
    Transaction,
)

CONSUMER = "coordinator"
SOURCE = "releasegate/coordinator"
ATTEMPTS = 5
log = structlog.get_logger()
tracer = trace.get_tracer("releasegate.coordinator")

__all__ = ["CONSUMER", "ConcurrentUpdate", "Coordinator", "utcnow"]

# (saga, alive verifiers → services they cover, whether the operator command's nonce was used before)
Decide = Callable[[saga.Saga, Known, bool], saga.Decision]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Coordinator:
    def __init__(
        self,
        store: SagaStore,
        catalog: CatalogPort,
        identities: LoadIdentities,
        grant_signer: CryptoSigner,
        clock: Clock = utcnow,
        metrics: DecisionMetrics | None = None,
    ) -> None:
        """`grant_signer`: the coordinator's ed25519 key; it signs the step grant of every deploy and
        compensation command. `metrics`: told of every committed decision."""
        self._store, self._catalog, self._clock = store, catalog, clock
        self._metrics = metrics or DecisionMetrics()
        self._identities = identities
        self._grant_signer = grant_signer

    async def on_event(self, envelope: Envelope) -> None:
        with tracer.start_as_current_span(f"coordinator {envelope.type}", context=telemetry.extract(envelope.trace)):
            event = envelope.data
            if isinstance(event, CandidateSubmitted):
                await self._start(envelope, event)
            elif isinstance(event, OperatorCommand):
                signer = self._signer(event)
                owner_known = isinstance(event, FollowupAdded) and self._known_owner(event.owner)
                await self._apply(
                    event.release_id,
                    envelope.id,
                    lambda s, known, replayed: saga.handle(
                        s,
                        event,
                        self._clock(),
                        signer=signer,
                        replayed=replayed,
                        registry=known.alive,
                        registered=known.registered,
                        owner_known=owner_known,
                    ),
                    command=event if signer.verified else None,
                    event=event,
                    event_time=envelope.time,
                )
            elif isinstance(event, ReleaseEvent):
                await self._apply(
                    event.release_id,
                    envelope.id,
                    lambda s, known, _: saga.handle(
                        s, event, self._clock(), registry=known.alive, registered=known.registered
                    ),
                    event=event,
                    event_time=envelope.time,
                )
            else:
                raise PermanentError(f"{type(event).__name__} names no release")

    def batch(self, envelopes: Sequence[Envelope]) -> AbstractAsyncContextManager[None]:
        """One transaction for a batch of records (`releasegate_runtime.kafka.Consumer.batched`): their processed-
        event entries and sagas read up front, one commit for all of them."""
        heartbeat = False
        event_ids: list[str] = []
        release_ids: set[str] = set()
        for envelope in envelopes:
            if isinstance(envelope.data, VerifierHeartbeat):
                heartbeat = True  # the registry's own write; no processed-event entry
                continue
            event_ids.append(envelope.id)
            if (release_id := getattr(envelope.data, "release_id", None)) is not None:
                release_ids.add(release_id)
        return self._store.batch(
            CONSUMER, event_ids, sorted(release_ids), registry_stable=not heartbeat, now=self._clock()
        )

    def _signer(self, event: OperatorCommand) -> control.Signer:
        """What the command's signature proves about who gave it, against the identities as they are now."""
        if event.signed_at is None or not event.signature:
            return control.Signer(identity.NO_SIGNATURE)
        try:
            identities = self._identities()
        except identity.IdentityError as exc:
            return control.Signer(f"cannot check the signature: {exc}")
        return control.signer(identities, event)

    def _known_owner(self, owner: str) -> bool:
        """A follow-up's owner must be someone releasegate knows: a person or a group of the identities file."""
        try:
            identities = self._identities()
        except identity.IdentityError:
            return False
        return owner in identities.people or any(owner in p.groups for p in identities.people.values())

    async def fire_due_deadlines(self, limit: int = 20) -> int:
        due = await self._store.due_deadlines(self._clock(), limit)
        for d in due:
            await self._apply(
                d.release_id,
                f"deadline:{d.release_id}:{d.step_id}:{d.due_at.isoformat()}",
                self._deadline(d.step_id),
                claim=d,
            )
        return len(due)

    def _deadline(self, step_id: str) -> Decide:
        return lambda s, known, _: saga.on_deadline(s, step_id, self._clock(), known.alive)

    async def _start(self, envelope: Envelope, candidate: CandidateSubmitted) -> None:
        async with self._store.transaction() as tx:
            if not await tx.first_time(CONSUMER, envelope.id):
                return
            if await tx.exists(candidate.release_id):
                raise PermanentError(f"release id {candidate.release_id} already exists; submit with a new id")
            trace_ctx = telemetry.inject()
            try:
                decision = saga.start(candidate, self._catalog.get(candidate.service), self._clock(), trace_ctx)
            except CatalogError as exc:
                decision = saga.reject_unknown(candidate, f"rejected: {exc}")
            await tx.insert(decision.saga)
            await self._persist(tx, decision)
            tx.after_commit(lambda: self._metrics.decided(None, decision, candidate, envelope.time, self._clock()))
        log.info("release started", release_id=candidate.release_id, state=decision.saga.state.value)

    async def _apply(
        self,
        release_id: str,
        event_id: str,
        decide: Decide,
        command: OperatorCommand | None = None,
        event: Any = None,
        event_time: datetime | None = None,
        claim: Due | None = None,
    ) -> None:
        """`claim`: the deadline being fired; another coordinator instance firing it at the same moment, or a
        result that replaced it meanwhile, makes this a no-op. `command`: an operator command whose signature verified; its nonce goes into the ledger in the same
        transaction as the decision, and a nonce already there makes it a replay. `event`, `event_time`: what is
        decided on (None: a deadline), for the metrics."""
        for _ in range(ATTEMPTS):
            try:
                await self._apply_once(release_id, event_id, decide, command, event, event_time, claim)
                return
            except ConcurrentUpdate:
                log.info("saga changed concurrently; retrying", release_id=release_id)
        raise ConcurrentUpdate(f"saga {release_id} kept changing under us")

    async def _apply_once(
        self,
        release_id: str,
        event_id: str,
        decide: Decide,
        command: OperatorCommand | None = None,
        event: Any = None,
        event_time: datetime | None = None,
        claim: Due | None = None,
    ) -> None:
        async with self._store.transaction() as tx:
            if claim is not None and not await tx.claim_deadline(claim):
                log.info("deadline taken by another instance or replaced", release_id=release_id, step=claim.step_id)
                return
            if not await tx.first_time(CONSUMER, event_id):
                return
            loaded = await tx.load(release_id)
            if loaded is None:
                raise PermanentError(f"unknown release {release_id!r}")
            replayed = command is not None and not await tx.first_use_of_nonce(command, self._clock())
            decision = decide(loaded.saga, await tx.verifiers(self._clock()), replayed)
            if decision.ignored:
                log.info("event ignored", release_id=release_id, why=decision.ignored)
                return
            await tx.save(decision.saga, loaded.revision)
            await self._persist(tx, decision)
            before = loaded.saga
            tx.after_commit(lambda: self._metrics.decided(before, decision, event, event_time, self._clock()))

    async def _persist(self, tx: Transaction, decision: saga.Decision) -> None:
        s = decision.saga
        trace_ctx = telemetry.inject() or s.trace
        if decision.clear_deadline or decision.deadline:
            await tx.set_deadline(s.release_id, decision.deadline)
        if decision.staging_verified:
            await tx.mark_staging_verified(s.service, s.digest, s.release_id)
        if decision.incident_changed and s.incident is not None:
            await tx.record_incident(s)
        commands = [(topic, await self._with_open_followups(tx, command)) for topic, command in decision.commands]
        for t in decision.transitions:
            await tx.audit(AuditEntry(s.release_id, t.actor, t.state.value, t.step, t.reason, t.evidence))
            if not t.publish:
                continue
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
            await tx.publish(topics.STATUS, Envelope.new(status, SOURCE, s.release_id, trace=trace_ctx))
        for topic, command in step_grants.signed(commands, self._grant_signer, self._clock()):
            await tx.publish(topic, Envelope.new(command, SOURCE, s.release_id, trace=trace_ctx))

    @staticmethod
    async def _with_open_followups(tx: Transaction, command: Any) -> Any:
        """The production gate is told the service's open incident follow-ups (the catalog may block on them)."""
        if not isinstance(command, GateCheckRequested) or command.environment != "production":
            return command
        return command.model_copy(update={"open_followups": await tx.open_followups(command.service)})
