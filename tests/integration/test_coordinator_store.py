"""The coordinator's PostgreSQL adapter on the real database, as the coordinator's own role: two writers of one
saga row (one wins, the other's transaction is undone and it retries on the reloaded saga), the audit log
that no one may rewrite, and batches (several records' decisions in one transaction)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from contracts.cloudevents import Envelope
from contracts.events import CandidateSubmitted, CheckResult, GateCheckFinished, ReleaseState, VerifierHeartbeat
from releasegate_platform import verifier_registry
from releasegate_platform.catalog import Catalog
from releasegate_runtime import db, outbox
from releasegate_runtime.settings import ServiceSettings
from services.coordinator import saga
from services.coordinator.adapters.postgres import PgSagaStore
from services.coordinator.handlers import CONSUMER
from services.coordinator.ports import AuditEntry, ConcurrentUpdate, Due
from tests.conftest import wait_until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SHOP = Catalog(REPO / "catalog").get("shop")
NOW = datetime.now(UTC)


@pytest.fixture
async def coordinator_pool(pool):  # `pool` (tests/conftest.py) applied the schema as its owner
    p = await db.create_pool(ServiceSettings().for_principal("coordinator").database_url, max_size=4)
    yield p
    await p.close()


@pytest.fixture(autouse=True)
async def no_saga_left_running(pool):
    """The sagas these tests start never end; they are removed afterwards, or a benchmark or a test that waits
    for no release in flight would wait for them (their audit rows stay: the log is append-only)."""
    yield
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM saga_deadlines WHERE release_id LIKE 'it-store-%'")
        await conn.execute("DELETE FROM sagas WHERE release_id LIKE 'it-store-%'")
        await conn.execute("DELETE FROM outbox WHERE producer LIKE 'it-store-%'")


def candidate(release_id: str) -> CandidateSubmitted:
    return CandidateSubmitted.model_validate(
        {
            "release_id": release_id,
            "service": "shop",
            "version": "v2",
            "artifact": {"digest": "sha256:" + "e" * 64, "uri": "store://x"},
            "source": {"repository": "r", "ref": "refs/heads/main", "commit": "c" * 40},
            "tests": {"passed": 3, "failed": 0},
            "author": "dev@shop",
        }
    )


async def started(store: PgSagaStore) -> str:
    release_id = f"it-store-{uuid.uuid4().hex[:10]}"
    async with store.transaction() as tx:
        await tx.insert(saga.start(candidate(release_id), SHOP, NOW, {}).saga)
    return release_id


def gate_passed(release_id: str) -> GateCheckFinished:
    return GateCheckFinished(
        release_id=release_id,
        step_id="gate-staging",
        environment="staging",
        passed=True,
        checks=[CheckResult(name="tests_passed", passed=True, reason="r")],
    )


class TestOptimisticConcurrencyOnTheSagaRow:
    async def test_of_two_writers_one_wins_and_the_other_is_undone_then_retries_on_the_reloaded_saga(
        self, coordinator_pool
    ):
        store = PgSagaStore(coordinator_pool)
        rid = await started(store)
        loser_event = f"it-loser-{uuid.uuid4()}"
        a_loaded, b_loaded = asyncio.Event(), asyncio.Event()
        a_saved, a_may_commit = asyncio.Event(), asyncio.Event()

        async def writer_a() -> None:
            async with store.transaction() as tx:
                loaded = await tx.load(rid)
                a_loaded.set()
                await b_loaded.wait()
                await tx.save(saga.handle(loaded.saga, gate_passed(rid), NOW).saga, loaded.revision)
                a_saved.set()
                await a_may_commit.wait()

        async def writer_b() -> None:
            async with store.transaction() as tx:
                assert await tx.first_time(CONSUMER, loser_event)
                await a_loaded.wait()
                loaded = await tx.load(rid)
                b_loaded.set()
                await a_saved.wait()
                paused = loaded.saga.model_copy(update={"state": ReleaseState.PAUSED})
                save = asyncio.create_task(tx.save(paused, loaded.revision))
                # b's UPDATE waits on a's row lock; once a commits it finds the revision moved on
                a_may_commit.set()
                await save

        a = asyncio.create_task(writer_a())
        with pytest.raises(ConcurrentUpdate):
            await writer_b()
        await a
        async with store.transaction() as tx:
            current = await tx.load(rid)
            assert current.revision == 1 and current.saga.waiting_for != "gate-staging"
            assert current.saga.state is not ReleaseState.PAUSED, "the loser's change was not written"
            assert await tx.first_time(CONSUMER, loser_event), "the loser's whole transaction was undone"
            retried = current.saga.model_copy(update={"state": ReleaseState.PAUSED})
            await tx.save(retried, current.revision)
        async with store.transaction() as tx:
            final = await tx.load(rid)
        assert final.revision == 2 and final.saga.state is ReleaseState.PAUSED

    async def test_a_stale_revision_is_refused_even_with_no_writer_in_flight(self, coordinator_pool):
        store = PgSagaStore(coordinator_pool)
        rid = await started(store)
        async with store.transaction() as tx:
            loaded = await tx.load(rid)
            await tx.save(loaded.saga, loaded.revision)
        with pytest.raises(ConcurrentUpdate):
            async with store.transaction() as tx:
                await tx.save(loaded.saga, loaded.revision)


class TestTheAuditLogIsAppendOnly:
    async def _audited(self, store: PgSagaStore) -> str:
        rid = await started(store)
        async with store.transaction() as tx:
            await tx.audit(AuditEntry(rid, "coordinator", "running", "gate-staging", "gate requested", {"n": 1}))
        return rid

    async def test_the_owner_cannot_update_or_delete_an_audit_row_the_trigger_refuses(self, pool, coordinator_pool):
        rid = await self._audited(PgSagaStore(coordinator_pool))
        async with pool.acquire() as conn:
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("UPDATE audit_log SET reason = 'rewritten' WHERE release_id = $1", rid)
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("DELETE FROM audit_log WHERE release_id = $1", rid)
            reasons = await conn.fetch("SELECT reason FROM audit_log WHERE release_id = $1", rid)
        assert [r["reason"] for r in reasons] == ["gate requested"]

    async def test_the_coordinator_role_may_only_append(self, coordinator_pool):
        rid = await self._audited(PgSagaStore(coordinator_pool))
        async with coordinator_pool.acquire() as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("UPDATE audit_log SET reason = 'rewritten' WHERE release_id = $1", rid)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM audit_log WHERE release_id = $1", rid)
            assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE release_id = $1", rid) == 1


class TestRefusalsRecordedAsTheSagaStands:
    async def test_a_refused_result_is_audited_with_the_state_and_step_unchanged(self, coordinator_pool):
        store = PgSagaStore(coordinator_pool)
        rid = await started(store)
        envelope = Envelope.new(gate_passed(rid), "test", rid)
        async with store.transaction() as tx:
            await tx.audit_as_it_stands(rid, "principal:deployer", "refused gate result", {"event_id": envelope.id})
        async with coordinator_pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT state, step, actor FROM audit_log WHERE release_id = $1 AND reason = 'refused gate result'", rid
            )
        assert dict(row) == {"state": "running", "step": "gate-staging", "actor": "principal:deployer"}


class TestADecisionsWritesInOneStatement:
    """Audit entries and outbox events are staged during a decision and written together before the commit."""

    async def test_they_are_written_in_the_order_staged_and_the_relay_is_woken(self, pool, coordinator_pool):
        store = PgSagaStore(coordinator_pool, producer := f"it-store-{uuid.uuid4().hex[:8]}")  # no relay serves it
        rid = await started(store)
        events = [Envelope.new(gate_passed(rid), "test", rid) for _ in range(3)]
        woken: list[str] = []
        listener = await pool.acquire()
        try:
            heard = asyncio.Event()

            def on_notify(_conn, _pid, _channel, payload: str) -> None:
                woken.append(payload)
                if payload == producer:
                    heard.set()

            await listener.add_listener(outbox.NOTIFY_CHANNEL, on_notify)
            async with store.transaction() as tx:
                for n, event in enumerate(events):
                    await tx.audit(AuditEntry(rid, "coordinator", "running", None, f"entry {n}", {"n": n}))
                    await tx.publish(f"it.topic.{n}", event)
                await tx.audit_as_it_stands(rid, "principal:it", "as it stands", {})
                await tx.audit(AuditEntry(rid, "coordinator", "running", "gate-staging", "last", {"n": 9}))
            await asyncio.wait_for(heard.wait(), 10)
            async with pool.acquire() as conn:
                audit = await conn.fetch(
                    "SELECT reason, step, evidence FROM audit_log WHERE release_id = $1 ORDER BY id", rid
                )
                staged = await conn.fetch(
                    "SELECT topic, event_id, key, headers FROM outbox WHERE event_id = ANY($1::text[]) ORDER BY id",
                    [e.id for e in events],
                )
        finally:
            await listener.remove_listener(outbox.NOTIFY_CHANNEL, on_notify)
            await pool.release(listener)
        assert [r["reason"] for r in audit] == ["entry 0", "entry 1", "entry 2", "as it stands", "last"]
        assert [r["evidence"] for r in audit] == [{"n": 0}, {"n": 1}, {"n": 2}, {}, {"n": 9}]
        assert [r["step"] for r in audit] == [None, None, None, "gate-staging", "gate-staging"]
        assert [(r["topic"], r["event_id"]) for r in staged] == [(f"it.topic.{n}", e.id) for n, e in enumerate(events)]
        assert {r["key"] for r in staged} == {rid} and [r["headers"]["ce_id"] for r in staged] == [e.id for e in events]
        assert producer in woken

    async def test_nothing_staged_is_written_when_the_decision_fails(self, pool, coordinator_pool):
        store = PgSagaStore(coordinator_pool, f"it-store-{uuid.uuid4().hex[:8]}")
        rid = await started(store)
        event = Envelope.new(gate_passed(rid), "test", rid)
        with pytest.raises(ConcurrentUpdate):
            async with store.transaction() as tx:
                await tx.audit(AuditEntry(rid, "coordinator", "running", None, "staged", {}))
                await tx.publish("it.topic", event)
                loaded = await tx.load(rid)
                await tx.save(loaded.saga, loaded.revision + 1)  # a stale revision: the decision fails
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE release_id = $1", rid) == 0
            assert await conn.fetchval("SELECT count(*) FROM outbox WHERE event_id = $1", event.id) == 0


class Held:
    """A direct publisher's broker: records what it was given, and holds each call until `go` is set."""

    def __init__(self, held: bool = True, fail_first: bool = False) -> None:
        """`fail_first`: the first call, once let go, fails as a broker that went away would."""
        self.sent: list[str] = []
        self.called, self.go = asyncio.Event(), asyncio.Event()
        self._fail = fail_first
        if not held:
            self.go.set()

    async def __call__(self, topic, key, value, headers) -> None:
        self.called.set()
        await self.go.wait()
        if self._fail:
            self._fail = False
            raise ConnectionError("the broker went away")
        self.sent.append(dict(headers)["ce_id"].decode())


async def outbox_rows(pool, producer: str) -> list[tuple[str, bool, bool]]:
    """(event id, claimed, published) of `producer`'s outbox, in id order."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT event_id, claimed_until IS NOT NULL AS claimed, published_at IS NOT NULL AS published"
            " FROM outbox WHERE producer = $1 ORDER BY id",
            producer,
        )
    return [(r["event_id"], r["claimed"], r["published"]) for r in rows]


async def all_published(pool, producer: str) -> bool:
    return all(published for _, _, published in await outbox_rows(pool, producer))


class TestPublicationStraightAfterTheCommit:
    """A decision's events are published by the coordinator itself once its transaction committed, without waking
    the relay or reading them back; the relay leaves them (and every later event of the same release) alone while
    the claim holds, and takes over when the coordinator does not publish them."""

    @pytest.fixture
    async def direct(self, coordinator_pool):
        producer, broker = f"it-store-{uuid.uuid4().hex[:8]}", Held()
        publisher = outbox.DirectPublisher(coordinator_pool, producer, broker)
        task = asyncio.create_task(publisher.run())
        yield PgSagaStore(coordinator_pool, producer, direct=publisher), producer, broker
        broker.go.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def test_claimed_events_are_published_in_order_after_the_commit_and_left_alone_by_the_relay(
        self, coordinator_pool, direct
    ):
        store, producer, broker = direct
        rid = await started(store)
        events = [Envelope.new(gate_passed(rid), "test", rid) for _ in range(3)]
        async with store.transaction() as tx:
            for event in events:
                await tx.publish("it.topic", event)
        await asyncio.wait_for(broker.called.wait(), 10)  # published once committed, nobody woke anything
        assert await outbox_rows(coordinator_pool, producer) == [(e.id, True, False) for e in events]
        relay_sent: list[str] = []

        async def relay_broker(topic, key, value, headers) -> None:
            relay_sent.append(dict(headers)["ce_id"].decode())

        assert await outbox.Relay(coordinator_pool, producer, relay_broker).publish_pending() == 0
        broker.go.set()
        await wait_until(lambda: all_published(coordinator_pool, producer), 10, "the direct publisher's marks")
        assert broker.sent == [e.id for e in events] and relay_sent == []

    async def test_an_event_behind_one_its_own_publisher_still_holds_is_chained_and_follows_it_in_order(
        self, coordinator_pool, direct
    ):
        """The next decision of a release comes while the last one's events are at the broker, unacknowledged: its
        events are claimed too (the same publisher sends them after those, in commit order), not left to the relay,
        which would wait for its next poll."""
        store, producer, broker = direct
        rid, other = await started(store), await started(store)
        first, second, elsewhere = (Envelope.new(gate_passed(r), "test", r) for r in (rid, rid, other))
        async with store.transaction() as tx:
            await tx.publish("it.topic", first)
        await asyncio.wait_for(broker.called.wait(), 10)  # the first is at the broker, not yet acknowledged
        async with store.transaction() as tx:
            await tx.publish("it.topic", second)
            await tx.publish("it.topic", elsewhere)
        claimed = {event_id: was_claimed for event_id, was_claimed, _ in await outbox_rows(coordinator_pool, producer)}
        assert claimed == {first.id: True, second.id: True, elsewhere.id: True}
        relay_sent: list[str] = []

        async def relay_broker(topic, key, value, headers) -> None:
            relay_sent.append(dict(headers)["ce_id"].decode())

        assert await outbox.Relay(coordinator_pool, producer, relay_broker).publish_pending() == 0
        broker.go.set()
        await wait_until(lambda: all_published(coordinator_pool, producer), 10, "every event published")
        assert broker.sent == [first.id, second.id, elsewhere.id] and relay_sent == []

    async def test_an_event_behind_one_the_relay_has_waits_for_it_and_goes_by_the_relay(self, coordinator_pool, direct):
        store, producer, broker = direct
        relayed = PgSagaStore(coordinator_pool, producer)  # an instance that publishes through the relay only
        rid = await started(store)
        first, second = (Envelope.new(gate_passed(rid), "test", rid) for _ in range(2))
        async with relayed.transaction() as tx:
            await tx.publish("it.topic", first)
        async with store.transaction() as tx:
            await tx.publish("it.topic", second)
        claimed = {event_id: was_claimed for event_id, was_claimed, _ in await outbox_rows(coordinator_pool, producer)}
        assert claimed == {first.id: False, second.id: False}, "the second would overtake the relay's first"
        relay_sent: list[str] = []

        async def relay_broker(topic, key, value, headers) -> None:
            relay_sent.append(dict(headers)["ce_id"].decode())

        assert await outbox.Relay(coordinator_pool, producer, relay_broker).publish_pending() == 2
        assert relay_sent == [first.id, second.id] and broker.sent == []

    async def test_events_chained_behind_a_publication_that_failed_are_left_to_the_relay_in_order(
        self, coordinator_pool
    ):
        producer, broker = f"it-store-{uuid.uuid4().hex[:8]}", Held(fail_first=True)
        publisher = outbox.DirectPublisher(coordinator_pool, producer, broker)
        task = asyncio.create_task(publisher.run())
        try:
            store = PgSagaStore(coordinator_pool, producer, direct=publisher)
            rid = await started(store)
            first, second, third = (Envelope.new(gate_passed(rid), "test", rid) for _ in range(3))
            async with store.transaction() as tx:
                await tx.publish("it.topic", first)
            await asyncio.wait_for(broker.called.wait(), 10)
            claimed_with = publisher.token
            async with store.transaction() as tx:  # chained behind the first, which then fails
                await tx.publish("it.topic", second)
            broker.go.set()

            async def replaced() -> bool:
                return publisher.token != claimed_with

            await wait_until(replaced, 10, "the failure to replace the token")
            async with store.transaction() as tx:  # behind rows the relay will have: not claimed
                await tx.publish("it.topic", third)
            rows = await outbox_rows(coordinator_pool, producer)
            assert [c for _, c, _ in rows] == [True, True, False]
            async with coordinator_pool.acquire() as conn:  # the claims' time runs out
                await conn.execute(
                    "UPDATE outbox SET claimed_until = clock_timestamp() - interval '1 second' WHERE producer = $1",
                    producer,
                )
            relay_sent: list[str] = []

            async def relay_broker(topic, key, value, headers) -> None:
                relay_sent.append(dict(headers)["ce_id"].decode())

            assert await outbox.Relay(coordinator_pool, producer, relay_broker).publish_pending() == 3
            assert relay_sent == [first.id, second.id, third.id]
            assert broker.sent == [], "the direct publisher sent an event chained behind one that failed"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def test_a_claim_its_writer_did_not_fulfil_passes_to_the_relay_at_its_expiry_in_order(self, coordinator_pool):
        producer = f"it-store-{uuid.uuid4().hex[:8]}"

        async def broker_away(topic, key, value, headers) -> None:
            raise ConnectionError("the broker is away")

        publisher = outbox.DirectPublisher(coordinator_pool, producer, broker_away)
        task = asyncio.create_task(publisher.run())
        try:
            store = PgSagaStore(coordinator_pool, producer, direct=publisher)
            rid = await started(store)
            events = [Envelope.new(gate_passed(rid), "test", rid) for _ in range(2)]
            for event in events:  # the second is staged behind the first, which is claimed
                async with store.transaction() as tx:
                    await tx.publish("it.topic", event)
            relay_sent: list[str] = []

            async def relay_broker(topic, key, value, headers) -> None:
                relay_sent.append(dict(headers)["ce_id"].decode())

            relay = outbox.Relay(coordinator_pool, producer, relay_broker)
            assert await relay.publish_pending() == 0
            assert relay_sent == []
            async with coordinator_pool.acquire() as conn:  # the claim's time runs out
                await conn.execute(
                    "UPDATE outbox SET claimed_until = clock_timestamp() - interval '1 second' WHERE producer = $1",
                    producer,
                )
            assert await relay.publish_pending() == 2
            assert relay_sent == [e.id for e in events]
            assert await all_published(coordinator_pool, producer)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _published(pool, producer: str, event_id: str) -> bool:
    return any(e == event_id and published for e, _, published in await outbox_rows(pool, producer))


class TestVerifierRegistryAsOneRowPerVerifier:
    async def test_every_instance_ever_heard_from_counts_once_for_registration_and_only_alive_ones_for_liveness(
        self, coordinator_pool
    ):
        now = datetime.now(UTC)
        busy, silent = f"it-reg-{uuid.uuid4().hex[:8]}", f"it-reg-{uuid.uuid4().hex[:8]}"

        def beat(name: str, instance: str, services: list[str], ago: float) -> VerifierHeartbeat:
            return VerifierHeartbeat(
                name=name, instance=instance, version="1.0.0", services=services, environments=["production"],
                kpis=["checkout"], interval_seconds=5, sent_at=now - timedelta(seconds=ago),
            )  # fmt: skip

        async with coordinator_pool.acquire() as conn:
            try:
                for hb in (
                    beat(busy, "a", ["shop"], 1),  # alive
                    beat(busy, "b", ["shop", "cart"], 600),  # restarted long ago: registered, not alive
                    beat(busy, "c", [], 900),
                    beat(silent, "a", [], 900),
                ):
                    await verifier_registry.record(conn, hb)
                known = await verifier_registry.known_verifiers(conn, now)
                store = PgSagaStore(coordinator_pool, f"it-store-{uuid.uuid4().hex[:8]}")
                async with store.batch(CONSUMER, [], [], registry_stable=True, now=now):  # read with the batch's sagas
                    async with store.transaction() as tx:
                        in_batch = await tx.verifiers(now + timedelta(hours=1))  # the batch's read serves
            finally:
                await conn.execute("DELETE FROM verifier_registry WHERE name = ANY($1::text[])", [busy, silent])
        assert known.registered[busy] == {"shop", "cart"}
        assert known.alive[busy] == {"shop"}
        assert known.registered[silent] == set()
        assert silent not in known.alive
        assert {n: in_batch.registered[n] for n in (busy, silent)} == {n: known.registered[n] for n in (busy, silent)}
        assert in_batch.alive.get(busy) == {"shop"} and silent not in in_batch.alive


class TestOneDeadlinePerRelease:
    async def test_a_new_deadline_replaces_the_last_and_a_claim_on_a_replaced_due_time_fails(self, coordinator_pool):
        store = PgSagaStore(coordinator_pool)
        release_id = await started(store)
        first, later = NOW + timedelta(seconds=30), NOW + timedelta(seconds=90)

        async def deadlines() -> list[tuple[str, datetime]]:
            async with coordinator_pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT step_id, due_at FROM saga_deadlines WHERE release_id = $1 ORDER BY step_id", release_id
                )
            return [(r["step_id"], r["due_at"]) for r in rows]

        for step, due in (("gate-staging", first), ("deploy-staging", first), ("deploy-staging", later)):
            async with store.transaction() as tx:
                await tx.set_deadline(release_id, (step, due))
            assert await deadlines() == [(step, due)]
        async with store.transaction() as tx:
            assert not await tx.claim_deadline(Due(release_id, "deploy-staging", first)), "a replaced due time fired"
            assert await tx.claim_deadline(Due(release_id, "deploy-staging", later))
        async with store.transaction() as tx:
            await tx.set_deadline(release_id, None)
        assert await deadlines() == []


class TestABatchIsOneTransaction:
    """`PgSagaStore.batch`: every `transaction()` inside it is the batch's; what it read up front and what its
    decisions changed are seen by the records after them; it commits everything at its end, or nothing."""

    async def _decide(self, store: PgSagaStore, rid: str, event_id: str) -> bool:
        """One record's decision as the coordinator makes it: False when the event was handled before."""
        async with store.transaction() as tx:
            if not await tx.first_time(CONSUMER, event_id):
                return False
            loaded = await tx.load(rid)
            decision = saga.handle(loaded.saga, gate_passed(rid), NOW)
            await tx.save(decision.saga, loaded.revision)
            await tx.set_deadline(rid, ("next", NOW + timedelta(minutes=5)))
            await tx.audit(AuditEntry(rid, "coordinator", decision.saga.state.value, None, f"decided {event_id}", {}))
            await tx.publish("it.topic", Envelope.new(gate_passed(rid), "test", rid))
        return True

    async def _stored(self, pool, rid: str) -> tuple:
        async with pool.acquire() as conn:
            revision = await conn.fetchval("SELECT revision FROM sagas WHERE release_id = $1", rid)
            audit = await conn.fetch("SELECT reason FROM audit_log WHERE release_id = $1 ORDER BY id", rid)
            deadline = await conn.fetchval("SELECT step_id FROM saga_deadlines WHERE release_id = $1", rid)
            events = await conn.fetchval("SELECT count(*) FROM outbox WHERE key = $1", rid)
        return revision, [r["reason"] for r in audit], deadline, events

    async def test_several_releases_decided_in_a_batch_are_committed_together_and_a_duplicate_once(
        self, pool, coordinator_pool
    ):
        store = PgSagaStore(coordinator_pool, f"it-store-{uuid.uuid4().hex[:8]}")
        one, two = await started(store), await started(store)
        e1, e2 = f"it-batch-{uuid.uuid4()}", f"it-batch-{uuid.uuid4()}"
        async with store.batch(CONSUMER, [e1, e2, e1], [one, two], registry_stable=True):
            assert await self._decide(store, one, e1)
            assert await self._decide(store, two, e2)
            assert not await self._decide(store, one, e1), "the same event twice in a batch took effect twice"
            assert await self._stored(pool, one) == (0, [], None, 0), "a batch's writes were visible before its end"
        for rid, event in ((one, e1), (two, e2)):
            assert await self._stored(pool, rid) == (1, [f"decided {event}"], "next", 1)
        async with store.transaction() as tx:
            assert not await tx.first_time(CONSUMER, e1) and not await tx.first_time(CONSUMER, e2)

    async def test_a_later_record_sees_what_an_earlier_one_decided_and_audits_the_saga_as_the_batch_left_it(
        self, pool, coordinator_pool
    ):
        store = PgSagaStore(coordinator_pool, f"it-store-{uuid.uuid4().hex[:8]}")
        rid = await started(store)
        async with store.batch(CONSUMER, ["x"], [rid], registry_stable=True):
            async with store.transaction() as tx:
                loaded = await tx.load(rid)
                await tx.save(saga.handle(loaded.saga, gate_passed(rid), NOW).saga, loaded.revision)
            async with store.transaction() as tx:
                later = await tx.load(rid)
                assert later.revision == 1 and later.saga.waiting_for != "gate-staging"
                await tx.audit_as_it_stands(rid, "principal:it", "refused in the batch", {})
                await tx.save(later.saga.model_copy(update={"state": ReleaseState.PAUSED}), later.revision)
        async with pool.acquire() as conn:
            row = await conn.fetchrow("SELECT state, revision FROM sagas WHERE release_id = $1", rid)
            step = await conn.fetchval("SELECT step FROM audit_log WHERE release_id = $1", rid)
        assert (row["state"], row["revision"]) == ("paused", 2)
        assert step == later.saga.waiting_for, "the refusal was audited with the step the database still had"

    async def test_a_batch_that_fails_writes_nothing(self, pool, coordinator_pool):
        store = PgSagaStore(coordinator_pool, f"it-store-{uuid.uuid4().hex[:8]}")
        one, two = await started(store), await started(store)
        e1, e2 = f"it-batch-{uuid.uuid4()}", f"it-batch-{uuid.uuid4()}"
        with pytest.raises(RuntimeError, match="a record to refuse"):
            async with store.batch(CONSUMER, [e1, e2], [one, two], registry_stable=True):
                assert await self._decide(store, one, e1)
                raise RuntimeError("a record to refuse")
        for rid in (one, two):
            assert await self._stored(pool, rid) == (0, [], None, 0)
        async with store.transaction() as tx:
            assert await tx.first_time(CONSUMER, e1), "the failed batch's processed-event entry stayed"

    async def test_a_saga_another_writer_changed_meanwhile_undoes_the_whole_batch(self, pool, coordinator_pool):
        name = f"it-store-{uuid.uuid4().hex[:8]}"  # an outbox no relay serves
        store, other = PgSagaStore(coordinator_pool, name), PgSagaStore(coordinator_pool, name)  # two instances
        one, two = await started(store), await started(store)
        with pytest.raises(ConcurrentUpdate):
            async with store.batch(CONSUMER, [], [one, two], registry_stable=True):
                assert await self._decide(store, two, f"it-batch-{uuid.uuid4()}")
                async with other.transaction() as tx:  # a deadline fired by the other task, committed first
                    loaded = await tx.load(one)
                    await tx.save(loaded.saga.model_copy(update={"state": ReleaseState.PAUSED}), loaded.revision)
                assert await self._decide(store, one, f"it-batch-{uuid.uuid4()}")
        assert (await self._stored(pool, two))[:3] == (0, [], None), "the batch was half written"
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT state FROM sagas WHERE release_id = $1", one) == "paused"

    async def test_an_event_another_instance_handled_meanwhile_undoes_the_whole_batch(self, pool, coordinator_pool):
        """The batch writes without BEGIN: it reads which events were handled, and its one write statement takes
        itself back when one of them was recorded since (a rebalance gave the partition to another instance, which
        handled the redelivered record first)."""
        name = f"it-store-{uuid.uuid4().hex[:8]}"
        store, other = PgSagaStore(coordinator_pool, name), PgSagaStore(coordinator_pool, name)
        one, two = await started(store), await started(store)
        e1, e2 = f"it-batch-{uuid.uuid4()}", f"it-batch-{uuid.uuid4()}"
        with pytest.raises(ConcurrentUpdate, match="2 of 2 sagas still at the revision read, 1 of 2 events not yet"):
            async with store.batch(CONSUMER, [e1, e2], [one, two], registry_stable=True):
                assert await self._decide(store, one, e1)
                async with other.transaction() as tx:  # the other instance handled e2 (and ignored it), first
                    assert await tx.first_time(CONSUMER, e2)
                assert await self._decide(store, two, e2)
        for rid in (one, two):
            assert await self._stored(pool, rid) == (0, [], None, 0), "the batch was written: e2 took effect twice"
        async with store.transaction() as tx:
            assert await tx.first_time(CONSUMER, e1), "the undone batch's processed-event entry stayed"

    async def test_a_saga_the_instance_holds_is_read_again_once_another_instance_changed_it(self, coordinator_pool):
        name = f"it-store-{uuid.uuid4().hex[:8]}"
        mine, other = PgSagaStore(coordinator_pool, name), PgSagaStore(coordinator_pool, name)
        rid = await started(mine)
        async with mine.batch(CONSUMER, [], [rid], registry_stable=True):
            assert await self._decide(mine, rid, f"it-batch-{uuid.uuid4()}")  # `mine` now holds revision 1
        async with other.transaction() as tx:  # the partition moved to the other instance, which decided on
            loaded = await tx.load(rid)
            await tx.save(loaded.saga.model_copy(update={"state": ReleaseState.PAUSED}), loaded.revision)
        async with mine.batch(CONSUMER, [], [rid], registry_stable=True):
            async with mine.transaction() as tx:
                current = await tx.load(rid)
        assert (current.revision, current.saga.state) == (2, ReleaseState.PAUSED)
