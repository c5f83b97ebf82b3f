"""Rollback process."""

from __future__ import annotations

from contracts import topics
from contracts.events import RollbackRequested
from releasegate_platform.identity import refuse_demo_keys
from releasegate_runtime import runner
from releasegate_runtime.settings import TargetSettings
from services.rollback import bootstrap

NAME = "rollback"


async def setup(rt: runner.Runtime) -> None:
    rollback = bootstrap.build(rt, TargetSettings().for_principal(NAME))
    rt.consumer.subscribe(topics.ROLLBACK_COMMANDS, bootstrap.subscriber(rt, rollback), accept=(RollbackRequested,))


def main() -> None:
    runner.main(NAME, setup, preflight=[refuse_demo_keys])
