"""The notifier's handlers. `Notifier.on_event` runs on the consumer's path and only records: the event as a
notification and one pending delivery per matching route, with the event id, in one transaction (a redelivered
record records nothing). `DeliveryWorker` sends, off that path: it claims due deliveries, sends each with its own
deadline, and on failure schedules the next attempt with backoff, or after the last one (or at once for a
permanent failure) marks it failed and stages a dead letter with the reason. Every adapter is injected
(`bootstrap`)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import structlog

from contracts.cloudevents import Envelope, encode
from contracts.events import AlertRaised, ReleaseStatusChanged
from services.notifier import domain
from services.notifier.domain import DeliveryError, RetryPolicy
from services.notifier.ports import Channel, Deliveries, Delivery, Routes, Source

log = structlog.get_logger()


def utcnow() -> datetime:
    return datetime.now(UTC)


class Notifier:
    def __init__(
        self,
        *,
        consumer: str,
        routes: Routes,
        deliveries: Deliveries,
        api_url: str,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        """`wake`: tells the delivery worker that new deliveries are due (it also polls)."""
        self._consumer, self._routes, self._deliveries = consumer, routes, deliveries
        self._api_url, self._wake = api_url.rstrip("/"), wake

    def release_url(self, release_id: str) -> str:
        return f"{self._api_url}/releases/{quote(release_id, safe='')}"

    async def on_event(self, topic: str, envelope: Envelope) -> None:
        event = envelope.data
        assert isinstance(event, ReleaseStatusChanged | AlertRaised)  # the subscriber accepts only these
        known = await self._deliveries.context(event.release_id)
        url = self.release_url(event.release_id)
        if isinstance(event, ReleaseStatusChanged):
            n = domain.from_status(envelope.id, envelope.time, event, known, url)
            context: domain.ReleaseContext | None = domain.context_after(known, event)
        else:
            n, context = domain.from_alert(envelope.id, envelope.time, event, known, url), None
        routes = domain.routes_for(self._routes.of(n.service), n)
        key, value, headers = encode(envelope)
        source = Source(
            topic=topic,
            key=key.decode() if key is not None else None,
            headers={k: v.decode() for k, v in headers},
            value=value.decode(),
        )
        if not await self._deliveries.record(self._consumer, n, routes, source, context):
            log.info("event already recorded; nothing sent again", event_id=envelope.id)
            return
        if routes:
            log.info("notifications due", kind=n.kind, routes=[r.name for r in routes])
            self._wake()


class DeliveryWorker:
    """Sends due deliveries, up to `concurrency` at once; a slow receiver holds only its own deliveries."""

    def __init__(
        self,
        *,
        deliveries: Deliveries,
        channel: Channel,
        policy: RetryPolicy,
        lease_seconds: float,
        concurrency: int = 8,
        poll_seconds: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._deliveries, self._channel, self._policy = deliveries, channel, policy
        self._lease, self._concurrency, self._poll = lease_seconds, concurrency, poll_seconds
        self._clock, self._rand = clock, rand
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: claim what is due while there is room, then wait for a wake-up, a finished delivery
        or the poll interval (retries become due by time alone)."""
        try:
            while True:
                self._wake.clear()
                room = self._concurrency - len(self._in_flight)
                claimed = await self._deliveries.claim(room, self._lease) if room > 0 else []
                for d in claimed:
                    task = asyncio.create_task(self.attempt(d), name=f"deliver-{d.route.name}")
                    self._in_flight.add(task)
                    task.add_done_callback(self._settled)
                if len(claimed) == room and room > 0:
                    continue  # there may be more due
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({waker, *self._in_flight}, timeout=self._poll, return_when="FIRST_COMPLETED")
                finally:
                    waker.cancel()
        finally:
            for task in self._in_flight:
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _settled(self, task: asyncio.Task[None]) -> None:
        """An attempt whose outcome could not be recorded (the database failed) is claimed again after its lease."""
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery outcome not recorded; retried after its lease", error=repr(task.exception()))

    async def attempt(self, d: Delivery) -> None:
        """One attempt of one delivery, and its outcome recorded. A delivery claimed more often than it may be
        attempted (its process died mid-send each time) is given up without another send."""
        bound = {"release_id": d.notification.release_id, "route": d.route.name, "attempt": d.attempt}
        with structlog.contextvars.bound_contextvars(**bound):
            if d.attempt > self._policy.max_attempts:
                await self._give_up(d, f"interrupted {d.attempt - 1} times while sending")
                return
            try:
                await self._channel.send(d.route, d.notification)
            except Exception as exc:
                if not isinstance(exc, DeliveryError):
                    # only the error's kind: a client library's message may quote the secret URL
                    exc = DeliveryError(f"{type(exc).__name__} while sending", retryable=True)
                delay = self._policy.delay_after(d.attempt, self._rand) if exc.retryable else None
                if delay is None:
                    why = f"after {d.attempt} attempts" if exc.retryable else "permanent failure"
                    await self._give_up(d, f"{why}: {exc}")
                    return
                log.warning("delivery failed; will retry", error=str(exc), retry_in=round(delay, 2))
                await self._deliveries.retry(d, str(exc), self._clock() + timedelta(seconds=delay))
                return
            await self._deliveries.delivered(d)
            log.info("notification delivered", channel=d.route.channel)

    async def _give_up(self, d: Delivery, why: str) -> None:
        n = d.notification
        reason = f"notification {n.kind} of release {n.release_id} on route {d.route.name} ({d.route.channel}) not delivered, {why}"
        log.error("delivery given up; dead-lettered", reason=reason)
        await self._deliveries.give_up(d, reason)
