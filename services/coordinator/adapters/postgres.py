"""The saga store on PostgreSQL: the saga row updated only at the revision it was read at (optimistic
concurrency), and every effect of a decision in the same transaction."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import asyncpg

from contracts.cloudevents import Envelope
from contracts.events import OpenFollowup, OperatorCommand
from releasegate_platform.verifier_registry import KNOWN, Known, known_of, known_verifiers
from releasegate_runtime import db, outbox
from services.coordinator import upcast
from services.coordinator.model import Saga
from services.coordinator.ports import AuditEntry, ConcurrentUpdate, Due, Loaded

PRODUCER = "coordinator"
# the production gate is told at most this many open follow-ups of a service (oldest first)
OPEN_FOLLOWUPS_TOLD = 200
# A decision's audit entries and outbox events in one statement (one round trip instead of one per row), in the
# order they were staged. Each event is claimed for publication straight after the commit when the store has a
# direct publisher and no earlier event with its key waits (outbox.CLAIM); the relay is woken once (PostgreSQL
# delivers it at commit) only for events not claimed. The claimed ones come back in id order.
STAGED = (
    " INSERT INTO outbox (producer, topic, key, event_id, headers, payload, created_at, claimed_by, claimed_until)"
    " SELECT {producer}, t, k, e, h, p, clock_timestamp(), {claimer}, "
    + outbox.CLAIM.format(claimer="{claimer}", producer="{producer}", key="k")
    + " FROM unnest({events}) WITH ORDINALITY AS u(t, k, e, h, p, n) ORDER BY n"
    " ON CONFLICT (event_id) DO NOTHING RETURNING id, event_id, claimed_until IS NOT NULL AS claimed"
)
CLAIMED = (
    " (SELECT array_agg(id ORDER BY id) FROM staged WHERE claimed) AS claimed_ids,"
    " (SELECT array_agg(event_id ORDER BY id) FROM staged WHERE claimed) AS claimed_events"
)
FLUSH = (
    "WITH audited AS ("
    " INSERT INTO audit_log (release_id, actor, state, step, reason, evidence)"
    " SELECT r, a, s, st, re, ev"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[])"
    " WITH ORDINALITY AS u(r, a, s, st, re, ev, n) ORDER BY n"
    "), staged AS ("
    + STAGED.format(
        producer="$7", claimer="$14::text", events="$8::text[], $9::text[], $10::text[], $11::jsonb[], $12::text[]"
    )
    + ") SELECT CASE WHEN EXISTS (SELECT 1 FROM staged WHERE NOT claimed) THEN pg_notify($13, $7) END AS woken,"
    + CLAIMED
)


# A batch reads once and writes once, and in the common case nothing else: two round trips, no BEGIN and no COMMIT
# (each statement is its own transaction; `PgBatchTransaction` begins one only for a decision that needs a third).
# The read: which of its events are recorded as handled already (redeliveries), its sagas (the body only of those
# whose revision is not the one the coordinator already holds, `SagaCache`) and, if asked, the verifier registry.
READ_ALL = (
    "SELECT 'handled' AS kind, event_id AS id, NULL::int AS revision, NULL::text AS body FROM processed_events"
    " WHERE consumer = $1 AND event_id = ANY($2::text[])"
    " UNION ALL SELECT 'saga', s.release_id, s.revision,"
    " CASE WHEN s.revision = c.revision THEN NULL ELSE s.body::text END"
    " FROM unnest($3::text[], $4::int[]) AS c(release_id, revision) JOIN sagas AS s USING (release_id)"
    " UNION ALL SELECT 'registry', NULL, NULL, (SELECT coalesce(json_agg(k), '[]') FROM ("
    + KNOWN.replace("$1", "$5")
    + ") AS k)::text WHERE $6::boolean"
)
# The write: the events recorded as handled, the sagas (each only if still at the revision the batch read it at),
# each release's one deadline (a null step clears it, as `PgTransaction.set_deadline`), then the audit entries and
# outbox events in the order staged (claimed as `FLUSH` does), and the relay woken once. If another writer recorded
# one of the events or changed one of the sagas since the read, the statement raises from inside itself
# (`releasegate_conflict`, SQLSTATE 40001) and so takes back everything it wrote. Bodies travel as the JSON text
# pydantic wrote, several times cheaper than a dict through json.dumps. Every data-modifying part runs whatever the
# query reads.
WRITE_ALL = (
    "WITH handled AS ("
    " INSERT INTO processed_events (consumer, event_id) SELECT $23, e FROM unnest($24::text[]) AS e"
    " ON CONFLICT DO NOTHING RETURNING 1"
    "), saved AS ("
    " UPDATE sagas AS s SET state = u.state, body = u.body::jsonb, revision = u.revision, updated_at = now()"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::int[]) AS u(release_id, state, body, was, revision)"
    " WHERE s.release_id = u.release_id AND s.revision = u.was RETURNING 1"
    "), d AS (SELECT * FROM unnest($6::text[], $7::text[], $8::timestamptz[]) AS u(release_id, step_id, due_at)"
    "), others AS ("
    " DELETE FROM saga_deadlines AS sd USING d WHERE sd.release_id = d.release_id"
    " AND (d.step_id IS NULL OR sd.step_id <> d.step_id)"
    "), due AS ("
    " INSERT INTO saga_deadlines (release_id, step_id, due_at) SELECT release_id, step_id, due_at FROM d"
    " WHERE step_id IS NOT NULL ON CONFLICT (release_id, step_id) DO UPDATE SET due_at = EXCLUDED.due_at"
    "), audited AS ("
    " INSERT INTO audit_log (release_id, actor, state, step, reason, evidence)"
    " SELECT r, a, s, st, re, ev"
    " FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::jsonb[])"
    " WITH ORDINALITY AS u(r, a, s, st, re, ev, n) ORDER BY n"
    "), staged AS ("
    + STAGED.format(
        producer="$15", claimer="$22::text", events="$16::text[], $17::text[], $18::text[], $19::jsonb[], $20::text[]"
    )
    + "), counted AS (SELECT (SELECT count(*) FROM saved) AS saved, (SELECT count(*) FROM handled) AS handled)"
    " SELECT saved, CASE WHEN saved <> cardinality($1::text[]) OR handled <> cardinality($24::text[])"
    " THEN releasegate_conflict(format('%s of %s sagas still at the revision read, %s of %s events not yet handled',"
    " saved, cardinality($1::text[]), handled, cardinality($24::text[]))) END AS conflict,"
    " CASE WHEN EXISTS (SELECT 1 FROM staged WHERE NOT claimed) THEN pg_notify($21, $15) END AS woken,"
    + CLAIMED
    + " FROM counted"
)
# about 40 kB each in memory: 80 MB at most, and twice the sagas in flight in bench-scale at N=1,000
CACHED_SAGAS = 2_000


class SagaCache:
    """The sagas as this coordinator last read or committed them, each with its revision; bounded, least recently
    used first out. A saga is only trusted at the revision its row still has (`READ_ALL` compares), so a row changed
    by another instance (after a rebalance) or a commit whose outcome was lost is read anew. Sagas are never changed
    in place (a decision works on a copy), so a cached one can be handed out as it is."""

    def __init__(self, limit: int = CACHED_SAGAS) -> None:
        self._limit = limit
        self._entries: OrderedDict[str, Loaded] = OrderedDict()

    def get(self, release_id: str) -> Loaded | None:
        loaded = self._entries.get(release_id)
        if loaded is not None:
            self._entries.move_to_end(release_id)
        return loaded

    def put_all(self, loaded: Sequence[Loaded]) -> None:
        for one in loaded:
            self.put(one)

    def put(self, loaded: Loaded) -> None:
        self._entries[loaded.saga.release_id] = loaded
        self._entries.move_to_end(loaded.saga.release_id)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)


class PgTransaction:
    """Audit entries and outbox events are staged in memory and written together by `flush`, which the store
    calls before the commit (and `audit_as_it_stands` before its own insert, so the log keeps its order)."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        producer: str = PRODUCER,
        cache: SagaCache | None = None,
        direct: outbox.DirectPublisher | None = None,
    ) -> None:
        """`direct`: publishes the events this transaction claims once it committed (None: the relay does)."""
        self._conn, self._producer, self._direct = conn, producer, direct
        self._cache = cache or SagaCache(0)
        self._audits: list[AuditEntry] = []
        self._events: list[outbox.Row] = []
        self._after_commit: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    def committed(self) -> None:
        """Run what waited for the commit (the store calls it once the transaction committed)."""
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    async def first_time(self, consumer: str, event_id: str) -> bool:
        return await db.first_time(self._conn, consumer, event_id)

    async def exists(self, release_id: str) -> bool:
        return bool(await self._conn.fetchval("SELECT 1 FROM sagas WHERE release_id = $1", release_id))

    async def insert(self, saga: Saga) -> None:
        await self._conn.execute(
            "INSERT INTO sagas (release_id, service, version, digest, state, body) VALUES ($1,$2,$3,$4,$5,$6)",
            saga.release_id,
            saga.service,
            saga.version,
            saga.digest,
            saga.state.value,
            saga.model_dump(mode="json"),
        )

    async def load(self, release_id: str) -> Loaded | None:
        row = await self._conn.fetchrow("SELECT body, revision FROM sagas WHERE release_id = $1", release_id)
        return None if row is None else Loaded(upcast.load(row["body"]), row["revision"])

    async def save(self, saga: Saga, revision: int) -> None:
        updated = await self._conn.execute(
            "UPDATE sagas SET state = $2, body = $3, revision = revision + 1, updated_at = now()"
            " WHERE release_id = $1 AND revision = $4",
            saga.release_id,
            saga.state.value,
            saga.model_dump(mode="json"),
            revision,
        )
        if updated != "UPDATE 1":
            raise ConcurrentUpdate(saga.release_id)
        self.after_commit(lambda: self._cache.put(Loaded(saga, revision + 1)))

    async def first_use_of_nonce(self, command: OperatorCommand, at: datetime) -> bool:
        if not command.nonce:  # refused by `control.refusal`: nothing to record
            return True
        row = await self._conn.fetchrow(
            "INSERT INTO operator_nonces (nonce, release_id, actor, event_type, used_at) VALUES ($1,$2,$3,$4,$5)"
            " ON CONFLICT (nonce) DO NOTHING RETURNING 1",
            command.nonce,
            command.release_id,
            command.actor,
            command.event_type,
            at,
        )
        return row is not None

    async def verifiers(self, now: datetime) -> Known:
        return await known_verifiers(self._conn, now)

    async def set_deadline(self, release_id: str, deadline: tuple[str, datetime] | None) -> None:
        """The release's one deadline, in one statement: a data-modifying CTE drops any other step's (a row
        being claimed is locked, so this waits for the claim to end, and the claim then finds its due time gone)."""
        if deadline is None:
            await self._conn.execute("DELETE FROM saga_deadlines WHERE release_id = $1", release_id)
            return
        await self._conn.execute(
            "WITH others AS (DELETE FROM saga_deadlines WHERE release_id = $1 AND step_id <> $2)"
            " INSERT INTO saga_deadlines (release_id, step_id, due_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (release_id, step_id) DO UPDATE SET due_at = EXCLUDED.due_at",
            release_id,
            deadline[0],
            deadline[1],
        )

    async def claim_deadline(self, due: Due) -> bool:
        row = await self._conn.fetchval(
            "SELECT true FROM saga_deadlines WHERE release_id = $1 AND step_id = $2 AND due_at = $3"
            " FOR UPDATE SKIP LOCKED",
            due.release_id,
            due.step_id,
            due.due_at,
        )
        return row is not None

    async def audit(self, entry: AuditEntry) -> None:
        self._audits.append(entry)

    async def audit_as_it_stands(self, release_id: str, actor: str, reason: str, evidence: dict[str, Any]) -> None:
        await self.flush()
        await self._conn.execute(
            "INSERT INTO audit_log (release_id, actor, state, step, reason, evidence)"
            " SELECT release_id, $2, state, body->>'waiting_for', $3, $4 FROM sagas WHERE release_id = $1",
            release_id,
            actor,
            reason,
            evidence,
        )

    async def publish(self, topic: str, envelope: Envelope) -> None:
        self._events.append(outbox.row(topic, envelope))

    async def flush(self) -> None:
        """Write what was staged, in one statement."""
        if not self._audits and not self._events:
            return
        audits, events = self._audits, self._events
        self._audits, self._events = [], []
        token = self._claimer()
        row = await self._conn.fetchrow(FLUSH, *self._staged(audits, events), token)
        self._publish_claimed(events, row, token)

    def _claimer(self) -> str | None:
        return None if self._direct is None else self._direct.token

    def _publish_claimed(self, events: list[outbox.Row], row: asyncpg.Record, token: str | None) -> None:
        """Once committed, the direct publisher takes the events the statement claimed (with `token`)."""
        direct = self._direct
        if direct is None or token is None or not row["claimed_ids"]:
            return
        by_event = {e[2]: e for e in events}
        claimed = [
            outbox.Claimed(i, by_event[e], token)
            for i, e in zip(row["claimed_ids"], row["claimed_events"], strict=True)
        ]
        self.after_commit(lambda: direct.committed(claimed))

    def _staged(self, audits: list[AuditEntry], events: list[outbox.Row]) -> list[Any]:
        """The audit entries' and outbox events' parameters, in the order `FLUSH` and `WRITE_ALL` take them."""
        return [
            [a.release_id for a in audits],
            [a.actor for a in audits],
            [a.state for a in audits],
            [a.step for a in audits],
            [a.reason for a in audits],
            [a.evidence for a in audits],
            self._producer,
            *([e[i] for e in events] for i in range(5)),
            outbox.NOTIFY_CHANNEL,
        ]

    async def mark_staging_verified(self, service: str, digest: str, release_id: str) -> None:
        await self._conn.execute(
            "INSERT INTO staging_verified_artifacts (service, digest, release_id) VALUES ($1,$2,$3)"
            " ON CONFLICT DO NOTHING",
            service,
            digest,
            release_id,
        )

    async def record_incident(self, saga: Saga) -> None:
        """The saga's incident as its tables show it: the row once, its follow-ups inserted or updated (closing is
        the only change a follow-up sees)."""
        incident = saga.incident
        if incident is None:
            return
        await self._conn.execute(
            "INSERT INTO incidents (release_id, service, version, outcome, summary, findings, opened_at)"
            " VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (release_id) DO NOTHING",
            saga.release_id,
            saga.service,
            saga.version,
            incident.outcome.value,
            incident.summary,
            incident.findings,
            incident.opened_at,
        )
        if not incident.followups:
            return
        f = incident.followups
        await self._conn.execute(
            "INSERT INTO incident_followups (release_id, followup_id, service, kind, severity, owner, title, status,"
            " added_by, added_at, reason, closed_by, closed_at, close_reason)"
            " SELECT $1, u.id, $2, u.kind, u.severity, u.owner, u.title, u.status, u.added_by, u.added_at, u.reason,"
            " u.closed_by, u.closed_at, u.close_reason FROM unnest($3::int[], $4::text[], $5::text[], $6::text[],"
            " $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::text[], $12::text[], $13::timestamptz[],"
            " $14::text[]) AS u(id, kind, severity, owner, title, status, added_by, added_at, reason, closed_by,"
            " closed_at, close_reason)"
            " ON CONFLICT (release_id, followup_id) DO UPDATE SET status = EXCLUDED.status,"
            " closed_by = EXCLUDED.closed_by, closed_at = EXCLUDED.closed_at, close_reason = EXCLUDED.close_reason",
            saga.release_id,
            saga.service,
            [x.id for x in f],
            [x.kind for x in f],
            [x.severity for x in f],
            [x.owner for x in f],
            [x.title for x in f],
            [x.status for x in f],
            [x.added_by for x in f],
            [x.added_at for x in f],
            [x.reason for x in f],
            [x.closed_by for x in f],
            [x.closed_at for x in f],
            [x.close_reason for x in f],
        )

    async def open_followups(self, service: str) -> list[OpenFollowup]:
        rows = await self._conn.fetch(
            "SELECT release_id, followup_id, kind, severity, owner, title FROM incident_followups"
            " WHERE service = $1 AND status = 'open' ORDER BY added_at, release_id, followup_id LIMIT $2",
            service,
            OPEN_FOLLOWUPS_TOLD,
        )
        return [
            OpenFollowup(
                release_id=r["release_id"],
                followup=r["followup_id"],
                kind=r["kind"],
                severity=r["severity"],
                owner=r["owner"],
                title=r["title"],
            )
            for r in rows
        ]


class PgBatchTransaction(PgTransaction):
    """One transaction for a batch of records: what the batch's records will read is read up front in one
    statement (their processed-event entries, their sagas, the verifier registry), each saga decided on in memory as
    the records come, and every write made at the end in one statement (`write`): the events as handled, the sagas,
    the deadlines, then the audit entries and outbox events. A record later in the batch sees what the earlier ones
    decided. A saga changed or an event recorded by another writer meanwhile (a deadline fired by the other task, an
    instance that had the partition before a rebalance) makes `write` raise `ConcurrentUpdate`, and the whole batch
    is undone. Two statements and no BEGIN or COMMIT when the decisions need nothing else (each statement is a
    transaction of its own, and the read writes nothing); a decision that needs another write (a new saga, a
    nonce) begins the transaction first, and the batch's end commits it."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        producer: str,
        consumer: str,
        cache: SagaCache,
        *,
        registry_stable: bool,
        direct: outbox.DirectPublisher | None = None,
    ) -> None:
        """`consumer`: whose processed events the batch records; `cache`: the sagas as last read or committed;
        `registry_stable`: no heartbeat among the batch's records, so one read of the verifier registry serves every
        decision; `direct`: as `PgTransaction`'s."""
        super().__init__(conn, producer, cache, direct)
        self._consumer, self._registry_stable = consumer, registry_stable
        self._asked: set[str] = set()
        self._new: set[str] = set()
        self._unhandled: list[str] = []  # the batch's events not recorded as handled when it read
        self._sagas: dict[str, Loaded | None] = {}
        self._stored_at: dict[str, int] = {}  # release → the revision its row has in the database
        self._changed: dict[str, Saga] = {}
        self._deadlines: dict[str, tuple[str, datetime] | None] = {}
        self._known: Known | None = None
        self._open: Any = None  # the transaction, once a decision needed one (asyncpg's Transaction)

    async def prefetch(self, event_ids: Sequence[str], release_ids: Sequence[str], now: datetime) -> None:
        """Read which events were handled already, the releases' sagas and (if one read serves the batch) the
        verifier registry at `now`, in one statement that writes nothing."""
        self._asked, self._sagas = set(event_ids), dict.fromkeys(release_ids)
        held = {r: loaded for r in release_ids if (loaded := self._cache.get(r)) is not None}
        rows = await self._conn.fetch(
            READ_ALL,
            self._consumer,
            list(self._asked),
            list(release_ids),
            [held[r].revision if r in held else -1 for r in release_ids],
            now,
            self._registry_stable,
        )
        handled: set[str] = set()
        for row in rows:
            if row["kind"] == "handled":
                handled.add(row["id"])
            elif row["kind"] == "registry":
                self._known = known_of(json.loads(row["body"]))
            elif row["body"] is None:
                self._hold(row["id"], held[row["id"]])
            else:
                loaded = Loaded(upcast.load(json.loads(row["body"])), row["revision"])
                self._hold(row["id"], loaded)
                self._cache.put(loaded)  # as the database has it, committed
        self._new = self._asked - handled
        self._unhandled = sorted(self._new)

    def _hold(self, release_id: str, loaded: Loaded) -> None:
        self._sagas[release_id] = loaded
        self._stored_at[release_id] = loaded.revision

    async def _begin(self) -> None:
        """Open the transaction before a write that is not the batch's one statement (once)."""
        if self._open is None:
            self._open = self._conn.transaction()
            await self._open.start()

    async def commit(self) -> None:
        if self._open is not None:
            await self._open.commit()

    async def rollback(self) -> None:
        if self._open is not None and not self._conn.is_closed():
            await self._open.rollback()

    async def first_time(self, consumer: str, event_id: str) -> bool:
        if consumer != self._consumer or event_id not in self._asked:
            await self._begin()
            return await super().first_time(consumer, event_id)
        if event_id in self._new:
            self._new.discard(event_id)  # the same event twice in one batch: the second is a redelivery
            return True
        return False

    async def exists(self, release_id: str) -> bool:
        if release_id in self._sagas:
            return self._sagas[release_id] is not None
        return await super().exists(release_id)

    async def insert(self, saga: Saga) -> None:
        await self._begin()
        await super().insert(saga)
        self._hold(saga.release_id, Loaded(saga, 0))
        self.after_commit(lambda: self._cache.put(Loaded(saga, 0)))

    async def load(self, release_id: str) -> Loaded | None:
        if release_id not in self._sagas:
            loaded = await super().load(release_id)
            if loaded is None:
                return None
            self._hold(release_id, loaded)
        return self._sagas[release_id]

    async def save(self, saga: Saga, revision: int) -> None:
        current = self._sagas.get(saga.release_id)
        if current is None or current.revision != revision:
            raise ConcurrentUpdate(saga.release_id)
        self._sagas[saga.release_id] = Loaded(saga, revision + 1)
        self._changed[saga.release_id] = saga

    async def first_use_of_nonce(self, command: OperatorCommand, at: datetime) -> bool:
        await self._begin()
        return await super().first_use_of_nonce(command, at)

    async def verifiers(self, now: datetime) -> Known:
        if not self._registry_stable:
            return await super().verifiers(now)
        if self._known is None:
            self._known = await super().verifiers(now)
        return self._known

    async def set_deadline(self, release_id: str, deadline: tuple[str, datetime] | None) -> None:
        self._deadlines[release_id] = deadline

    async def claim_deadline(self, due: Due) -> bool:
        await self._begin()
        return await super().claim_deadline(due)

    async def audit_as_it_stands(self, release_id: str, actor: str, reason: str, evidence: dict[str, Any]) -> None:
        loaded = await self.load(release_id)  # as the batch left it so far, not as the database still has it
        if loaded is not None:
            s = loaded.saga
            await self.audit(AuditEntry(release_id, actor, s.state.value, s.waiting_for, reason, evidence))

    async def mark_staging_verified(self, service: str, digest: str, release_id: str) -> None:
        await self._begin()
        await super().mark_staging_verified(service, digest, release_id)

    async def record_incident(self, saga: Saga) -> None:
        await self._begin()
        await super().record_incident(saga)

    async def open_followups(self, service: str) -> list[OpenFollowup]:
        await self._begin()  # sees what this batch closed or added so far
        return await super().open_followups(service)

    async def write(self) -> None:
        """Every write of the batch, in one statement (nothing at all if it has nothing to write)."""
        changed = [held for r in self._changed if (held := self._sagas[r]) is not None]
        deadlines = list(self._deadlines.items())
        audits, events = self._audits, self._events
        self._audits, self._events = [], []
        if not (changed or deadlines or audits or events or self._unhandled):
            return
        token = self._claimer()
        try:
            row = await self._conn.fetchrow(
                WRITE_ALL,
                [c.saga.release_id for c in changed],
                [c.saga.state.value for c in changed],
                [c.saga.model_dump_json() for c in changed],
                [self._stored_at[c.saga.release_id] for c in changed],
                [c.revision for c in changed],
                [r for r, _ in deadlines],
                [d[0] if d else None for _, d in deadlines],
                [d[1] if d else None for _, d in deadlines],
                *self._staged(audits, events),
                token,
                self._consumer,
                self._unhandled,
            )
        except asyncpg.SerializationError as exc:  # raised by the statement itself: it wrote nothing
            raise ConcurrentUpdate(str(exc)) from exc
        self.after_commit(lambda: self._cache.put_all(changed))
        self._publish_claimed(events, row, token)


class PgSagaStore:
    def __init__(
        self, pool: asyncpg.Pool, producer: str = PRODUCER, direct: outbox.DirectPublisher | None = None
    ) -> None:
        """`producer`: whose outbox relay publishes the events (a test names one no relay serves); `direct`:
        publishes each transaction's events straight after its commit where their order allows (None: the relay
        publishes every one)."""
        self._pool, self._producer, self._direct = pool, producer, direct
        self._cache = SagaCache()
        # the batch open in this task, if any (a task started inside it would share it: the coordinator starts none)
        self._batch: ContextVar[PgBatchTransaction | None] = ContextVar(f"batch-{id(self)}", default=None)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgTransaction]:
        """A transaction of its own; inside `batch`, the batch's (it commits when the batch ends)."""
        batch = self._batch.get()
        if batch is not None:
            yield batch
            return
        async with self._pool.acquire() as conn, conn.transaction():
            tx = PgTransaction(conn, self._producer, self._cache, self._direct)
            yield tx
            await tx.flush()
        tx.committed()

    @asynccontextmanager
    async def batch(
        self,
        consumer: str,
        event_ids: Sequence[str],
        release_ids: Sequence[str],
        *,
        registry_stable: bool,
        now: datetime | None = None,
    ) -> AsyncIterator[None]:
        """Every `transaction()` inside the block is this one transaction; it commits when the block ends."""
        async with self._pool.acquire() as conn:
            tx = PgBatchTransaction(
                conn, self._producer, consumer, self._cache, registry_stable=registry_stable, direct=self._direct
            )
            try:
                await tx.prefetch(event_ids, release_ids, now or datetime.now(UTC))
                token = self._batch.set(tx)
                try:
                    yield
                finally:
                    self._batch.reset(token)
                await tx.write()
            except BaseException:
                await tx.rollback()
                raise
            await tx.commit()
        tx.committed()

    async def due_deadlines(self, now: datetime, limit: int) -> list[Due]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT release_id, step_id, due_at FROM saga_deadlines WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
                now,
                limit,
            )
        return [Due(r["release_id"], r["step_id"], r["due_at"]) for r in rows]
