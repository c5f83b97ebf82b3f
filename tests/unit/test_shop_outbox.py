"""The storefront's outbox relay, against a fake outbox table and a fake broker: events go out as they were built,
are marked sent only once acknowledged, and no outage or surprise error ends the relay."""

import asyncio
import contextlib
import json
import sys
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, UnknownTopicOrPartitionError

from contracts.cloudevents import decode
from contracts.events import OrderPlaced

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shop" / "bundle_src"))

from storefront import outbox
from storefront.events import ORDER_PLACED, Checkout, EventPublisher
from storefront.outbox import OutgoingEvent, PendingEvent, Relay

WAIT_S = 5  # upper bound for what a fake completes at once; the tests wait for outcomes, never for time


def event(n: int, size: int = 10) -> OutgoingEvent:
    return OutgoingEvent(
        topic="shop.events",
        key=b"acme",
        value=json.dumps({"n": n, "pad": "x" * size}).encode(),
        headers=(("ce_id", f"id-{n}".encode()), ("ce_type", b"shop.order.placed.v1")),
    )


class FakeOutbox:
    """The outbox table: rows in id order, what the relay marked, and a signal once nothing is pending."""

    def __init__(self, events: list[OutgoingEvent]) -> None:
        self.rows = {i + 1: e for i, e in enumerate(events)}
        self.sent: list[int] = []
        self.refused: dict[int, str] = {}
        self.drained = asyncio.Event()
        self.leaderships = 0

    def pending_ids(self) -> list[int]:
        return [i for i in self.rows if i not in self.sent and i not in self.refused]

    async def pending(self, limit: int) -> list[PendingEvent]:
        return [PendingEvent(i, self.rows[i]) for i in self.pending_ids()[:limit]]

    async def mark_sent(self, ids) -> None:
        assert not set(ids) & set(self.sent), "a row is marked sent twice"
        self.sent.extend(ids)

    async def mark_refused(self, id_: int, reason: str) -> None:
        self.refused[id_] = reason

    async def purge_sent(self, older_than_s: float, limit: int) -> int:
        return 0

    async def wait_for_new(self, timeout_s: float) -> None:
        if not self.pending_ids():
            self.drained.set()
            await asyncio.Event().wait()  # nothing new will come: the test cancels the relay

    def lead(self):
        @contextlib.asynccontextmanager
        async def leadership():
            self.leaderships += 1
            yield self

        return leadership


class FakeBroker:
    """Producers that fail as scripted: `down_starts` failed starts, then failures per delivered record number."""

    def __init__(
        self,
        down_starts: int = 0,
        failing: dict[int, list[Exception]] | None = None,
        refuse_on_send: set[int] = frozenset(),
        max_bytes: int = 10_000,
    ) -> None:
        self.down_starts, self.failing = down_starts, failing or {}
        self.refuse_on_send, self.max_bytes = refuse_on_send, max_bytes
        self.log: list[tuple[str, bytes, bytes | None, list]] = []  # every record the broker acknowledged
        self.producers = self.stopped = 0

    async def open(self):
        if self.down_starts:
            self.down_starts -= 1
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 19092)]")
        self.producers += 1
        return FakeProducer(self)


class FakeProducer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker

    async def send(self, topic, value, *, key, headers):
        n = json.loads(value)["n"]
        if len(value) > self.broker.max_bytes:
            raise MessageSizeTooLargeError(f"The message is {len(value)} bytes")
        ack = asyncio.get_running_loop().create_future()
        failures = self.broker.failing.get(n)
        if failures:
            ack.set_exception(failures.pop(0))
        else:
            self.broker.log.append((topic, value, key, headers))
            ack.set_result(n)
        return ack

    async def stop(self):
        self.broker.stopped += 1


async def relay_until_drained(store: FakeOutbox, broker: FakeBroker, batch: int = 200) -> list[float]:
    """Run a relay until nothing is pending; the delays it chose to wait, in order."""
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    relay = Relay(store.lead(), broker.open, batch=batch, sleep=sleep)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(store.drained.wait(), WAIT_S)
        assert not task.done(), "the relay ended"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return delays


class TestOutboxRelay:
    async def test_publishes_every_event_exactly_as_built_in_order_and_marks_each_sent(self):
        events = [event(n) for n in range(1, 8)]
        store, broker = FakeOutbox(events), FakeBroker()
        await relay_until_drained(store, broker, batch=3)
        assert [(value, key, headers) for _, value, key, headers in broker.log] == [
            (e.value, e.key, list(e.headers)) for e in events
        ]
        assert store.sent == [1, 2, 3, 4, 5, 6, 7]

    async def test_survives_a_broker_outage_with_growing_capped_delays_and_loses_nothing(self):
        store = FakeOutbox([event(n) for n in range(1, 4)])
        broker = FakeBroker(down_starts=12)
        delays = await relay_until_drained(store, broker)
        assert len(delays) == 12
        assert delays == sorted(delays) and delays[0] == outbox.BACKOFF_FIRST_S and delays[-1] == outbox.BACKOFF_MAX_S
        assert store.sent == [1, 2, 3]

    async def test_an_unacknowledged_event_is_not_marked_sent_and_goes_out_again(self):
        store = FakeOutbox([event(n) for n in range(1, 5)])
        broker = FakeBroker(failing={3: [KafkaConnectionError("broker went away")]})
        await relay_until_drained(store, broker)
        # 1, 2 and 4 were acknowledged the first time and stay sent; only 3 is sent again
        assert store.sent == [1, 2, 4, 3]
        assert [json.loads(value)["n"] for _, value, _, _ in broker.log] == [1, 2, 4, 3]
        assert broker.producers == 2 and broker.stopped >= 1, "the failed producer is replaced"

    @pytest.mark.parametrize(
        "surprise",
        [UnknownTopicOrPartitionError(), RuntimeError("a bug"), KeyError("x")],
        ids=["aiokafka-error", "runtime-error", "key-error"],
    )
    async def test_no_kind_of_error_ends_the_relay(self, surprise):
        store = FakeOutbox([event(1), event(2)])
        broker = FakeBroker(failing={1: [surprise, surprise]})
        delays = await relay_until_drained(store, broker)
        assert len(delays) == 2 and store.sent == [2, 1]

    async def test_a_lost_database_connection_is_opened_again_and_nothing_is_lost(self):
        store = FakeOutbox([event(1), event(2)])
        real_pending, calls = store.pending, []

        async def pending_once_broken(limit):
            calls.append(limit)
            if len(calls) == 1:
                raise ConnectionResetError("server closed the connection")
            return await real_pending(limit)

        store.pending = pending_once_broken
        delays = await relay_until_drained(store, FakeBroker())
        assert store.sent == [1, 2] and len(delays) == 1 and store.leaderships == 2

    async def test_success_resets_the_delay(self):
        store = FakeOutbox([event(n) for n in range(1, 4)])
        broker = FakeBroker(failing={1: [KafkaConnectionError("down")] * 3, 3: [KafkaConnectionError("down")]})
        delays = await relay_until_drained(store, broker, batch=1)
        assert delays[:3] == [outbox.backoff_s(1), outbox.backoff_s(2), outbox.backoff_s(3)]
        assert delays[3] == outbox.backoff_s(1), "the delay starts small again after an acknowledged batch"

    async def test_a_record_the_broker_will_never_take_is_set_aside_with_its_reason_and_the_rest_go_out(self):
        store = FakeOutbox([event(1), event(2, size=20_000), event(3)])
        broker = FakeBroker()
        delays = await relay_until_drained(store, broker)
        assert store.sent == [1, 3] and delays == []
        assert "MessageSizeTooLargeError" in store.refused[2] and "bytes" in store.refused[2]

    async def test_a_record_the_broker_refuses_after_sending_is_set_aside_too(self):
        store = FakeOutbox([event(1), event(2)])
        broker = FakeBroker(failing={1: [MessageSizeTooLargeError("broker: record too large")]})
        await relay_until_drained(store, broker)
        assert store.sent == [2] and list(store.refused) == [1]


def test_backoff_doubles_from_the_first_delay_up_to_the_cap():
    assert [outbox.backoff_s(n) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]
    assert outbox.backoff_s(100) == outbox.BACKOFF_MAX_S


def test_an_order_event_carries_the_cloudevent_headers_and_fields_consumers_read():
    publisher = EventPublisher(None, "shop.events", version="v2", environment="production", instance="production-s1-v2")
    checkout = Checkout(tenant="acme", checkout_id="c-1", amount_cents=2052, currency="USD", order_id="o-1")
    built = publisher.build(
        ORDER_PLACED,
        checkout,
        latency_ms=12.3456,
        items=[{"sku": "TEE-001", "qty": 1}],
        customer="guest@acme.shop.test",
        payment_ref="A1",
        tax_cents=152,
        region="us-ca",
        placed_at="2026-11-28T10:00:00Z",
    )
    decoded = decode(list(built.headers), built.value)  # as the verifier and the rollback's replay read it
    assert isinstance(decoded.data, OrderPlaced) and decoded.data.order_id == "o-1"
    headers = dict(built.headers)
    assert (built.topic, built.key) == ("shop.events", b"acme")
    assert {
        name: headers[name] for name in ("ce_specversion", "ce_source", "ce_type", "ce_tenant", "content-type")
    } == {
        "ce_specversion": b"1.0",
        "ce_source": b"shop/production/production-s1-v2",
        "ce_type": ORDER_PLACED.encode(),
        "ce_tenant": b"acme",
        "content-type": b"application/json",
    }
    assert headers["ce_id"] and headers["ce_time"].endswith(b"Z")
    assert json.loads(built.value) == {
        "version": "v2",
        "environment": "production",
        "tenant": "acme",
        "instance": "production-s1-v2",
        "checkout_id": "c-1",
        "order_id": "o-1",
        "amount_cents": 2052,
        "currency": "USD",
        "reason": None,
        "latency_ms": 12.346,
        "items": [{"sku": "TEE-001", "qty": 1}],
        "customer": "guest@acme.shop.test",
        "payment_ref": "A1",
        "tax_cents": 152,
        "region": "us-ca",
        "placed_at": "2026-11-28T10:00:00Z",
    }
