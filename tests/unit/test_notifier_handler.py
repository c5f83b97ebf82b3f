"""The notifier's handlers with in-memory ports: an event is recorded once with a delivery per matching route, a
redelivered record sends nothing again, failed deliveries are retried on the backoff schedule and given up (dead
letter) after the last attempt, a permanent failure at once."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import AlertRaised, ReleaseState, Severity
from releasegate_platform.catalog import NotificationRoute
from services.notifier.domain import DeliveryError, Notification, ReleaseContext, RetryPolicy
from services.notifier.handlers import DeliveryWorker, Notifier
from tests.support.notifier import FakeDeliveries, FakeRoutes, status_envelope

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SLACK = NotificationRoute(
    name="ops-slack", channel="slack", secret="notifier/ops.url",
    when={"environments": ["production"], "events": ["rolled_back", "alert"]},
)  # fmt: skip
HOOK = NotificationRoute(
    name="audit-hook", channel="webhook", secret="notifier/hook.url", signing_secret="notifier/hook.key"
)


class FakeChannel:
    """Answers with the scripted outcomes in turn (None: delivered), then delivers."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.sent: list[tuple[str, Notification]] = []

    async def send(self, route, n):
        self.sent.append((route.name, n))
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome


class Clock:
    def __init__(self):
        self.now = NOW

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ledger(clock):
    return FakeDeliveries(clock)


def notifier(ledger, routes=(SLACK, HOOK)):
    return Notifier(
        consumer="notifier", routes=FakeRoutes(list(routes)), deliveries=ledger, api_url="http://dash.test/"
    )


def worker(ledger, channel, clock, **policy):
    return DeliveryWorker(
        deliveries=ledger, channel=channel, policy=RetryPolicy(**({"initial": 2, "cap": 60} | policy)),
        lease_seconds=30, clock=clock, rand=lambda: 0.0,
    )  # fmt: skip


async def drain(w, ledger):
    """Attempt everything due now, as the worker's loop does."""
    for d in await ledger.claim(100, 30):
        await w.attempt(d)


class TestRecording:
    async def test_an_event_gets_one_delivery_per_matching_route_with_a_link_to_its_release(self, ledger):
        ledger.contexts["r-1"] = ReleaseContext("shop", "v3", "production")
        await notifier(ledger).on_event(topics.STATUS, status_envelope())
        assert sorted(r for _, r in ledger.rows) == ["audit-hook", "ops-slack"]
        n = next(iter(ledger.rows.values()))["n"]
        assert (n.environment, n.url) == ("production", "http://dash.test/releases/r-1")

    async def test_a_redelivered_record_records_and_sends_nothing_again(self, ledger, clock):
        envelope = status_envelope()
        channel = FakeChannel()
        w = worker(ledger, channel, clock)
        await notifier(ledger).on_event(topics.STATUS, envelope)
        await drain(w, ledger)
        await notifier(ledger).on_event(topics.STATUS, envelope)
        await drain(w, ledger)
        assert sorted(r for r, _ in channel.sent) == ["audit-hook"]  # staging-less release: unknown env for slack

    async def test_status_events_keep_the_release_context_for_later_alerts(self, ledger):
        n = notifier(ledger)
        await n.on_event(topics.STATUS, status_envelope(ReleaseState.RUNNING, "canary-10"))
        alert = AlertRaised(release_id="r-1", service="shop", severity=Severity.CRITICAL, title="t", detail="d")
        await n.on_event(topics.ALERTS, Envelope.new(alert, "releasegate/coordinator", "r-1"))
        alerts = [r for r in ledger.rows.values() if r["n"].kind == "alert"]
        assert {r["route"].name for r in alerts} == {"ops-slack", "audit-hook"}
        assert (alerts[0]["n"].version, alerts[0]["n"].environment) == ("v3", "production")

    async def test_a_service_without_routes_records_the_event_and_sends_nothing(self, ledger):
        await notifier(ledger, routes=()).on_event(topics.STATUS, status_envelope())
        assert ledger.rows == {} and ledger.processed


class TestDelivery:
    async def test_a_transient_failure_is_retried_on_the_backoff_schedule(self, ledger, clock):
        channel = FakeChannel(DeliveryError("HTTP 500", retryable=True), DeliveryError("HTTP 503", retryable=True))
        w = worker(ledger, channel, clock)
        await notifier(ledger, [HOOK]).on_event(topics.STATUS, status_envelope())
        await drain(w, ledger)
        row = next(iter(ledger.rows.values()))
        assert (row["status"], row["due"], row["error"]) == ("pending", NOW + timedelta(seconds=2), "HTTP 500")
        await drain(w, ledger)
        assert len(channel.sent) == 1, "retried before its time"
        clock.now += timedelta(seconds=2)
        await drain(w, ledger)
        assert row["due"] == clock.now + timedelta(seconds=4)
        clock.now += timedelta(seconds=4)
        await drain(w, ledger)
        assert (row["status"], row["attempts"], len(channel.sent)) == ("delivered", 3, 3)
        assert ledger.dead_letters == []

    async def test_after_the_last_attempt_the_delivery_is_dead_lettered_with_the_reason(self, ledger, clock):
        channel = FakeChannel(*[DeliveryError("route audit-hook: HTTP 500", retryable=True)] * 10)
        w = worker(ledger, channel, clock, max_attempts=3)
        envelope = status_envelope()
        await notifier(ledger, [HOOK]).on_event(topics.STATUS, envelope)
        for _ in range(5):
            await drain(w, ledger)
            clock.now += timedelta(minutes=5)
        assert len(channel.sent) == 3
        ((source, reason),) = ledger.dead_letters
        assert source.topic == topics.STATUS and source.headers["ce_id"] == envelope.id
        assert "after 3 attempts" in reason and "HTTP 500" in reason and "audit-hook" in reason

    async def test_a_permanent_failure_is_dead_lettered_at_once(self, ledger, clock):
        channel = FakeChannel(DeliveryError("HTTP 404", retryable=False))
        w = worker(ledger, channel, clock)
        await notifier(ledger, [HOOK]).on_event(topics.STATUS, status_envelope())
        await drain(w, ledger)
        assert len(channel.sent) == 1
        assert "permanent failure: HTTP 404" in ledger.dead_letters[0][1]

    async def test_an_unexpected_error_is_retried_without_its_message(self, ledger, clock):
        channel = FakeChannel(RuntimeError("https://hooks.example/secret-token"))
        await notifier(ledger, [HOOK]).on_event(topics.STATUS, status_envelope())
        await drain(worker(ledger, channel, clock), ledger)
        row = next(iter(ledger.rows.values()))
        assert row["status"] == "pending" and "secret-token" not in row["error"]

    async def test_a_delivery_interrupted_more_often_than_it_may_be_attempted_is_given_up_unsent(self, ledger, clock):
        channel = FakeChannel()
        w = worker(ledger, channel, clock, max_attempts=2)
        await notifier(ledger, [HOOK]).on_event(topics.STATUS, status_envelope())
        for _ in range(2):  # claimed, then the process died before recording an outcome
            await ledger.claim(10, 30)
            clock.now += timedelta(seconds=31)
        await drain(w, ledger)
        assert channel.sent == [] and "interrupted 2 times" in ledger.dead_letters[0][1]

    async def test_a_slow_receiver_does_not_hold_other_releases(self, ledger, clock):
        gate, fast_sent, both_sent = asyncio.Event(), asyncio.Event(), asyncio.Event()

        class Slow(FakeChannel):
            async def send(self, route, n):
                if n.release_id == "r-slow":
                    await gate.wait()
                await super().send(route, n)
                (fast_sent if n.release_id == "r-fast" else both_sent).set()

        channel = Slow()
        w = DeliveryWorker(deliveries=ledger, channel=channel, policy=RetryPolicy(), lease_seconds=30,
                           concurrency=4, poll_seconds=0.05, clock=clock)  # fmt: skip
        n = notifier(ledger, [HOOK])
        n._wake = w.wake
        await n.on_event(topics.STATUS, status_envelope(release_id="r-slow"))
        await n.on_event(topics.STATUS, status_envelope(release_id="r-fast"))
        run = asyncio.create_task(w.run())
        try:
            await asyncio.wait_for(fast_sent.wait(), 5)
            assert [x.release_id for _, x in channel.sent] == ["r-fast"]
            gate.set()
            await asyncio.wait_for(both_sent.wait(), 5)
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
        assert {r["status"] for r in ledger.rows.values()} == {"delivered"}


def test_notification_round_trips_through_its_stored_form():
    n = replace(
        Notification("e", "t", "alert", "info", "r", "shop", None, None, None, None, "title", "why", "at", "u"),
        version="v1",
    )
    assert Notification.from_json(n.as_json()) == n
