"""DR-checker process."""
from __future__ import annotations

from contracts import topics
from contracts.events import DRCheckRequested
from services.common import runner
from services.dr_checker.handlers import DRChecker

NAME = "dr-checker"


async def setup(rt: runner.Runtime) -> None:
    rt.consumer.subscribe(topics.DR_COMMANDS, DRChecker(rt.pool, rt.settings).on_request,
                         accept=(DRCheckRequested,))


def main() -> None:
    runner.main(NAME, setup)
