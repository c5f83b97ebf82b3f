"""Deployer process."""

from __future__ import annotations

from contracts import topics
from contracts.events import DeployRequested
from releasegate_platform.identity import refuse_demo_keys
from releasegate_runtime import grants, runner
from services.deployer import bootstrap
from services.deployer.config import DeployerSettings

NAME = "deployer"


async def setup(rt: runner.Runtime) -> None:
    settings = DeployerSettings().for_principal(NAME)
    coordinator_key = grants.load_grant_key(
        settings.coordinator_public_key_file or settings.secrets_dir / "keys" / "coordinator.pub.json"
    )
    deployer = bootstrap.deployer(settings, rt.pool, coordinator_key, rt.direct)
    rt.consumer.subscribe(topics.DEPLOY_COMMANDS, deployer.on_request, accept=(DeployRequested,))


def main() -> None:
    runner.main(NAME, setup, preflight=[refuse_demo_keys])
