"""The adapters on their own against the real thing: the deployer's step ledger in PostgreSQL under the deployer's
own role, the HAProxy runtime API client on the stack's HAProxy (staging slots and a throwaway map key only), the
outbox relay on PostgreSQL's NOTIFY and a broker's acknowledgement, and a consumer that retries a failing record
and dead-letters it after the last attempt on a throwaway topic."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from contracts import topics
from contracts.cloudevents import Envelope, decode, encode, header_dict
from contracts.events import AlertRaised, DeadLetter, DeployFinished, ObservedState, Severity
from releasegate_cli.probes import TopicTail
from releasegate_platform.haproxy import HAProxy, HAProxyError, UnsafeArgument
from releasegate_platform.local_target import LocalTarget, backend_for
from releasegate_runtime import bus_admin, db, outbox
from releasegate_runtime.kafka import MAX_ATTEMPTS, Consumer, Producer, client_options, make_broker
from releasegate_runtime.outbox import Relay
from services.deployer.adapters.steps import PostgresStepResults
from tests.support.services import as_principal

pytestmark = pytest.mark.integration

TIMEOUT = 60.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def alert(producer: str, title: str) -> Envelope:
    release = unique("it-release")
    data = AlertRaised(release_id=release, service="it", severity=Severity.INFO, title=title, detail=producer)
    return Envelope.new(data, producer, release)


@pytest.fixture
def scratch_topic(settings) -> Iterator[str]:
    """A topic of one partition that no service reads or writes, created as an operator would and deleted after."""
    admin = bus_admin.admin_client(settings.kafka_bootstrap, settings.secrets_dir, settings.kafka_ca_file)
    name = unique("it-adapters")
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=30)
    try:
        yield name
    finally:
        admin.delete_topics([name])[name].result(timeout=30)


async def records_on(settings, topic: str, count: int) -> list[Envelope]:
    """The first `count` records of a scratch topic (one partition), read from its beginning."""
    consumer = AIOKafkaConsumer(**client_options(as_principal(settings, "admin")), enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        records: list[Envelope] = []
        while len(records) < count:
            for batch in (await consumer.getmany(partition, timeout_ms=1000)).values():
                records.extend(decode(r.headers, r.value) for r in batch)
        return records[:count]
    finally:
        await consumer.stop()


async def unpublished(pool: asyncpg.Pool, producer: str) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT event_id FROM outbox WHERE producer = $1 AND published_at IS NULL ORDER BY id", producer
        )
    return [r["event_id"] for r in rows]


async def forget_outbox(pool: asyncpg.Pool, producer: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM outbox WHERE producer = $1", producer)


# ---------------------------------------------------------------------------------------- deployer step ledger
@pytest.fixture
async def deployer_pool(settings) -> AsyncIterator[asyncpg.Pool]:
    """PostgreSQL as the deployer connects: its own role, its grants (deploy/postgres/grants.sql)."""
    p = await db.create_pool(settings.for_principal("deployer").database_url, max_size=2)
    yield p
    await p.close()


@pytest.fixture
async def release_id(pool) -> AsyncIterator[str]:
    rid = unique("it-steps")
    yield rid
    async with pool.acquire() as conn:  # the deployer may not delete its ledger: the schema owner does
        await conn.execute("DELETE FROM deploy_steps WHERE release_id = $1", rid)


class TestDeployerStepLedger:
    async def test_the_outcome_of_a_step_is_read_back_as_it_was_put(self, deployer_pool, release_id):
        assert await deployer_pool.fetchval("SELECT current_user") == "rg_deployer"
        steps = PostgresStepResults(deployer_pool)
        assert await steps.get(release_id, "canary-10") is None
        done = DeployFinished(
            release_id=release_id,
            step_id="canary-10",
            environment="production",
            succeeded=True,
            reason="1.4.0 serves 10%",
            observed=ObservedState(
                weights={"1.3.0": 90, "1.4.0": 10},
                instances=[{"slot": "s2", "version": "1.4.0", "port": 20102, "weight": 10, "up": True, "pid": None}],
                stable_version="1.3.0",
                tenants_on_candidate=["acme"],
            ),
        )
        await steps.put(done)
        assert await steps.get(release_id, "canary-10") == done

    async def test_a_redelivered_step_keeps_its_first_outcome(self, deployer_pool, release_id):
        steps = PostgresStepResults(deployer_pool)
        first = DeployFinished(
            release_id=release_id, step_id="canary-50", environment="staging", succeeded=True, reason="first"
        )
        second = first.model_copy(update={"succeeded": False, "reason": "the same step carried out again"})
        other_step = first.model_copy(update={"step_id": "canary-100", "reason": "another step"})
        await steps.put(first)
        await steps.put(second)  # first wins: ON CONFLICT DO NOTHING, no error
        await steps.put(other_step)
        assert await steps.get(release_id, "canary-50") == first
        assert await steps.get(release_id, "canary-100") == other_step


# ----------------------------------------------------------------------------------------- HAProxy runtime API
STAGING = backend_for("shop", "staging")
SLOT_LOCK = 0x69742D73  # "it-s": the advisory lock of the borrowed staging slot


class Spy:
    """The stack's runtime API socket, keeping every command line that reached it."""

    def __init__(self, address: str) -> None:
        self.sent: list[bytes] = []
        self._real = HAProxy(address)

    async def __call__(self, line: bytes) -> bytes:
        self.sent.append(line)
        return await self._real._exchange(line)


@pytest.fixture
def spy(settings) -> Spy:
    return Spy(settings.haproxy_admin)


@pytest.fixture
def haproxy(settings, spy) -> HAProxy:
    return HAProxy(settings.haproxy_admin, transport=spy)


@pytest.fixture
async def free_slot(pool, haproxy) -> AsyncIterator[str]:
    """A staging slot in maintenance that no instance holds: a weight there moves no request. The last one, as
    the deployer fills the first free slot; lent to one test at a time (an advisory lock), so that test runs side
    by side do not see each other's weights."""
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", SLOT_LOCK)
        try:
            held = {
                r["slot"]
                for r in await conn.fetch(
                    "SELECT slot FROM instances WHERE service = 'shop' AND environment = 'staging'"
                    " AND state <> 'stopped'"
                )
            }
            free = [s.name for s in await haproxy.servers(STAGING) if s.maintenance and s.name not in held]
            if not free:
                pytest.fail(f"no free slot in {STAGING}: every slot serves or is held by an instance")
            yield max(free, key=lambda name: int(name.removeprefix("s")))
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", SLOT_LOCK)


@pytest.fixture
def maintenance_map(pool, settings, haproxy) -> str:
    """Production's maintenance map, as the rollback service names it. HAProxy looks it up with the key `shop`
    only, so a throwaway key there changes no response."""
    return str(LocalTarget(pool, haproxy, settings.run_dir).maintenance_map("production"))


async def weight_of(haproxy: HAProxy, slot: str) -> int:
    return {s.name: s for s in await haproxy.servers(STAGING)}[slot].weight


class TestHAProxyRuntimeApi:
    async def test_reads_the_slots_of_a_backend(self, haproxy):
        servers = await haproxy.servers(STAGING)
        assert [s.name for s in servers] == [f"s{i}" for i in range(1, 7)]  # server-template s 1-6
        assert {s.backend for s in servers} == {STAGING}
        assert all(0 <= s.weight <= 256 and 0 < s.port < 65536 for s in servers)

    async def test_a_weight_set_on_a_free_staging_slot_is_read_back_and_restored(self, haproxy, free_slot):
        original = await weight_of(haproxy, free_slot)
        wanted = 37 if original != 37 else 38
        try:
            await haproxy.set_weight(STAGING, free_slot, wanted)
            after = {s.name: s for s in await haproxy.servers(STAGING)}[free_slot]
            assert (after.weight, after.maintenance) == (wanted, True)  # a weight does not bring a slot into service
        finally:
            await haproxy.set_weight(STAGING, free_slot, original)
        assert await weight_of(haproxy, free_slot) == original

    async def test_a_throwaway_map_key_is_added_changed_and_removed(self, haproxy, maintenance_map):
        key = unique("it")
        try:
            await haproxy.map_set(maintenance_map, key, "1")
            assert (await haproxy.map_entries(maintenance_map)).get(key) == "1"
            await haproxy.map_set(maintenance_map, key, "0")
            assert (await haproxy.map_entries(maintenance_map)).get(key) == "0"
            await haproxy.map_del(maintenance_map, key)
            assert key not in await haproxy.map_entries(maintenance_map)
        finally:
            if key in await haproxy.map_entries(maintenance_map):
                await haproxy.map_del(maintenance_map, key)

    @pytest.mark.parametrize(
        "attempt",
        [
            # each one, if it reached HAProxy, would set the slot's weight to 77 or add the key (with value 1)
            lambda h, slot, key, m: h.set_weight(f"{STAGING}/{slot} 77;show info", slot, 0),
            lambda h, slot, key, m: h.set_weight(f"{STAGING}/{slot} 77\nshow info", slot, 0),
            lambda h, slot, key, m: h.set_weight(STAGING, f"{slot} 77", 0),
            lambda h, slot, key, m: h.set_state(STAGING, slot, f"maint;set weight {STAGING}/{slot} 77"),
            lambda h, slot, key, m: h.map_set(m, f"{key};add map {m} {key}", "1"),
            lambda h, slot, key, m: h.map_set(m, f"{key} 1\nshow info", "1"),
            lambda h, slot, key, m: h.map_set(f"{m} {key} 1;show", key, "1"),
        ],
        ids=[
            "backend-semicolon",
            "backend-newline",
            "server-space",
            "state-semicolon",
            "map-key-semicolon",
            "map-key-newline",
            "map-file-space",
        ],
    )
    async def test_an_argument_that_would_inject_a_command_is_refused_before_anything_is_sent(
        self, haproxy, spy, free_slot, maintenance_map, attempt
    ):
        key = unique("it")
        weight = await weight_of(haproxy, free_slot)
        spy.sent.clear()
        try:
            with pytest.raises(UnsafeArgument):
                await attempt(haproxy, free_slot, key, maintenance_map)
            sent = list(spy.sent)
        finally:
            entries, now = await haproxy.map_entries(maintenance_map), await weight_of(haproxy, free_slot)
            if key in entries:
                await haproxy.map_del(maintenance_map, key)
            if now != weight:
                await haproxy.set_weight(STAGING, free_slot, weight)
        assert sent == []
        assert (key in entries, now) == (False, weight)

    async def test_a_backend_or_map_haproxy_does_not_have_is_an_error_not_an_empty_answer(self, haproxy, settings):
        with pytest.raises(HAProxyError, match="Can't find backend"):
            await haproxy.servers(unique("it_no_such_backend").replace("-", "_"))
        absent = str(settings.run_dir / "haproxy" / f"{unique('it-absent')}.map")
        with pytest.raises(HAProxyError, match="Unknown map"):
            await haproxy.map_entries(absent)
        with pytest.raises(HAProxyError, match="Unknown map"):
            await haproxy.map_set(absent, "it", "1")


class TestLocalTargetStop:
    """A deployer killed after starting a process but before recording its pid leaves a `starting` row without
    one; stopping that instance (as a redelivered deploy step does) must stop the process its pid file names, or
    it outlives the row and keeps the port a later instance is given. A pid file can only name a candidate
    instance's process: one naming any other process is not acted on."""

    async def _stop_unrecorded(self, pool, haproxy, slot: str, run_dir: Path, cwd: Path) -> tuple:
        await asyncio.to_thread(cwd.mkdir, parents=True, exist_ok=True)
        process = await asyncio.create_subprocess_exec("sleep", "300", cwd=cwd, start_new_session=True)
        target = LocalTarget(pool, haproxy, run_dir)
        async with pool.acquire() as conn:
            row_id = await conn.fetchval(
                "INSERT INTO instances (service, environment, version, digest, slot, port, state)"
                " VALUES ('shop', 'staging', 'it-orphan', $1, $2, 20199, 'starting') RETURNING id",
                "sha256:" + "0" * 64,
                slot,
            )
        try:
            (inst,) = [i for i in await target.live("shop", "staging") if i.id == row_id]
            assert inst.pid is None
            target.pid_file(inst).parent.mkdir(parents=True, exist_ok=True)
            target.pid_file(inst).write_text(f"{process.pid}\n")
            await target.stop(inst)
            async with pool.acquire() as conn:
                state = await conn.fetchval("SELECT state FROM instances WHERE id = $1", row_id)
            return process, state, target.pid_file(inst).exists()
        finally:
            async with pool.acquire() as conn:
                await conn.execute("DELETE FROM instances WHERE id = $1", row_id)

    async def test_an_instance_whose_pid_was_never_recorded_is_stopped_by_its_pid_file(
        self, pool, haproxy, free_slot, tmp_path
    ):
        process, state, pid_file_left = await self._stop_unrecorded(
            pool, haproxy, free_slot, tmp_path, tmp_path / "bundles" / "sealed"
        )
        try:
            assert await asyncio.wait_for(process.wait(), TIMEOUT) == -15  # SIGTERM, from stop
            assert state == "stopped" and not pid_file_left
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def test_a_pid_file_naming_a_process_that_is_no_candidate_kills_nothing(
        self, pool, haproxy, free_slot, tmp_path
    ):
        process, state, _ = await self._stop_unrecorded(pool, haproxy, free_slot, tmp_path, tmp_path / "elsewhere")
        try:
            assert process.returncode is None, "a process outside the bundle folders was stopped"
            assert state == "stopped"
        finally:
            process.kill()
            await process.wait()


# ------------------------------------------------------------------------------------------------- outbox relay
class Sweeps:
    """The relay's pool, telling the test each time a sweep of the outbox (one `publish_pending`) has given its
    connection back: after the first, a relay that found nothing waits to be woken."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.done = 0
        self._changed = asyncio.Condition()

    def acquire(self) -> _Acquisition:
        return _Acquisition(self)

    async def release(self, conn: asyncpg.Connection) -> None:
        await self._pool.release(conn)

    async def reached(self, count: int) -> None:
        """Returns once `count` sweeps have ended."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.done >= count)

    async def _swept(self) -> None:
        async with self._changed:
            self.done += 1
            self._changed.notify_all()


class _Acquisition:
    """`await pool.acquire()` (the relay's listener) or `async with pool.acquire()` (a sweep)."""

    def __init__(self, sweeps: Sweeps) -> None:
        self._sweeps = sweeps
        self._conn: asyncpg.Connection | None = None

    def __await__(self):
        return self._sweeps._pool.acquire().__await__()

    async def __aenter__(self) -> asyncpg.Connection:
        self._conn = await self._sweeps._pool.acquire()
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        await self._sweeps._pool.release(self._conn)
        await self._sweeps._swept()


class TestOutboxRelay:
    async def test_rows_are_marked_only_once_the_broker_has_acknowledged_them(self, settings, pool, scratch_topic):
        name = unique("it-relay")
        first, second = alert(name, "first"), alert(name, "second")
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, name, scratch_topic, first)
            await outbox.add(conn, name, scratch_topic, second)
        producer = Producer(as_principal(settings, "admin"), name)
        await producer.start()
        try:
            tried: list[str] = []

            async def refused_at_the_second(topic, key, value, headers) -> None:
                tried.append(header_dict(headers)["ce_id"])
                if len(tried) == 2:
                    raise KafkaConnectionError("the broker did not acknowledge")

            with pytest.raises(KafkaConnectionError):
                await Relay(pool, name, refused_at_the_second).publish_pending()
            assert tried == [first.id, second.id]
            assert await unpublished(pool, name) == [first.id, second.id]  # the first goes again: at least once

            sending, acknowledged = asyncio.Event(), asyncio.Event()

            async def held_by_the_broker(topic, key, value, headers) -> None:
                sending.set()
                await acknowledged.wait()
                await producer.send(topic, key, value, headers)

            sweep = asyncio.create_task(Relay(pool, name, held_by_the_broker).publish_pending())
            await asyncio.wait_for(sending.wait(), TIMEOUT)
            assert await unpublished(pool, name) == [first.id, second.id]
            acknowledged.set()
            assert await asyncio.wait_for(sweep, TIMEOUT) == 2
            assert await unpublished(pool, name) == []
            on_topic = await asyncio.wait_for(records_on(settings, scratch_topic, 2), TIMEOUT)
            assert [(e.id, e.data) for e in on_topic] == [(first.id, first.data), (second.id, second.data)]
        finally:
            await producer.stop()
            await forget_outbox(pool, name)

    async def test_an_event_the_broker_never_takes_is_kept_aside_and_the_events_after_it_published(
        self, settings, pool, scratch_topic
    ):
        """Larger than any request the producer may send (the contracts bound every field, so only a fault gets
        such a row into the outbox; here its payload is padded in place): before, the relay retried it forever in
        front of every event after it, and every release of that producer stalled."""
        name = unique("it-relay")
        huge, after = alert(name, "huge"), alert(name, "after")
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, name, scratch_topic, huge)
            await outbox.add(conn, name, scratch_topic, after)
            await conn.execute(
                "UPDATE outbox SET payload = payload || repeat(' ', 2000000) WHERE event_id = $1", huge.id
            )
        producer = Producer(as_principal(settings, "admin"), name)
        await producer.start()
        try:
            assert await Relay(pool, name, producer.enqueue).publish_pending() == 2
            (on_topic,) = await asyncio.wait_for(records_on(settings, scratch_topic, 1), TIMEOUT)
            assert on_topic.id == after.id
            async with pool.acquire() as conn:
                rows = await conn.fetch("SELECT event_id, published_at, refused FROM outbox WHERE producer = $1", name)
            kept = {r["event_id"]: r for r in rows}
            assert kept[after.id]["published_at"] is not None and kept[after.id]["refused"] is None
            assert kept[huge.id]["published_at"] is None
            assert kept[huge.id]["refused"].startswith("MessageSizeTooLargeError"), kept[huge.id]["refused"]
            assert await Relay(pool, name, producer.enqueue).publish_pending() == 0  # not tried again
        finally:
            await producer.stop()
            await forget_outbox(pool, name)

    async def test_two_instances_relaying_one_producer_publish_each_event_once_in_order(self, pool):
        """Instance a holds a batch at the broker; instance b sweeps meanwhile and must neither take the rows after
        a's batch (they would reach Kafka before a's) nor a's own rows."""
        name = unique("it-relay")
        events = [alert(name, f"e{i}") for i in range(6)]
        async with pool.acquire() as conn, conn.transaction():
            for e in events:
                await outbox.add(conn, name, "it.unused", e)
        published: list[str] = []
        sending, acknowledged = asyncio.Event(), asyncio.Event()

        async def held_by_the_broker(topic, key, value, headers) -> None:
            sending.set()
            await acknowledged.wait()
            published.append(header_dict(headers)["ce_id"])

        async def at_once(topic, key, value, headers) -> None:
            published.append(header_dict(headers)["ce_id"])

        try:
            a = asyncio.create_task(Relay(pool, name, held_by_the_broker, batch=3).publish_pending())
            await asyncio.wait_for(sending.wait(), TIMEOUT)
            assert await Relay(pool, name, at_once, batch=3).publish_pending() == 0
            assert published == []
            acknowledged.set()
            assert await asyncio.wait_for(a, TIMEOUT) == 3
            assert await Relay(pool, name, at_once, batch=3).publish_pending() == 3
            assert published == [e.id for e in events]
            assert await unpublished(pool, name) == []
        finally:
            acknowledged.set()
            await forget_outbox(pool, name)

    async def test_a_committed_event_wakes_the_relay_through_notify_long_before_its_poll(self, pool):
        name = unique("it-relay")
        event = alert(name, "woken")
        published: list[str] = []
        arrived = asyncio.Event()

        async def publish(topic, key, value, headers) -> None:
            published.append(header_dict(headers)["ce_id"])
            arrived.set()

        sweeps = Sweeps(pool)
        relay = asyncio.create_task(Relay(sweeps, name, publish, poll_seconds=3600).run())
        try:
            await asyncio.wait_for(sweeps.reached(1), TIMEOUT)
            assert (sweeps.done, published) == (1, [])  # the relay found nothing and waits, for an hour if need be
            async with pool.acquire() as conn, conn.transaction():
                await outbox.add(conn, name, "it.unused", event)
            await asyncio.wait_for(arrived.wait(), TIMEOUT)
            await asyncio.wait_for(sweeps.reached(2), TIMEOUT)  # the sweep the NOTIFY started has committed
            assert published == [event.id]
            assert await unpublished(pool, name) == []
        finally:
            relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)
            await forget_outbox(pool, name)


# ------------------------------------------------------------------------------ retries, then the dead letter
@pytest.fixture
async def group(settings) -> AsyncIterator[str]:
    """A consumer group of its own, deleted afterwards (if it ever got as far as joining)."""
    name = unique("it-retry")
    yield name
    admin = bus_admin.admin_client(settings.kafka_bootstrap, settings.secrets_dir, settings.kafka_ca_file)
    try:
        await asyncio.to_thread(lambda: admin.delete_consumer_groups([name])[name].result(timeout=30))
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
            raise


class TestRetryThenDeadLetter:
    async def test_a_record_that_keeps_failing_is_dead_lettered_after_the_last_attempt_and_the_next_one_handled(
        self, settings, pool, scratch_topic, group
    ):
        """The consumer reads the throwaway topic as `admin` (no service's ACLs name it); its dead letters go out as
        a worker's, which may write release.deadletter. The handler is the only test double."""
        failing, following = alert(group, "failing"), alert(group, "following")
        attempts: Counter[str] = Counter()
        handled = asyncio.Event()

        async def handler(envelope: Envelope) -> None:
            attempts[envelope.id] += 1
            if envelope.id == failing.id:
                raise ConnectionError("the ERP sandbox is unreachable")
            handled.set()

        producer = Producer(as_principal(settings, "admin"), group)
        dead_letters = Producer(as_principal(settings, "gatekeeper"), f"{group}-deadletters", idempotent=False)
        broker = make_broker(as_principal(settings, "admin"), group)
        consumer = Consumer(broker, group, dead_letters, "it-retry", pool)
        consumer.subscribe(scratch_topic, handler)
        consumer.register()
        tail = await TopicTail(as_principal(settings, "ops"), topics.DEADLETTER).start()
        await producer.start()
        await dead_letters.start()
        try:
            where = await producer.send(scratch_topic, *encode(failing))
            await producer.send(scratch_topic, *encode(following))
            await broker.start()
            await asyncio.wait_for(handled.wait(), TIMEOUT)
            letter = await tail.wait_for(
                lambda e: isinstance(e.data, DeadLetter) and e.data.source_topic == scratch_topic, TIMEOUT
            )
        finally:
            await broker.stop()
            await dead_letters.stop()
            await producer.stop()
            await tail.stop()
        assert attempts == {failing.id: MAX_ATTEMPTS, following.id: 1}
        assert MAX_ATTEMPTS == 5  # README, "Delivery guarantees"
        assert letter is not None, "no dead letter"
        dead = letter.data
        assert (dead.consumer, dead.source_topic, dead.partition, dead.offset) == (
            group,
            scratch_topic,
            where.partition,
            where.offset,
        )
        assert dead.reason.startswith(f"gave up after {MAX_ATTEMPTS} attempts")
        assert "the ERP sandbox is unreachable" in dead.reason and dead.error_type == "ConnectionError"
        assert dead.key == failing.subject
