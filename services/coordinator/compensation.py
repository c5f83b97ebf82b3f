"""Named compensations (Temporal style): each step that changes something carries, from the moment the plan is
built, the name of the compensation that undoes it; when a release fails, the compensations of its completed
steps (and of the step in flight) run in reverse order, one per environment. Pure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from contracts import topics
from contracts.events import Contract, DeployAction, DeployRequested, RollbackRequested
from services.coordinator.model import STEP_TIMEOUTS, Compensation, Saga, Step

Kind = Literal["restore-traffic", "restore-data", "redeploy-stable"]


@dataclass(frozen=True)
class Command:
    """What running a compensation sends, what the timeline says about it, and how long it may take."""

    topic: str
    command: Contract
    note: str
    evidence: dict[str, Any] | None
    timeout_seconds: float


@dataclass(frozen=True)
class Registered:
    kind: Kind
    strength: int  # within one environment the strongest compensation undoes the others' effects too
    build: Callable[[Saga, Compensation], Command]


def named(kind: Kind, environment: str) -> str:
    """The compensation's name as a step carries it, e.g. `restore-traffic-production`."""
    return f"{kind}-{environment}"


def _restore_traffic(s: Saga, comp: Compensation) -> Command:
    return Command(
        topics.ROLLBACK_COMMANDS,
        RollbackRequested(
            release_id=s.release_id,
            step_id=comp.id,
            compensation="restore_traffic",
            service=s.service,
            environment=comp.environment,
            candidate_version=s.version,
        ),
        f"compensation {comp.id} requested: traffic back to stable in {comp.environment}",
        None,
        STEP_TIMEOUTS["rollback"],
    )


def _restore_data(s: Saga, comp: Compensation) -> Command:
    point = s.backup_point or {}
    backup = s.backup
    return Command(
        topics.ROLLBACK_COMMANDS,
        RollbackRequested(
            release_id=s.release_id,
            step_id=comp.id,
            compensation="restore_data",
            service=s.service,
            environment=comp.environment,
            candidate_version=s.version,
            backup_id=backup.backup_id if backup else point.get("backup_id"),
            since=backup.taken_at if backup else point.get("taken_at"),
            backup_point=backup,
        ),
        f"compensation {comp.id} requested: writes stopped, {comp.environment} database restored to backup "
        f"point {point.get('backup_id')}, orders since replayed, integrity checked, traffic back to stable",
        {"backup_point": point},
        STEP_TIMEOUTS["rollback"] * 3,
    )


def _redeploy_stable(s: Saga, comp: Compensation) -> Command:
    return Command(
        topics.DEPLOY_COMMANDS,
        DeployRequested(
            release_id=s.release_id,
            step_id=comp.id,
            service=s.service,
            version=s.version,
            digest=s.digest,
            environment=comp.environment,
            action=DeployAction.RESTORE,
            weight=0,
            instances=s.rules.instances,
            batch_size=s.rules.batch_size,
        ),
        f"compensation {comp.id} requested: the deployer replaces {s.version} instances with stable ones, "
        f"batch by batch, in {comp.environment}",
        None,
        STEP_TIMEOUTS["rollback"] * 3,
    )


REGISTRY: dict[Kind, Registered] = {
    "restore-traffic": Registered("restore-traffic", 1, _restore_traffic),
    "restore-data": Registered("restore-data", 2, _restore_data),
    "redeploy-stable": Registered("redeploy-stable", 3, _redeploy_stable),
}


class UnknownCompensation(ValueError):
    """A step names a compensation nobody registered."""


def registered(name: str) -> Registered:
    for kind, entry in REGISTRY.items():
        if name.startswith(f"{kind}-"):
            return entry
    raise UnknownCompensation(f"no compensation is registered under {name!r}")


def destructive(migrations: list[dict[str, Any]]) -> bool:
    """Migrations the stable version cannot run against: a data rewrite or a contract (drop) migration."""
    return any(m.get("rewrites_data") or m.get("kind") == "contract" for m in migrations)


def for_migration(environment: str, migrations: list[dict[str, Any]]) -> str:
    """A migration step's compensation: production data back to the backup point when the migrations rewrite or
    drop something; otherwise the schema stays (the stable version works with it) and traffic goes back."""
    if environment == "production" and destructive(migrations):
        return named("restore-data", environment)
    return named("restore-traffic", environment)


def to_run(s: Saga) -> list[Compensation]:
    """The compensations a failure runs now: those of the completed steps and of the step in flight, latest step
    first, one per environment (its strongest). A data restore needs the backup point; without one it is a
    traffic restore."""
    steps: list[Step] = list(s.plan[: s.cursor])
    current = s.current
    if current is not None and s.waiting_for == current.id:
        steps.append(current)
    chosen: dict[str, Compensation] = {}
    for step in reversed(steps):
        if step.compensation is None or step.environment is None:
            continue
        entry = registered(step.compensation)
        if entry.kind == "restore-data" and not s.backup_point:
            entry = REGISTRY["restore-traffic"]
        comp = chosen.get(step.environment)
        if comp is None:
            comp = chosen[step.environment] = Compensation(
                id=f"compensate:{step.environment}", environment=step.environment
            )
        comp.undoes.append(step.id)
        if not comp.name or registered(comp.name).strength < entry.strength:
            comp.name = named(entry.kind, step.environment)
            comp.kind = "restore_data" if entry.kind == "restore-data" else "restore_traffic"
            comp.redeploy = entry.kind == "redeploy-stable"
    return list(chosen.values())


def run(s: Saga, comp: Compensation) -> Command:
    """The command that runs `comp` (its registered builder)."""
    return registered(comp.name).build(s, comp)
