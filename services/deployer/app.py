"""Deployer process."""

from __future__ import annotations

from contracts import topics
from contracts.events import DeployRequested
from releasegate_platform.artifacts import ArtifactStore
from releasegate_platform.haproxy import HAProxy
from releasegate_platform.identity import refuse_demo_keys
from releasegate_platform.local_target import LocalTarget
from releasegate_runtime import grants, runner
from releasegate_runtime.admission import Admission
from services.deployer.adapters.launcher import Launcher
from services.deployer.config import DeployerSettings
from services.deployer.handlers import CONSUMER, Deployer

NAME = "deployer"


async def setup(rt: runner.Runtime) -> None:
    settings = DeployerSettings().for_principal(NAME)
    haproxy = HAProxy(settings.haproxy_admin)
    launcher = Launcher(
        rt.pool,
        haproxy,
        ArtifactStore(settings.artifact_store),
        settings.run_dir,
        settings.shop_env,
        user=settings.candidate_user,
        path=settings.candidate_path,
    )
    coordinator_key = grants.load_grant_key(
        settings.coordinator_public_key_file or settings.secrets_dir / "keys" / "coordinator.pub.json"
    )
    deployer = Deployer(
        rt.pool,
        LocalTarget(rt.pool, haproxy, settings.run_dir),
        launcher,
        settings.trust_root_file,
        settings.migration_database,
        Admission(rt.pool, CONSUMER, coordinator_key),
    )
    rt.consumer.subscribe(topics.DEPLOY_COMMANDS, deployer.on_request, accept=(DeployRequested,))


def main() -> None:
    runner.main(NAME, setup, preflight=[refuse_demo_keys])
