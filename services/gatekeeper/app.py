"""Gatekeeper process."""

from __future__ import annotations

from contracts import topics
from contracts.events import GateCheckRequested
from releasegate_platform.identity import refuse_demo_keys
from releasegate_runtime import runner
from services.gatekeeper.handlers import Gatekeeper

NAME = "gatekeeper"


async def setup(rt: runner.Runtime) -> None:
    gatekeeper = Gatekeeper(rt.pool, rt.settings)
    rt.consumer.subscribe(topics.GATE_COMMANDS, gatekeeper.on_request, accept=(GateCheckRequested,))


def main() -> None:
    runner.main(NAME, setup, preflight=[refuse_demo_keys])
