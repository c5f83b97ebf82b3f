"""Coordinator process: consumes candidates, results and operator control; fires persisted deadlines."""
from __future__ import annotations

import asyncio

from contracts import topics
from contracts.events import (
    AbortRequested, ApprovalGiven, CandidateSubmitted, DeployFinished, DRCheckFinished, GateCheckFinished,
    PauseRequested, PromoteRequested, ResumeRequested, RollbackFinished, VerificationFinished, VerifierHeartbeat,
)
from services.common import runner
from services.common.catalog import Catalog
from services.coordinator.handlers import Coordinator
from services.coordinator.registry import Registry

NAME = "coordinator"
DEADLINE_TICK_SECONDS = 0.5


async def setup(rt: runner.Runtime) -> None:
    coordinator = Coordinator(rt.pool, Catalog(rt.settings.catalog_dir), rt.settings.identities_file)
    rt.consumer.subscribe(topics.CANDIDATES, coordinator.on_event, accept=(CandidateSubmitted,))
    rt.consumer.subscribe(topics.CONTROL, coordinator.on_event, accept=(
        ApprovalGiven, AbortRequested, PauseRequested, ResumeRequested, PromoteRequested))
    rt.consumer.subscribe(topics.RESULTS, coordinator.on_event, accept=(
        GateCheckFinished, DRCheckFinished, DeployFinished, VerificationFinished, RollbackFinished))
    rt.consumer.subscribe(topics.VERIFIERS, Registry(rt.pool).on_heartbeat, accept=(VerifierHeartbeat,))

    async def deadlines() -> None:
        while True:
            if not await coordinator.fire_due_deadlines():
                await asyncio.sleep(DEADLINE_TICK_SECONDS)

    rt.tasks.append(deadlines)


def main() -> None:
    runner.main(NAME, setup)


if __name__ == "__main__":
    main()
