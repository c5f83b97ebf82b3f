"""Which deployment target serves each (service, environment): the one its catalog entry names (`local` unless it
says `kubernetes`). Shared by every service that acts on environments (the deployer, the rollback service), so
both reach the same adapter for the same environment; kubernetes clients are built on first use from the
kubeconfig of releasegate's ServiceAccount."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from releasegate_platform.catalog import Catalog, CatalogError, TargetSpec
from releasegate_platform.targets.kubernetes import KubernetesTarget, placement_for
from releasegate_platform.targets.port import DeploymentTarget, TargetError

Build = Callable[[str, TargetSpec], DeploymentTarget]


class TargetDirectory:
    def __init__(self, catalog: Catalog, local: DeploymentTarget, kubernetes: Build) -> None:
        """`kubernetes(environment, spec)`: a kubernetes adapter for that environment (see `kubernetes_targets`)."""
        self._catalog, self._local, self._kubernetes = catalog, local, kubernetes
        self._built: dict[tuple[str, str, str], DeploymentTarget] = {}

    def __call__(self, service: str, environment: str) -> DeploymentTarget:
        try:
            spec = self._catalog.get(service).target(environment)
        except CatalogError as exc:
            raise TargetError(str(exc)) from None
        if spec.kind == "local":
            return self._local
        key = (service, environment, spec.model_dump_json())
        if key not in self._built:
            self._built[key] = self._kubernetes(environment, spec)
        return self._built[key]


def kubernetes_targets(
    kubeconfig: Path | None, rollout_timeout: float = 120.0, make: Callable[..., Any] = KubernetesTarget
) -> Build:
    """Builds kubernetes adapters placed by the catalog, all on one API client from `kubeconfig` (RG_KUBECONFIG);
    `make(api, placement, rollout_timeout=...)` is the adapter class (a subclass adds what a service needs)."""
    api: list[k8s_client.ApiClient] = []

    def build(environment: str, spec: TargetSpec) -> DeploymentTarget:
        if kubeconfig is None:
            raise TargetError(f"{environment} deploys to kubernetes but RG_KUBECONFIG names no kubeconfig")
        if not api:
            try:
                api.append(k8s_config.new_client_from_config(config_file=str(kubeconfig)))
            except (k8s_config.ConfigException, OSError) as exc:
                raise TargetError(f"kubeconfig {kubeconfig} unusable: {exc}") from None
        placement = placement_for(spec, environment)
        return make(api[0], lambda _service, _environment: placement, rollout_timeout=rollout_timeout)

    return build
