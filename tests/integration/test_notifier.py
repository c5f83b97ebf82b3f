"""The notifier as its own OS process against the real stack (Kafka, PostgreSQL): a status event published on
release.status as the coordinator reaches a local webhook receiver exactly once even when the record is delivered
twice, a notifier SIGKILLed while its webhook request is in flight sends it again after its restart with the same
event id (the receiver's idempotency key), and a receiver that always fails yields a dead letter on
release.deadletter after the last attempt, with the reason.

The stack's own notifier (deploy/services.sh, group releasegate-notifier) must not be running while this module
runs: it would share the consumer group and take some of these records with the repository's catalog."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import DeadLetter, ReleaseState, ReleaseStatusChanged
from releasegate_cli.probes import TopicTail
from releasegate_runtime.catch_up import CatchUpBarrier, KafkaOffsets
from releasegate_runtime.kafka import Producer, client_options
from services.notifier import render
from tests.support.notifier import Receiver, Secrets, serving
from tests.support.releases import TEST_CATALOG
from tests.support.services import Service, as_principal, wait_until

pytestmark = pytest.mark.integration

HOOK_KEY = "whsec-integration-7d2e"
MAX_ATTEMPTS = 3


@pytest.fixture
async def receiver():
    async with serving(Receiver()) as r:
        yield r


@pytest.fixture
def routes_dir(tmp_path, receiver: Receiver):
    """A catalog whose it-shop entry routes rolled-back production releases to the receiver's two hooks (one
    that answers, one that always fails), and the secrets folder with their URLs and signing key."""
    secrets = Secrets(tmp_path / "secrets")
    secrets.put("notifier/ok.url", f"{receiver.base}/ok")
    secrets.put("notifier/failing.url", f"{receiver.base}/failing")
    secrets.put("notifier/hook.key", HOOK_KEY)
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "it-shop.yaml").write_text(
        TEST_CATALOG
        + """notifications:
  routes:
    - name: ok-hook
      channel: webhook
      secret: notifier/ok.url
      signing_secret: notifier/hook.key
      when: {environments: [production], events: [rolled_back]}
    - name: failing-hook
      channel: webhook
      secret: notifier/failing.url
      signing_secret: notifier/hook.key
      when: {environments: [production], events: [rollback_failed]}
"""
    )
    return catalog, secrets.root


@pytest.fixture
async def notifier(settings, pool, routes_dir):
    """The notifier as its own process, once it has read what its topics held (earlier runs' releases): an event
    a test sends is then taken up at once, not behind a backlog."""
    catalog, secrets = routes_dir
    svc = Service(
        "notifier",
        {
            "RG_CATALOG_DIR": str(catalog),
            "RG_NOTIFIER_SECRETS_DIR": str(secrets),
            "RG_NOTIFIER_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "RG_NOTIFIER_RETRY_INITIAL_SECONDS": "0.2",
            "RG_NOTIFIER_RETRY_CAP_SECONDS": "0.5",
            "RG_API_URL": "http://127.0.0.1:18800",
            "RG_NOTIFIER_TIMEOUT_SECONDS": "2",  # a delivery claimed by a killed notifier is free again after 9 s
        },
    ).start()
    barrier = CatchUpBarrier(
        KafkaOffsets(client_options(as_principal(settings, "admin"))),
        "releasegate-notifier",
        [topics.STATUS, topics.ALERTS],
        timeout=600,
    )
    try:
        assert await barrier.wait(), "the notifier did not catch up with its topics"
        yield svc
    finally:
        svc.stop()


@pytest.fixture
async def coordinator_producer(settings):
    """release.status is written by the coordinator only."""
    p = Producer(as_principal(settings, "coordinator"), "test-notifier")
    await p.start()
    yield p
    await p.stop()


def status(release_id: str, state: ReleaseState) -> Envelope:
    data = ReleaseStatusChanged(
        release_id=release_id,
        service="it-shop",
        version="v9",
        state=state,
        step="compensate:production",
        actor="coordinator",
        reason=f"integration test {state.value}",
    )
    return Envelope.new(data, "releasegate/coordinator", release_id)


async def deliveries(pool, event_id: str) -> list[tuple[str, str, int]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT route, status, attempts FROM notification_deliveries WHERE event_id = $1 ORDER BY route", event_id
        )
    return [tuple(r) for r in rows]


class TestNotifierOnTheStack:
    async def test_a_status_event_reaches_the_receiver_once_even_when_delivered_twice(
        self,
        pool,
        notifier,
        coordinator_producer,
        receiver: Receiver,
    ):
        rid = f"it-{uuid.uuid4().hex[:10]}"
        first = status(rid, ReleaseState.ROLLED_BACK)
        await coordinator_producer.send_envelope(topics.STATUS, first)
        await coordinator_producer.send_envelope(topics.STATUS, first)  # a redelivery: same record, same id
        marker = status(rid, ReleaseState.ROLLED_BACK)  # behind the duplicate on the release's partition
        await coordinator_producer.send_envelope(topics.STATUS, marker)

        async def both_delivered():
            return await deliveries(pool, first.id) == [("ok-hook", "delivered", 1)] and await deliveries(
                pool, marker.id
            ) == [("ok-hook", "delivered", 1)]

        await wait_until(both_delivered, 90, "the event and the marker behind its duplicate delivered")
        ids = [r.headers["X-Releasegate-Event-Id"] for r in receiver.requests if r.path == "/ok"]
        assert sorted(ids) == sorted([first.id, marker.id])
        request = next(r for r in receiver.requests if r.headers["X-Releasegate-Event-Id"] == first.id)
        body = request.body
        assert render.verify(HOOK_KEY.encode(), request.headers["X-Releasegate-Signature"], body, now=_t(request))
        payload = json.loads(body)
        assert (payload["release_id"], payload["environment"], payload["state"]) == (rid, "production", "rolled_back")
        assert payload["url"] == f"http://127.0.0.1:18800/releases/{rid}"

    async def test_a_burst_read_while_the_notifier_was_down_is_recorded_in_batches_and_each_sent_once(
        self, pool, notifier, coordinator_producer, receiver: Receiver
    ):
        """What one fetch brings is recorded in one transaction (one commit for many events): the burst that
        waited while the notifier was stopped reaches the receiver once per event, a duplicate record among it
        included, and its events share transactions (their `processed_at` is the transaction's start)."""
        notifier.stop()
        burst = [status(f"it-{uuid.uuid4().hex[:10]}", ReleaseState.ROLLED_BACK) for _ in range(30)]
        for envelope in [*burst[:10], burst[3], *burst[10:]]:  # burst[3] redelivered within the burst
            await coordinator_producer.send_envelope(topics.STATUS, envelope)
        notifier.start()

        async def all_delivered():
            async with pool.acquire() as conn:
                return await conn.fetchval(
                    "SELECT count(*) FROM notification_deliveries WHERE event_id = ANY($1::text[])"
                    " AND status = 'delivered'",
                    [e.id for e in burst],
                ) == len(burst)

        await wait_until(all_delivered, 90, "every event of the burst delivered")
        sent = [r.headers["X-Releasegate-Event-Id"] for r in receiver.requests if r.path == "/ok"]
        assert sorted(sent) == sorted(e.id for e in burst), "an event was sent twice or not at all"
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT event_id, processed_at FROM processed_events WHERE consumer = 'notifier'"
                " AND event_id = ANY($1::text[])",
                [e.id for e in burst],
            )
            attempts = await conn.fetch(
                "SELECT attempts FROM notification_deliveries WHERE event_id = ANY($1::text[])", [e.id for e in burst]
            )
        assert len(rows) == len(burst) and {a["attempts"] for a in attempts} == {1}
        assert len({r["processed_at"] for r in rows}) < len(burst), "every event had a transaction of its own"

    async def test_a_notifier_killed_mid_delivery_sends_it_again_after_restart_under_the_same_event_id(
        self, pool, notifier, coordinator_producer, receiver: Receiver
    ):
        """At-least-once towards the receiver, exactly once in effect: the request in flight when the notifier died
        may have been acted on, so it is sent again, and every copy carries the event id the receiver dedupes on."""
        receiver.hold = asyncio.Event()  # the receiver keeps the first request open
        event = status(f"it-{uuid.uuid4().hex[:10]}", ReleaseState.ROLLED_BACK)
        await coordinator_producer.send_envelope(topics.STATUS, event)
        await asyncio.wait_for(receiver.arrived.wait(), 90)
        notifier.kill()
        receiver.hold.set()
        notifier.start()

        async def delivered():
            return [(route, state) for route, state, _ in await deliveries(pool, event.id)] == [
                ("ok-hook", "delivered")
            ]

        await wait_until(delivered, 90, "the delivery the killed notifier had in flight made after its restart")
        sent = [r for r in receiver.requests if r.path == "/ok"]
        assert len(sent) >= 2, "the request in flight at the kill was not sent again"
        assert {r.headers["X-Releasegate-Event-Id"] for r in sent} == {event.id}
        assert all(
            render.verify(HOOK_KEY.encode(), r.headers["X-Releasegate-Signature"], r.body, now=_t(r)) for r in sent
        )
        async with pool.acquire() as conn:
            recorded = await conn.fetchval("SELECT count(*) FROM notification_events WHERE event_id = $1", event.id)
        assert recorded == 1 and len(await deliveries(pool, event.id)) == 1, "the notification was recorded twice"

    async def test_a_receiver_that_always_fails_yields_a_dead_letter_after_the_last_attempt(
        self,
        settings,
        pool,
        notifier,
        coordinator_producer,
        receiver: Receiver,
    ):
        receiver.script = [(500, b"always down")] * 20
        rid = f"it-{uuid.uuid4().hex[:10]}"
        event = status(rid, ReleaseState.ROLLBACK_FAILED)
        tail = await TopicTail(as_principal(settings, "ops"), topics.DEADLETTER).start()
        try:
            await coordinator_producer.send_envelope(topics.STATUS, event)
            letter = await tail.wait_for(
                lambda e: isinstance(e.data, DeadLetter) and e.data.headers.get("ce_id") == event.id, 90
            )
        finally:
            await tail.stop()
        assert letter is not None, "no dead letter"
        dead: DeadLetter = letter.data  # type: ignore[assignment]
        assert (dead.consumer, dead.source_topic, dead.key, dead.error_type) == (
            "releasegate-notifier",
            topics.STATUS,
            rid,
            "DeliveryFailed",
        )
        assert f"after {MAX_ATTEMPTS} attempts" in dead.reason and "HTTP 500: always down" in dead.reason
        assert "failing-hook" in dead.reason and receiver.base not in dead.reason
        assert len([r for r in receiver.requests if r.path == "/failing"]) == MAX_ATTEMPTS
        assert await deliveries(pool, event.id) == [("failing-hook", "failed", MAX_ATTEMPTS)]


def _t(request) -> int:
    """The request's own signing time: the check is of the signature, not of this test's clock."""
    return int(request.headers["X-Releasegate-Signature"].split(",")[0].removeprefix("t="))
