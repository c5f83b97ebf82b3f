"""Tenant-phased: the candidate started unseen, optionally previewed, then routed to waves of tenants (each wave
verified on its own tenants), then to everyone."""

from __future__ import annotations

from contracts.events import DeployAction
from releasegate_platform.catalog import ServiceEntry
from services.coordinator.model import Step
from services.coordinator.plans._steps import preview, shift, verify


def build(entry: ServiceEntry) -> list[Step]:
    window = entry.verification.canary_window_seconds
    plan = [shift("wave-start", DeployAction.START, 0)]
    if entry.synthetic is not None:
        plan.append(preview())
    moved: list[str] = []
    for wave in entry.rollout.waves:
        moved += wave.tenants
        plan += [
            shift(f"wave-{wave.name}", DeployAction.ROUTE, 0, tenants=list(moved)),
            verify(f"verify-wave-{wave.name}", window, tenants=list(wave.tenants)),
        ]
    plan += [shift("wave-everyone", DeployAction.SHIFT, 100), verify("verify-wave-everyone", window)]
    return plan
