"""The outbox relay outlives any broker or database outage: it retries with a growing, capped delay, never gives
up, and marks an event published only after the broker acknowledged it."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
)

from releasegate_runtime.backoff import Backoff
from releasegate_runtime.outbox import Relay

WAIT = 10.0  # a bound on waiting for what the test expects, never a synchronisation


class Outbox:
    """The outbox table of one producer and the parts of an asyncpg pool and connection the relay uses."""

    def __init__(self, events: list[str]) -> None:
        self.rows = [
            {
                "id": i,
                "topic": "release.alerts",
                "key": f"k{i}",
                "headers": {"ce_id": e},
                "payload": e,
                "waited": 0.001,
                "published": False,
                "refused": None,
            }
            for i, e in enumerate(events, 1)
        ]
        self.down = False
        self.listeners: list[object] = []
        self.released = 0

    async def connect(self) -> Outbox:
        if self.down:
            raise ConnectionRefusedError("PostgreSQL is down")
        return self

    async def add_listener(self, channel, callback) -> None:
        self.listeners.append(callback)

    async def remove_listener(self, channel, callback) -> None:
        self.listeners.remove(callback)

    @asynccontextmanager
    async def transaction(self):
        yield

    async def fetch(self, sql, producer, limit, lock_space):  # no other instance holds the producer's lock here
        return [r for r in self.rows if not r["published"] and r["refused"] is None][:limit]

    async def execute(self, sql, *args) -> None:
        if sql.startswith("UPDATE outbox SET refused"):
            id_, reason = args
            next(r for r in self.rows if r["id"] == id_)["refused"] = reason
            return
        for r in self.rows:
            if r["id"] in args[0]:
                r["published"] = True


class Acquire:
    """What `pool.acquire()` returns: awaited (the NOTIFY listener) or used with `async with` (each batch)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def __await__(self):
        return self.outbox.connect().__await__()

    async def __aenter__(self) -> Outbox:
        return await self.outbox.connect()

    async def __aexit__(self, *exc) -> None:
        return None


class ContextPool:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def acquire(self) -> Acquire:
        return Acquire(self.outbox)

    async def release(self, conn) -> None:
        self.outbox.released += 1


class Broker:
    """Fails with each of `failures` in turn, then acknowledges."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures, self.acked = list(failures), []
        self.all_acked = asyncio.Event()
        self.expected = 0

    async def publish(self, topic, key, value, headers) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.acked.append(value.decode())
        if len(self.acked) >= self.expected:
            self.all_acked.set()


class RecordingBackoff(Backoff):
    """Tiny delays, recorded; `retried(n)` is set once the relay asked for its n-th delay."""

    def __init__(self) -> None:
        super().__init__(0.001, 0.004)
        self.delays: list[float] = []
        self._waiting: dict[int, asyncio.Event] = {}

    def next_delay(self) -> float:
        self.delays.append(super().next_delay())
        for n, event in self._waiting.items():
            if len(self.delays) >= n:
                event.set()
        return self.delays[-1]

    async def retried(self, n: int) -> None:
        event = self._waiting.setdefault(n, asyncio.Event())
        if len(self.delays) >= n:
            event.set()
        await event.wait()


async def run_until_acked(relay: Relay, broker: Broker, count: int) -> None:
    broker.expected = count
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(broker.all_acked.wait(), WAIT)
        assert not task.done(), "the relay returned"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class TestRelaySurvivesOutages:
    async def test_any_broker_error_is_retried_until_the_events_are_published(self):
        outbox = Outbox(["e1", "e2"])
        broker = Broker(
            [
                KafkaConnectionError("broker down"),
                KafkaTimeoutError(),
                NotLeaderForPartitionError(),
                TopicAuthorizationFailedError(),
                RuntimeError("unforeseen"),
            ]
        )
        backoff = RecordingBackoff()
        await run_until_acked(
            Relay(ContextPool(outbox), "p", broker.publish, poll_seconds=0.01, backoff=backoff), broker, 2
        )
        assert broker.acked == ["e1", "e2"]
        assert all(r["published"] for r in outbox.rows)
        assert backoff.delays == [0.001, 0.002, 0.004, 0.004, 0.004]  # doubling, capped

    async def test_events_not_acknowledged_are_not_marked_published(self):
        outbox = Outbox(["e1"])

        async def refuse(*_):
            raise KafkaConnectionError("broker down")

        relay = Relay(ContextPool(outbox), "p", refuse, poll_seconds=0.01, backoff=RecordingBackoff())
        with pytest.raises(KafkaConnectionError):
            await relay.publish_pending()
        assert not outbox.rows[0]["published"]

    async def test_a_database_outage_is_retried_and_the_listener_released(self):
        outbox = Outbox(["e1"])
        outbox.down = True
        broker = Broker([])
        backoff = RecordingBackoff()
        relay = Relay(ContextPool(outbox), "p", broker.publish, poll_seconds=0.01, backoff=backoff)
        task = asyncio.create_task(relay.run())
        try:
            await asyncio.wait_for(backoff.retried(3), WAIT)  # the relay tried to connect three times
            outbox.down = False
            broker.expected = 1
            await asyncio.wait_for(broker.all_acked.wait(), WAIT)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert outbox.rows[0]["published"] and outbox.listeners == [] and outbox.released == 1

    async def test_an_event_the_broker_never_takes_is_kept_aside_with_the_reason_and_the_others_published(self):
        outbox = Outbox(["e1", "too large", "e3"])

        async def publish(topic, key, value, headers):
            if value == b"too large":
                raise MessageSizeTooLargeError("the message is 2000000 bytes")

        relay = Relay(ContextPool(outbox), "p", publish, poll_seconds=0.01, backoff=RecordingBackoff())
        assert await relay.publish_pending() == 3
        assert [(r["published"], r["refused"]) for r in outbox.rows] == [
            (True, None),
            (
                False,
                "MessageSizeTooLargeError: [Error 10] MessageSizeTooLargeError: the message is 2000000 bytes"
                " (9 bytes, topic release.alerts)",
            ),
            (True, None),
        ]
        assert await relay.publish_pending() == 0

    async def test_a_delay_starts_over_after_a_success(self):
        outbox = Outbox(["e1"])
        broker = Broker([KafkaConnectionError("down")] * 3)
        backoff = RecordingBackoff()
        relay = Relay(ContextPool(outbox), "p", broker.publish, poll_seconds=0.01, backoff=backoff)
        await run_until_acked(relay, broker, 1)
        assert backoff.next_delay() == 0.001


class TestPipelinedBatch:
    """A producer that returns once a record is queued: the relay queues the whole batch before it waits."""

    async def test_the_batch_is_queued_before_any_acknowledgement_and_marked_after_all(self):
        outbox = Outbox(["e1", "e2", "e3"])
        queued: list[str] = []
        acks: list[asyncio.Future] = []

        async def enqueue(topic, key, value, headers):
            queued.append(value.decode())
            acks.append(asyncio.get_running_loop().create_future())
            return acks[-1]

        all_queued = asyncio.Event()

        async def enqueue_and_note(topic, key, value, headers):
            ack = await enqueue(topic, key, value, headers)
            if len(acks) == 3:
                all_queued.set()
            return ack

        sweep = asyncio.create_task(Relay(ContextPool(outbox), "p", enqueue_and_note).publish_pending())
        await asyncio.wait_for(all_queued.wait(), WAIT)
        assert queued == ["e1", "e2", "e3"] and not any(r["published"] for r in outbox.rows)
        for ack in acks[:2]:
            ack.set_result(None)
        done, _ = await asyncio.wait({sweep}, timeout=0.2)  # a bound on a wait expected to end empty
        assert not done and not any(r["published"] for r in outbox.rows)
        acks[2].set_result(None)
        assert await asyncio.wait_for(sweep, WAIT) == 3
        assert all(r["published"] for r in outbox.rows)

    async def test_one_refused_acknowledgement_leaves_the_whole_batch_unpublished(self):
        outbox = Outbox(["e1", "e2"])

        async def enqueue(topic, key, value, headers):
            ack = asyncio.get_running_loop().create_future()
            if value == b"e2":
                ack.set_exception(KafkaTimeoutError())
            else:
                ack.set_result(None)
            return ack

        with pytest.raises(KafkaTimeoutError):
            await Relay(ContextPool(outbox), "p", enqueue).publish_pending()
        assert not any(r["published"] for r in outbox.rows)
