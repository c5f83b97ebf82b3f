"""What the notifier's handlers need from the world, as ports: bootstrap wires the real adapters, unit tests
in-memory fakes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from releasegate_platform.catalog import NotificationRoute
from services.notifier.domain import Notification, ReleaseContext


class Routes(Protocol):
    """The catalog's notification routes of a service (none for a service the catalog does not know)."""

    def of(self, service: str) -> list[NotificationRoute]: ...


class Channel(Protocol):
    """Sends one notification over one route; raises DeliveryError (retryable or not) when it did not arrive."""

    async def send(self, route: NotificationRoute, n: Notification) -> None: ...


@dataclass(frozen=True)
class Delivery:
    """One (event, route) claimed for an attempt; `attempt` counts this one."""

    event_id: str
    route: NotificationRoute
    notification: Notification
    attempt: int


@dataclass(frozen=True)
class Source:
    """The record an event came in as (what its dead letter shows if its delivery is given up)."""

    topic: str
    key: str | None
    headers: dict[str, str]
    value: str


class Deliveries(Protocol):
    """The delivery ledger (`notification_deliveries`): one row per (event, route), claimed before each attempt."""

    async def context(self, release_id: str) -> ReleaseContext | None: ...

    async def record(
        self,
        consumer: str,
        n: Notification,
        routes: list[NotificationRoute],
        source: Source,
        context: ReleaseContext | None,
    ) -> bool:
        """In one transaction: the event marked processed, the release's context kept, a pending delivery per
        route. False (and nothing changed) if the event was recorded before."""
        ...

    async def claim(self, limit: int, lease_seconds: float) -> list[Delivery]:
        """Due deliveries, each marked as being attempted until the lease ends (a process that dies mid-send
        leaves it to be claimed again then); rows another worker holds are skipped."""
        ...

    async def delivered(self, d: Delivery) -> None: ...

    async def retry(self, d: Delivery, error: str, at: datetime) -> None: ...

    async def give_up(self, d: Delivery, error: str) -> None:
        """Mark the delivery failed and stage its dead letter (release.deadletter) in the same transaction."""
        ...
