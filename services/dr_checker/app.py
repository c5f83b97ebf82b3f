"""DR-checker process."""

from __future__ import annotations

from contracts import topics
from contracts.events import DRCheckRequested
from releasegate_platform.identity import refuse_demo_keys
from releasegate_runtime import runner
from services.dr_checker import bootstrap

NAME = "dr-checker"


async def setup(rt: runner.Runtime) -> None:
    checker = bootstrap.build(rt)
    rt.consumer.subscribe(topics.DR_COMMANDS, bootstrap.subscriber(rt, checker), accept=(DRCheckRequested,))


def main() -> None:
    runner.main(NAME, setup, preflight=[refuse_demo_keys])
