"""The saga's state as stored: its plan of steps (each with its named compensation), the compensations under
way, the configuration it started with and what it has learnt so far. `SCHEMA_VERSION` is stored with it;
`upcast` reads older bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from contracts.events import (
    SYNTHETIC_TIMEOUT_SECONDS,
    BackupPoint,
    DeployAction,
    FollowupKind,
    FollowupSeverity,
    ReleaseState,
    SignedApproval,
)
from releasegate_platform.catalog import OperatorGroups
from services.coordinator.config import SagaConfig

SCHEMA_VERSION = 2
StepKind = Literal["gate", "dr", "deploy", "verify", "wait", "hold"]


class Step(BaseModel):
    id: str
    kind: StepKind
    environment: str | None = None
    action: DeployAction | None = None
    weight: int | None = None
    window_seconds: float | None = None
    compensation: str | None = Field(
        default=None,
        description="Name of the compensation that undoes this step (`compensation.REGISTRY`), given when the "
        "plan is built, e.g. `restore-traffic-production`; none for steps that change nothing to undo.",
    )
    synthetic: bool = False
    tenants: list[str] | None = None
    dr_action: Literal["readiness", "backup-point"] = "readiness"


class Compensation(BaseModel):
    """A compensation under way: one per environment, the strongest of its completed steps' compensations."""

    id: str = Field(description="Step id of its command and result: `compensate:<environment>`.")
    environment: str
    name: str = Field(default="", description="The registered compensation run, e.g. `restore-data-production`.")
    undoes: list[str] = Field(default_factory=list, description="Steps it undoes, latest first.")
    status: Literal["pending", "requested", "done", "failed"] = "pending"
    kind: Literal["restore_traffic", "restore_data"] = "restore_traffic"
    redeploy: bool = Field(
        default=False,
        description="Stable instances must be started again (rolling): done "
        "by the deployer, which alone may start versions; else the rollback service",
    )


class VerdictRecord(BaseModel):
    verdict: str
    reason: str
    needs_seconds: float | None = Field(
        default=None, description="Inconclusive for want of evidence: the window its KPIs say they need."
    )


class StagingVerdict(BaseModel):
    step: str = Field(description="The staging verification step that passed.")
    reason: str
    verified_at: datetime | None = Field(default=None, description="When it passed; unknown in v1 bodies.")


class Followup(BaseModel):
    """A follow-up action of an incident: added and closed by signed operator commands."""

    id: int = Field(description="Its number within the incident: 1, 2, ...")
    kind: FollowupKind
    severity: FollowupSeverity
    owner: str
    title: str
    status: Literal["open", "closed"] = "open"
    added_by: str
    added_at: datetime
    reason: str = Field(default="", description="Why it was added, in the operator's words.")
    closed_by: str | None = None
    closed_at: datetime | None = None
    close_reason: str | None = None


class Incident(BaseModel):
    """What a rolled-back release taught: opened with the release's terminal state (one per release, its id the
    release's), then its follow-ups are tracked to closure. `findings`: the failing step, environment and weight,
    the verifier that caught it, the failing KPIs with candidate and stable figures, the segment (tenants), the
    migrations involved (`incidents.findings`)."""

    opened_at: datetime
    outcome: ReleaseState
    summary: str
    findings: dict[str, Any] = Field(default_factory=dict)
    followups: list[Followup] = Field(default_factory=list)


class Saga(BaseModel):
    schema_version: int = Field(default=SCHEMA_VERSION, description="Shape of the stored body (`upcast`).")
    release_id: str
    service: str
    version: str
    digest: str
    candidate: dict[str, Any]
    state: ReleaseState = ReleaseState.RUNNING
    plan: list[Step]
    cursor: int = 0
    waiting_for: str | None = Field(default=None, description="Step or compensation id a result is awaited for.")
    deployed_environments: list[str] = []
    stable: dict[str, str] = Field(default_factory=dict, description="Stable version per environment.")
    compensations: list[Compensation] = []
    end_state: ReleaseState | None = Field(default=None, description="Terminal state once compensations finish.")
    config: SagaConfig | None = Field(default=None, description="The catalog's rules as the release started.")
    verdicts: dict[str, dict[str, VerdictRecord]] = Field(
        default_factory=dict, description="Verdicts per verification step and verifier."
    )
    extended: list[str] = Field(default_factory=list, description="Steps whose window was extended once.")
    failure_reason: str | None = Field(default=None, description="Why the release is being compensated.")
    dr_report: list[dict[str, Any]] | None = Field(default=None, description="Checks of the DR readiness step.")
    staging_verdict: StagingVerdict | None = Field(default=None, description="The staging verification passed.")
    trace: dict[str, str] = {}
    promote_full: bool = Field(default=False, description="An operator asked to skip the remaining canary.")
    approvals: list[SignedApproval] = Field(
        default_factory=list, description="Signed approvals given so far; the gatekeeper decides which count."
    )
    migrations: list[dict[str, Any]] = Field(default_factory=list, description="New migrations (gate's analysis).")
    migrated: list[str] = Field(default_factory=list, description="Environments whose database got them.")
    backup_point: dict[str, Any] | None = Field(default=None, description="Pre-release backup of production.")
    backup: BackupPoint | None = Field(
        default=None, description="The pre-release backup point as the dr-checker reported it; a data restore names it."
    )
    operators: OperatorGroups | None = Field(
        default=None,
        description="Groups that may give each operator command, from the catalog entry the release started with.",
    )
    finding: dict[str, Any] | None = Field(
        default=None, description="What failed, recorded when the release started to roll back (`incidents`)."
    )
    incident: Incident | None = Field(default=None, description="Opened when the release ended rolled back.")

    @property
    def current(self) -> Step | None:
        return self.plan[self.cursor] if self.cursor < len(self.plan) else None

    @property
    def rules(self) -> SagaConfig:
        """The configuration; only a release rejected before it had one lacks it, and it never runs a step."""
        if self.config is None:
            raise ValueError(f"release {self.release_id} has no configuration (rejected at submission)")
        return self.config


STEP_TIMEOUTS = {"gate": 60.0, "dr": 120.0, "deploy": 120.0, "rollback": 120.0, "synthetic": SYNTHETIC_TIMEOUT_SECONDS}
