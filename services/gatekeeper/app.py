"""Gatekeeper process."""
from __future__ import annotations

from contracts import topics
from contracts.events import GateCheckRequested
from services.common import runner
from services.gatekeeper.handlers import Gatekeeper

NAME = "gatekeeper"


async def setup(rt: runner.Runtime) -> None:
    gatekeeper = Gatekeeper(rt.pool, rt.settings)
    rt.consumer.subscribe(topics.GATE_COMMANDS, gatekeeper.on_request, accept=(GateCheckRequested,))


def main() -> None:
    runner.main(NAME, setup)
