"""Rolling: instances replaced batch by batch, each batch verified; undoing it means the deployer starts stable
instances again (`redeploy-stable-production`)."""

from __future__ import annotations

from contracts.events import DeployAction
from releasegate_platform.catalog import ServiceEntry
from services.coordinator.compensation import named
from services.coordinator.model import Step
from services.coordinator.plans._steps import verify


def build(entry: ServiceEntry) -> list[Step]:
    size, total = entry.rollout.max_unavailable, entry.rollout.instances
    window = entry.verification.canary_window_seconds
    plan: list[Step] = []
    for batch in range(1, -(-total // size) + 1):
        plan += [
            Step(
                id=f"roll-{batch}",
                kind="deploy",
                environment="production",
                action=DeployAction.ROLL,
                weight=min(100, round(100 * batch * size / total)),
                compensation=named("redeploy-stable", "production"),
            ),
            verify(f"verify-roll-{batch}", window),
        ]
    return plan
