"""Which deployment target serves each (service, environment): the one its catalog entry names (`local` unless it
says `kubernetes`). Shared by every service that acts on environments (the deployer, the rollback service), so
both reach the same adapter for the same environment (`target_directory` builds it for either); kubernetes
clients are built on first use, each service as its own ServiceAccount: from its kubeconfig (the deployer's
RG_KUBECONFIG, the rollback service's RG_ROLLBACK_KUBECONFIG: `TargetSettings.kubeconfig_file`), or, inside a Pod
without one, from the Pod's own mounted token (in-cluster configuration)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import asyncpg
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from releasegate_platform.catalog import Catalog, CatalogError, TargetSpec
from releasegate_platform.haproxy import HAProxy
from releasegate_platform.local_target import LocalTarget
from releasegate_platform.targets.kubernetes import KubernetesTarget, placement_for
from releasegate_platform.targets.local import LocalDeploymentTarget, Start
from releasegate_platform.targets.port import DeploymentTarget, TargetError
from releasegate_runtime.settings import TargetSettings

Build = Callable[[str, TargetSpec], DeploymentTarget]
IN_A_POD = "KUBERNETES_SERVICE_HOST"  # set by the kubelet in every container (kubernetes.config.incluster_config)


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


def target_directory(
    settings: TargetSettings,
    pool: asyncpg.Pool,
    haproxy: HAProxy,
    *,
    start: Start | None = None,
    make: Callable[..., Any] = KubernetesTarget,
) -> TargetDirectory:
    """The directory as a service that acts on environments builds it from its settings: the catalog, the local
    target (HAProxy, the `instances` table; `start` launches an instance, None for a service that never starts
    one), kubernetes adapters made by `make` (see `kubernetes_targets`)."""
    local = LocalDeploymentTarget(LocalTarget(pool, haproxy, settings.run_dir), start)
    return TargetDirectory(
        Catalog(settings.catalog_dir),
        local,
        kubernetes_targets(
            settings.kubeconfig_file(), settings.rollout_timeout_seconds, make, setting=settings.KUBECONFIG_SETTING
        ),
    )


def in_cluster_client() -> k8s_client.ApiClient:
    """A client as the Pod's ServiceAccount: its mounted token (re-read as the kubelet rotates it) and CA."""
    configuration = k8s_client.Configuration()
    k8s_config.load_incluster_config(client_configuration=configuration)
    return k8s_client.ApiClient(configuration)


def api_client(
    kubeconfig: Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    in_cluster: Callable[[], k8s_client.ApiClient] = in_cluster_client,
    setting: str = "RG_KUBECONFIG",
) -> k8s_client.ApiClient:
    """The API client of the service's ServiceAccount: from `kubeconfig` when one is named; else, inside a Pod,
    from in-cluster configuration; else TargetError naming the setting (`setting`, the variable that names the
    kubeconfig)."""
    try:
        if kubeconfig is not None:
            return k8s_config.new_client_from_config(config_file=str(kubeconfig))
        if (os.environ if environ is None else environ).get(IN_A_POD):
            return in_cluster()
    except (k8s_config.ConfigException, OSError) as exc:
        where = f"kubeconfig {kubeconfig}" if kubeconfig is not None else "in-cluster configuration"
        raise TargetError(f"{where} unusable: {exc}") from None
    raise TargetError(f"{setting} names no kubeconfig and this process runs in no Pod ({IN_A_POD} unset)")


def kubernetes_targets(
    kubeconfig: Path | None,
    rollout_timeout: float = 120.0,
    make: Callable[..., Any] = KubernetesTarget,
    connect: Callable[..., k8s_client.ApiClient] = api_client,
    *,
    setting: str = "RG_KUBECONFIG",
) -> Build:
    """Builds kubernetes adapters placed by the catalog, all on one API client (`connect(kubeconfig,
    setting=setting)`, see `api_client`; `setting` names the variable a refusal names); `make(api, placement,
    rollout_timeout=...)` is the adapter class (a subclass adds what a service needs)."""
    api: list[k8s_client.ApiClient] = []

    def build(environment: str, spec: TargetSpec) -> DeploymentTarget:
        if not api:
            try:
                api.append(connect(kubeconfig, setting=setting))
            except TargetError as exc:
                raise TargetError(f"{environment} deploys to kubernetes but {exc}") from None
        placement = placement_for(spec, environment)
        return make(api[0], lambda _service, _environment: placement, rollout_timeout=rollout_timeout)

    return build
