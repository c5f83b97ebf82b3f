"""Blue-green: green started beside blue, previewed, all traffic switched and verified, blue kept warm a while."""

from __future__ import annotations

from contracts.events import DeployAction
from releasegate_platform.catalog import ServiceEntry
from services.coordinator.model import Step
from services.coordinator.plans._steps import preview, shift, verify


def build(entry: ServiceEntry) -> list[Step]:
    return [
        shift("green-start", DeployAction.START, 0),
        preview(),
        shift("switch", DeployAction.SHIFT, 100),
        verify("verify-switched", entry.verification.canary_window_seconds),
        Step(id="keep-blue-warm", kind="wait", window_seconds=entry.rollout.keep_blue_warm_seconds),
    ]
