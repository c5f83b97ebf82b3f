"""The notifier's own model and rules, pure: what a notification says about an event, which routes take it, and
when a failed delivery is tried again."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime

from contracts.events import AlertRaised, ReleaseState, ReleaseStatusChanged, Severity
from releasegate_platform.catalog import NotificationRoute

# A state's severity, for routes that filter on severities (an alert carries its own).
STATE_SEVERITY: dict[ReleaseState, Severity] = {
    ReleaseState.ROLLBACK_FAILED: Severity.CRITICAL,
    ReleaseState.ROLLING_BACK: Severity.WARNING,
    ReleaseState.ROLLED_BACK: Severity.WARNING,
    ReleaseState.REJECTED: Severity.WARNING,
    ReleaseState.ABORTED: Severity.WARNING,
    ReleaseState.AWAITING_APPROVAL: Severity.WARNING,
    ReleaseState.PAUSED: Severity.WARNING,
}
ALERT = "alert"
# The order in which a release reaches environments: the furthest one reached names a step-less event's environment.
ENVIRONMENT_ORDER = ("staging", "production")
_STAGING_STEP = re.compile(r"(^|-)staging($|-)")
_PRODUCTION_STEP = re.compile(r"(^|-)(production|canary|preview|roll|wave|blue|green)($|-)")


class NotifierError(Exception):
    """Base of the notifier's errors."""


class DeliveryError(NotifierError):
    """A delivery failed. `retryable`: a later attempt may succeed (a timeout, a 5xx, 429); otherwise it never
    will (a 4xx, a refused URL, a missing secret) and the delivery is dead-lettered at once."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.retryable = retryable


@dataclass(frozen=True)
class Notification:
    """What one event tells people; stored with each delivery, so a retry sends exactly what the first try did."""

    event_id: str
    event_type: str
    kind: str  # a release state, or `alert`
    severity: str
    release_id: str
    service: str
    version: str | None
    environment: str | None
    state: str | None
    step: str | None
    title: str
    reason: str
    occurred_at: str
    url: str

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Notification:
        return cls(**data)


@dataclass(frozen=True)
class ReleaseContext:
    """What the notifier remembers of a release from its status events, for alerts (which carry neither version
    nor environment) and for step-less (terminal) states."""

    service: str
    version: str | None
    environment: str | None


def step_environment(step: str | None, evidence: dict) -> str | None:
    """The environment a saga step acts on, from the coordinator's step names (`gate-staging`, `canary-10`,
    `compensate:production`, `migrate-staging`); an `environment` in the evidence wins."""
    named = evidence.get("environment")
    if isinstance(named, str) and named:
        return named
    if step is None:
        return None
    if ":" in step:
        return step.split(":", 1)[1]
    if step.startswith("migrate-"):
        return step.removeprefix("migrate-")
    if _STAGING_STEP.search(step):
        return "staging"
    if _PRODUCTION_STEP.search(step) or step in {"backup-point", "keep-blue-warm"}:
        return "production"
    return None


def furthest(known: str | None, seen: str | None) -> str | None:
    """The further of two environments a release has reached (production beyond staging); unknown names rank
    below both."""

    def rank(env: str | None) -> int:
        return ENVIRONMENT_ORDER.index(env) + 1 if env in ENVIRONMENT_ORDER else 0 if env else -1

    return seen if rank(seen) > rank(known) else known


def from_status(
    event_id: str, at: datetime, status: ReleaseStatusChanged, context: ReleaseContext | None, url: str
) -> Notification:
    """A status change; a step-less one (a release that ended) is about the furthest environment it reached."""
    env = step_environment(status.step, status.evidence) or (context.environment if context else None)
    if status.step is None and context is not None:
        env = furthest(context.environment, env)
    state = status.state
    return Notification(
        event_id=event_id,
        event_type=status.event_type,
        kind=state.value,
        severity=STATE_SEVERITY.get(state, Severity.INFO).value,
        release_id=status.release_id,
        service=status.service,
        version=status.version,
        environment=env,
        state=state.value,
        step=status.step,
        title=f"{status.service} {status.version}: {state.value.replace('_', ' ')}" + (f" in {env}" if env else ""),
        reason=status.reason,
        occurred_at=at.isoformat(),
        url=url,
    )


def from_alert(
    event_id: str, at: datetime, alert: AlertRaised, context: ReleaseContext | None, url: str
) -> Notification:
    return Notification(
        event_id=event_id,
        event_type=alert.event_type,
        kind=ALERT,
        severity=alert.severity.value,
        release_id=alert.release_id,
        service=alert.service,
        version=context.version if context else None,
        environment=context.environment if context else None,
        state=None,
        step=None,
        title=alert.title,
        reason=alert.detail,
        occurred_at=at.isoformat(),
        url=url,
    )


def context_after(context: ReleaseContext | None, status: ReleaseStatusChanged) -> ReleaseContext:
    """The release's context once this status is known: its version, and the furthest environment reached."""
    env = step_environment(status.step, status.evidence)
    return ReleaseContext(status.service, status.version, furthest(context.environment if context else None, env))


def matches(route: NotificationRoute, n: Notification) -> bool:
    """Every filter the route gives must match; an event of unknown environment matches only routes that do not
    filter on environments."""
    when = route.when
    if when.environments is not None and n.environment not in when.environments:
        return False
    if when.events is not None and n.kind not in when.events:
        return False
    return when.severities is None or n.severity in when.severities


def routes_for(routes: Iterable[NotificationRoute], n: Notification) -> list[NotificationRoute]:
    return [r for r in routes if matches(r, n)]


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts of one delivery: `max_attempts` in all; before attempt k+1, `initial`·2^(k-1) seconds capped at
    `cap`, shortened by a random fraction up to `jitter` so deliveries that failed together do not retry
    together."""

    max_attempts: int = 5
    initial: float = 2.0
    cap: float = 60.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or not 0 < self.initial <= self.cap or not 0 <= self.jitter <= 1:
            raise ValueError(f"invalid retry policy {self}")

    def delay_after(self, attempt: int, rand: Callable[[], float] = random.random) -> float | None:
        """Seconds before the next attempt after attempt number `attempt` (1-based) failed; None after the last."""
        if attempt >= self.max_attempts:
            return None
        return min(self.initial * 2.0 ** (attempt - 1), self.cap) * (1 - self.jitter * rand())
