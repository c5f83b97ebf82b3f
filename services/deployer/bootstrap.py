"""The deployer's composition root: the one place that builds real adapters (the deployment target of each
environment as the catalog names it, the launcher, the bundle store, migrations, step results, the trust root)
and injects them into the handler. `python -m services.deployer.bootstrap CANDIDATE_FILE` still runs the
reconcile script (`services.deployer.reconcile`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import structlog
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from releasegate_platform import supply_chain
from releasegate_platform.artifacts import ArtifactStore
from releasegate_platform.catalog import Catalog, CatalogError, TargetSpec
from releasegate_platform.haproxy import HAProxy, HAProxyError
from releasegate_platform.local_target import LocalTarget
from releasegate_platform.targets.kubernetes import placement_for
from releasegate_platform.targets.local import LocalDeploymentTarget
from releasegate_platform.targets.port import DeploymentTarget, TargetError
from releasegate_runtime import worker
from releasegate_runtime.admission import Admission
from services.deployer import read_model
from services.deployer.adapters.launcher import Launcher
from services.deployer.adapters.ports import DatabaseMigrations, StoreBundles
from services.deployer.adapters.stable_mirror import MirroredKubernetesTarget
from services.deployer.adapters.steps import PostgresStepResults
from services.deployer.config import DeployerSettings
from services.deployer.domain import DeployError
from services.deployer.handlers import CONSUMER, Deployer

log = structlog.get_logger()


class TargetDirectory:
    """The deployment target of each (service, environment), as the catalog names it (`local` unless it says
    `kubernetes`); kubernetes clients are built on first use, from RG_KUBECONFIG."""

    def __init__(
        self, catalog: Catalog, local: DeploymentTarget, kubernetes: Callable[[str, TargetSpec], DeploymentTarget]
    ) -> None:
        self._catalog, self._local, self._kubernetes = catalog, local, kubernetes
        self._built: dict[tuple[str, str, str], DeploymentTarget] = {}

    def __call__(self, service: str, environment: str) -> DeploymentTarget:
        try:
            spec = self._catalog.get(service).target(environment)
        except CatalogError as exc:
            raise DeployError(str(exc)) from None
        if spec.kind == "local":
            return self._local
        key = (service, environment, spec.model_dump_json())
        if key not in self._built:
            self._built[key] = self._kubernetes(environment, spec)
        return self._built[key]


def kubernetes_targets(settings: DeployerSettings, pool: asyncpg.Pool) -> Callable[[str, TargetSpec], DeploymentTarget]:
    api: list[k8s_client.ApiClient] = []

    def build(environment: str, spec: TargetSpec) -> DeploymentTarget:
        if settings.kubeconfig is None:
            raise DeployError(
                f"{environment} deploys to kubernetes but RG_KUBECONFIG names no kubeconfig for releasegate"
            )
        if not api:
            try:
                api.append(k8s_config.new_client_from_config(config_file=str(settings.kubeconfig)))
            except (k8s_config.ConfigException, OSError) as exc:
                raise DeployError(f"kubeconfig {settings.kubeconfig} unusable: {exc}") from None
        placement = placement_for(spec, environment)
        return MirroredKubernetesTarget(
            pool, api[0], lambda _s, _e: placement, rollout_timeout=settings.rollout_timeout_seconds
        )

    return build


def launcher(settings: DeployerSettings, pool: asyncpg.Pool, haproxy: HAProxy) -> Launcher:
    return Launcher(
        pool,
        haproxy,
        ArtifactStore(settings.artifact_store),
        settings.run_dir,
        settings.shop_env,
        user=settings.candidate_user,
        path=settings.candidate_path,
    )


def targets(settings: DeployerSettings, pool: asyncpg.Pool) -> tuple[TargetDirectory, Launcher]:
    haproxy = HAProxy(settings.haproxy_admin)
    starter = launcher(settings, pool, haproxy)
    local = LocalDeploymentTarget(LocalTarget(pool, haproxy, settings.run_dir), starter.start)
    return TargetDirectory(Catalog(settings.catalog_dir), local, kubernetes_targets(settings, pool)), starter


def publisher(pool: asyncpg.Pool, directory: TargetDirectory) -> Callable[[str, str], Awaitable[None]]:
    """Stages the environment's new state (`read_model`) in the deployer's outbox."""

    async def published(service: str, environment: str) -> None:
        # the step is done and recorded either way: a state that could not be staged is logged, and the next
        # change of the environment stages a complete one again
        try:
            weights = (await directory(service, environment).observe(service, environment)).weights
            async with pool.acquire() as conn:
                await read_model.stage(conn, service, environment, weights)
        except (asyncpg.PostgresError, OSError, TargetError, HAProxyError) as exc:
            log.error("environment state not published", service=service, environment=environment, error=str(exc))

    return published


def deployer(settings: DeployerSettings, pool: asyncpg.Pool, coordinator_key: object) -> Deployer:
    directory, starter = targets(settings, pool)
    trust_root_file: Path = settings.trust_root_file
    return Deployer(
        directory,
        StoreBundles(starter),
        DatabaseMigrations(settings.migration_database),
        PostgresStepResults(pool),
        lambda: supply_chain.TrustRoot.load(trust_root_file),
        Admission(pool, CONSUMER, coordinator_key),  # type: ignore[arg-type]
        lambda envelope, compute: worker.reply_once(pool, CONSUMER, envelope, compute),
        publisher(pool, directory),
    )


if __name__ == "__main__":
    from services.deployer.reconcile import main

    main()
