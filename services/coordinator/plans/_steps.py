"""Production steps the strategies share."""

from __future__ import annotations

from contracts.events import DeployAction
from services.coordinator.compensation import named
from services.coordinator.model import Step

RESTORE_TRAFFIC = named("restore-traffic", "production")


def shift(step_id: str, action: DeployAction, weight: int, tenants: list[str] | None = None) -> Step:
    """A production deploy step whose undoing is traffic back to the stable version."""
    return Step(
        id=step_id,
        kind="deploy",
        environment="production",
        action=action,
        weight=weight,
        tenants=tenants,
        compensation=RESTORE_TRAFFIC,
    )


def verify(step_id: str, window: float, tenants: list[str] | None = None) -> Step:
    return Step(id=step_id, kind="verify", environment="production", window_seconds=window, tenants=tenants)


def preview() -> Step:
    """Scripted journeys against the started candidate before any customer reaches it."""
    return Step(id="verify-preview", kind="verify", environment="production", synthetic=True)
