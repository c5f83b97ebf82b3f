"""Rollback settings: the service acts in a cluster as its own ServiceAccount (`releasegate-rollback`: read and
re-weigh the HTTPRoute, delete a candidate's Deployment and Service; no create), never as the deployer's."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from releasegate_runtime.settings import TargetSettings


class RollbackSettings(TargetSettings):
    KUBECONFIG_SETTING: ClassVar[str] = "RG_ROLLBACK_KUBECONFIG"

    rollback_kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig of the rollback service's ServiceAccount (`releasegate-rollback`), for environments "
        "whose catalog target is `kubernetes` (RG_ROLLBACK_KUBECONFIG); unset inside a Pod, the Pod's own "
        "ServiceAccount; unset elsewhere, such compensations fail with the reason. RG_KUBECONFIG (the deployer's, "
        "which deploy/services.sh passes to every service) is never used by the rollback service.",
    )

    def kubeconfig_file(self) -> Path | None:
        return self.rollback_kubeconfig
