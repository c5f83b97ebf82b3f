"""Rollback process."""

from __future__ import annotations

from contracts import topics
from contracts.events import RollbackRequested
from releasegate_platform.identity import refuse_demo_keys
from releasegate_runtime import runner
from services.rollback import bootstrap
from services.rollback.config import RollbackSettings

NAME = "rollback"


async def setup(rt: runner.Runtime) -> None:
    rollback = bootstrap.build(rt, RollbackSettings().for_principal(NAME))
    rt.consumer.subscribe(topics.ROLLBACK_COMMANDS, bootstrap.subscriber(rt, rollback), accept=(RollbackRequested,))


def main() -> None:
    runner.main(NAME, setup, preflight=[refuse_demo_keys])
