"""DR-checker process."""

from __future__ import annotations

from functools import partial

from contracts import topics
from contracts.events import DRCheckRequested
from releasegate_platform.identity import refuse_demo_keys
from releasegate_runtime import runner
from services.dr_checker.handlers import DRChecker
from services.dr_checker.retention import topic_retention

NAME = "dr-checker"


async def setup(rt: runner.Runtime) -> None:
    checker = DRChecker(rt.pool, rt.settings, partial(topic_retention, rt.settings))
    rt.consumer.subscribe(topics.DR_COMMANDS, checker.on_request, accept=(DRCheckRequested,))


def main() -> None:
    runner.main(NAME, setup, preflight=[refuse_demo_keys])
