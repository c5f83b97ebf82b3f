"""What the coordinator's handlers need from the world, as ports: the saga store (one transaction at a time:
the saga row with optimistic concurrency, processed events, nonces, deadlines, audit log, outbox), the catalog,
the identities file and the clock. `adapters/` implements them on PostgreSQL; unit tests use in-memory fakes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from contracts.cloudevents import Envelope
from contracts.events import OpenFollowup, OperatorCommand
from releasegate_platform.catalog import ServiceEntry
from releasegate_platform.identity import Identities
from releasegate_platform.verifier_registry import Known
from services.coordinator.model import Saga

Clock = Callable[[], datetime]
# The identities file as it is now (re-read per command: people change); raises identity.IdentityError.
LoadIdentities = Callable[[], Identities]


class ConcurrentUpdate(Exception):
    """Another writer changed the saga first (optimistic concurrency); the caller reloads and retries."""


@dataclass(frozen=True)
class Loaded:
    saga: Saga
    revision: int = 0


@dataclass(frozen=True)
class AuditEntry:
    release_id: str
    actor: str
    state: str
    step: str | None
    reason: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class Due:
    release_id: str
    step_id: str
    due_at: datetime


class Transaction(Protocol):
    """Everything done through one transaction commits together, or not at all."""

    async def first_time(self, consumer: str, event_id: str) -> bool:
        """Record that `consumer` handled `event_id`; False if it had already."""

    async def exists(self, release_id: str) -> bool: ...

    async def insert(self, saga: Saga) -> None:
        """Store a new saga (revision 0)."""

    async def load(self, release_id: str) -> Loaded | None:
        """The saga (upcast to the current shape) and the revision it was read at; None if unknown."""

    async def save(self, saga: Saga, revision: int) -> None:
        """Store `saga` if its row is still at `revision`; else raise `ConcurrentUpdate`."""

    async def first_use_of_nonce(self, command: OperatorCommand, at: datetime) -> bool:
        """Record the command's nonce; False if it was recorded before (a replay)."""

    async def verifiers(self, now: datetime) -> Known:
        """The registry: alive verifiers and registered ones, each name → the services its instances cover."""

    async def set_deadline(self, release_id: str, deadline: tuple[str, datetime] | None) -> None:
        """Replace the release's deadline (None: clear it)."""

    async def claim_deadline(self, due: Due) -> bool:
        """Hold `due` for this transaction; False when another coordinator instance holds it or it is no longer
        the release's deadline (replaced or cleared since it was read)."""

    async def audit(self, entry: AuditEntry) -> None:
        """Append to the audit log (append-only)."""

    async def audit_as_it_stands(self, release_id: str, actor: str, reason: str, evidence: dict[str, Any]) -> None:
        """Append an entry with the saga's current state and awaited step (a refused input changes neither)."""

    async def publish(self, topic: str, envelope: Envelope) -> None:
        """Stage `envelope` in the outbox; relayed once the transaction commits."""

    async def mark_staging_verified(self, service: str, digest: str, release_id: str) -> None:
        """The staging-verified read model (until the gatekeeper reads the gate command's field instead)."""

    async def record_incident(self, saga: Saga) -> None:
        """Write the saga's incident and its follow-ups to the `incidents` and `incident_followups` tables."""

    async def open_followups(self, service: str) -> list[OpenFollowup]:
        """The open follow-ups of every incident of `service`, oldest first (bounded)."""

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the transaction committed (never if it did not)."""


class SagaStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...

    def batch(
        self,
        consumer: str,
        event_ids: Sequence[str],
        release_ids: Sequence[str],
        *,
        registry_stable: bool,
        now: datetime | None = None,
    ) -> AbstractAsyncContextManager[None]:
        """One transaction for a batch of records: every `transaction()` inside the block is this one, and it
        commits when the block ends (nothing of it if the block raises). `event_ids`: the events `consumer` will
        ask `first_time` about; `release_ids`: the sagas the records concern; `registry_stable`: no heartbeat
        among the records (the verifier registry may be read once for the batch, as it is at `now`)."""

    async def due_deadlines(self, now: datetime, limit: int) -> list[Due]: ...


class CatalogPort(Protocol):
    def get(self, service: str) -> ServiceEntry:
        """The service's entry; raises `releasegate_platform.catalog.CatalogError` if it has none."""
