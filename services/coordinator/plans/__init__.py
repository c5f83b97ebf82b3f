"""A release's plan: the steps common to every release around the production rollout, which the service's
strategy (one module each, named in `STRATEGIES`) lays out. Each step that changes something carries its named
compensation."""

from __future__ import annotations

from collections.abc import Callable

from contracts.events import DeployAction
from releasegate_platform.catalog import ServiceEntry
from services.coordinator.compensation import named
from services.coordinator.model import Step
from services.coordinator.plans import blue_green, canary, rolling, tenant_phased

PlanBuilder = Callable[[ServiceEntry], list[Step]]
STRATEGIES: dict[str, PlanBuilder] = {
    "canary": canary.build,
    "blue-green": blue_green.build,
    "rolling": rolling.build,
    "tenant-phased": tenant_phased.build,
}


class UnknownStrategy(ValueError):
    """The catalog names a rollout strategy no plan module builds."""


def build_plan(entry: ServiceEntry) -> list[Step]:
    builder = STRATEGIES.get(entry.rollout.strategy)
    if builder is None:
        raise UnknownStrategy(f"no plan for rollout strategy {entry.rollout.strategy!r}")
    return [*before_production(entry), *builder(entry), *finalize()]


def before_production(entry: ServiceEntry) -> list[Step]:
    """Gate, DR check, staging deploy and verification, production gate and the optional hold point."""
    plan = [Step(id="gate-staging", kind="gate", environment="staging")]
    if entry.dr.required:
        plan.append(Step(id="dr-check", kind="dr"))
    plan += [
        Step(
            id="deploy-staging",
            kind="deploy",
            environment="staging",
            action=DeployAction.START,
            weight=100,
            compensation=named("restore-traffic", "staging"),
        ),
        Step(
            id="verify-staging",
            kind="verify",
            environment="staging",
            window_seconds=entry.verification.staging_window_seconds,
        ),
        Step(id="gate-production", kind="gate", environment="production"),
    ]
    if entry.dr.hold_point:
        plan.append(Step(id="hold-production", kind="hold", environment="production"))
    return plan


def finalize() -> list[Step]:
    """The candidate becomes the stable version, production first; nothing to undo after that."""
    return [
        Step(
            id="finalize-production", kind="deploy", environment="production", action=DeployAction.FINALIZE, weight=100
        ),
        Step(id="finalize-staging", kind="deploy", environment="staging", action=DeployAction.FINALIZE, weight=100),
    ]
