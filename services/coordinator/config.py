"""The saga's configuration: what the catalog said about the service when its release started, typed. It is
copied into the saga so a release finishes under the rules it started with, whatever the catalog says later."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.events import KpiThreshold, PromQuery, SyntheticJourneys
from releasegate_platform.catalog import DRRequirement, ServiceEntry, VerifierSet


class SagaConfig(BaseModel):
    """One field per rule the saga applies; built once from the catalog entry by `from_entry`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    catalog_revision: int | None = Field(default=None, description="Revision of the catalog entry used.")
    min_samples: int = Field(description="Fewest samples a verdict may rest on.")
    grace_seconds: float = Field(description="How long after a window the saga waits for verdicts.")
    on_inconclusive: Literal["pause", "rollback", "extend"] = Field(description="What an inconclusive step does.")
    false_rollback_bound: float = Field(default=0.05, description="Bound on rolling back a good version.")
    max_window_seconds: float | None = Field(
        default=None, description="Longest window an `extend` may reach when the evidence says how long it needs."
    )
    evidence_weight_max: int | None = Field(
        default=None, description="Highest canary weight an `extend` may raise a step to, to gather its evidence."
    )
    instances: int = Field(default=1, description="Instances per version in each environment.")
    batch_size: int = Field(default=1, description="rolling: instances replaced per batch.")
    rolled: bool = Field(default=False, description="The rollout replaces instances in batches (rolling).")
    synthetic: SyntheticJourneys | None = Field(default=None, description="Scripted journeys of previews.")
    prometheus: dict[str, PromQuery] = Field(default_factory=dict, description="PromQL KPIs with guardrails.")
    thresholds: dict[str, KpiThreshold] = Field(default_factory=dict, description="Business KPI thresholds.")
    dr: DRRequirement = Field(default_factory=DRRequirement, description="Disaster-recovery requirements.")
    approver_group: str = Field(default="approvers", description="Group whose members approve risky changes.")
    verifiers: dict[str, VerifierSet] = Field(
        default_factory=dict, description="Required and advisory verifiers per environment."
    )

    @classmethod
    def from_entry(cls, entry: ServiceEntry) -> SagaConfig:
        return cls(
            catalog_revision=entry.revision,
            min_samples=entry.verification.min_samples,
            grace_seconds=entry.verification.grace_seconds,
            on_inconclusive=entry.verification.on_inconclusive,
            false_rollback_bound=entry.verification.false_rollback_bound,
            max_window_seconds=entry.verification.max_window_seconds,
            evidence_weight_max=entry.verification.evidence_weight_max,
            instances=entry.rollout.instances,
            batch_size=entry.rollout.max_unavailable,
            rolled=entry.rollout.strategy == "rolling",
            synthetic=entry.synthetic,
            prometheus=dict(entry.prometheus),
            thresholds=dict(entry.kpis),
            dr=entry.dr,
            approver_group=entry.approvers.group,
            verifiers={env: entry.verification.verifiers(env) for env in entry.environments},
        )
