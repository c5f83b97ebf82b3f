"""Canary: optionally a preview and the internal tenants first, then growing shares of traffic, each verified."""

from __future__ import annotations

from contracts.events import DeployAction
from releasegate_platform.catalog import ServiceEntry
from services.coordinator.model import Step
from services.coordinator.plans._steps import preview, shift, verify


def build(entry: ServiceEntry) -> list[Step]:
    window = entry.verification.canary_window_seconds
    plan: list[Step] = []
    if entry.synthetic is not None or entry.rollout.internal_tenants:
        plan.append(shift("canary-start", DeployAction.START, 0))
    if entry.synthetic is not None:
        plan.append(preview())
    if entry.rollout.internal_tenants:
        internal = list(entry.rollout.internal_tenants)
        plan += [
            shift("canary-internal", DeployAction.ROUTE, 0, tenants=internal),
            verify("verify-canary-internal", window, tenants=internal),
        ]
    for weight in entry.rollout.canary_steps:
        started = any(st.kind == "deploy" for st in plan)
        plan += [
            shift(f"canary-{weight}", DeployAction.SHIFT if started else DeployAction.START, weight),
            verify(f"verify-canary-{weight}", window),
        ]
    return plan
