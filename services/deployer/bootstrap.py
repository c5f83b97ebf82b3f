"""The deployer's composition root: the one place that builds real adapters (the deployment target of each
environment as the catalog names it, the launcher, the bundle store, migrations, step results, the trust root)
and injects them into the handler. `python -m services.deployer.bootstrap CANDIDATE_FILE` still runs the
reconcile script (`services.deployer.reconcile`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import asyncpg
import httpx
import structlog

from contracts.events import EnvironmentState
from releasegate_platform import supply_chain
from releasegate_platform.artifacts import ArtifactStore
from releasegate_platform.catalog import Catalog
from releasegate_platform.edge import VarnishEdge, catalog_edge
from releasegate_platform.haproxy import HAProxy, HAProxyError
from releasegate_platform.targets import directory
from releasegate_platform.targets.directory import TargetDirectory
from releasegate_platform.targets.local import LocalDeploymentTarget
from releasegate_platform.targets.port import TargetError
from releasegate_runtime import outbox, worker
from releasegate_runtime.admission import Admission
from services.deployer import read_model
from services.deployer.adapters.launcher import Launcher
from services.deployer.adapters.ports import DatabaseMigrations, StoreBundles
from services.deployer.adapters.stable_mirror import MirroredKubernetesTarget
from services.deployer.adapters.steps import PostgresStepResults
from services.deployer.config import DeployerSettings
from services.deployer.domain import DeployError
from services.deployer.edge import EdgeGuard
from services.deployer.handlers import CONSUMER, Deployer

log = structlog.get_logger()


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
    """The directory every service that acts on environments builds (`directory.target_directory`), with the
    deployer's launcher, and kubernetes adapters whose stable version is mirrored in its `environments` table."""
    haproxy = HAProxy(settings.haproxy_admin)
    starter = launcher(settings, pool, haproxy)
    mirrored = partial(MirroredKubernetesTarget, pool)
    return directory.target_directory(settings, pool, haproxy, start=starter.start, make=mirrored), starter


def publisher(pool: asyncpg.Pool, directory: TargetDirectory) -> Callable[[str, str], Awaitable[None]]:
    """Stages the environment's new state (`read_model`) in the deployer's outbox."""

    async def published(service: str, environment: str) -> None:
        # the step is done and recorded either way: a state that could not be staged is logged, and the next
        # change of the environment stages a complete one again
        try:
            target = directory(service, environment)
            state = await target.observe(service, environment)
            build = None
            if not isinstance(target, LocalDeploymentTarget):  # the API server, not our tables, knows what runs
                stable = await target.stable(service, environment)

                def build(sequence: int) -> EnvironmentState:
                    return read_model.observed(service, environment, state, stable, sequence)

            async with pool.acquire() as conn:
                await read_model.stage(conn, service, environment, state.weights, build)
        except (asyncpg.PostgresError, OSError, TargetError, HAProxyError) as exc:
            log.error("environment state not published", service=service, environment=environment, error=str(exc))

    return published


async def candidate_page(port: int, path: str, host: str) -> tuple[int, object]:
    """A page straight from a local instance (not through HAProxy or the edge): what the candidate itself serves."""
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            r = await client.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
            return r.status_code, r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise DeployError(f"edge check: the candidate on port {port} did not answer {path}: {exc}") from None


def edge_guard(settings: DeployerSettings) -> EdgeGuard:
    edge = VarnishEdge(settings.edge_url, settings.edge_admin, settings.edge_secret())
    return EdgeGuard(catalog_edge(Catalog(settings.catalog_dir)), edge, candidate_page)


def deployer(
    settings: DeployerSettings,
    pool: asyncpg.Pool,
    coordinator_key: object,
    direct: outbox.DirectPublisher | None = None,
) -> Deployer:
    """`direct`: publishes each step result straight after its commit (None: the outbox relay does)."""
    directory, starter = targets(settings, pool)
    trust_root_file: Path = settings.trust_root_file
    return Deployer(
        directory,
        StoreBundles(starter),
        DatabaseMigrations(settings.migration_database),
        PostgresStepResults(pool),
        lambda: supply_chain.TrustRoot.load(trust_root_file),
        Admission(pool, CONSUMER, coordinator_key),  # type: ignore[arg-type]
        lambda envelope, compute: worker.reply_once(pool, CONSUMER, envelope, compute, direct),
        publisher(pool, directory),
        edge_guard(settings),
    )


if __name__ == "__main__":
    from services.deployer.reconcile import main

    main()
