"""Coordinator process: consumes candidates, results and operator control; fires persisted deadlines."""
from __future__ import annotations

import asyncio

from contracts import topics
from contracts.events import (
    AbortRequested, ApprovalGiven, CandidateSubmitted, PauseRequested, PromoteRequested, ResumeRequested,
)
from services.common import grants, runner
from services.common.bus import BusPolicy
from services.common.catalog import Catalog
from services.coordinator.handlers import Coordinator, utcnow
from services.coordinator.registry import Registry
from services.coordinator.results import Results
from services.coordinator.senders import RESULT_TYPES

NAME = "coordinator"
DEADLINE_TICK_SECONDS = 0.5


async def setup(rt: runner.Runtime) -> None:
    # no key, no start: without it no deploy or compensation could be authorized
    grant_key = rt.settings.signing_key_file or rt.settings.secrets_dir / "keys" / "coordinator.key"
    coordinator = Coordinator(rt.pool, Catalog(rt.settings.catalog_dir), rt.settings.identities_file,
                              grants.load_grant_signer(grant_key))
    rt.consumer.subscribe(topics.CANDIDATES, coordinator.on_event, accept=(CandidateSubmitted,))
    rt.consumer.subscribe(topics.CONTROL, coordinator.on_event, accept=(
        ApprovalGiven, AbortRequested, PauseRequested, ResumeRequested, PromoteRequested))
    # each producer's own result topic; who may write it is the bus policy (a new verifier: add its principal,
    # `make acls`, restart the coordinator)
    results = Results(rt.pool, coordinator.on_event, Registry(rt.pool).on_heartbeat, utcnow)
    for topic, sender in BusPolicy.load(rt.settings.bus_policy_file).results_producers().items():
        rt.consumer.subscribe(topic, results.handler(sender), accept=RESULT_TYPES)

    async def deadlines() -> None:
        while True:
            if not await coordinator.fire_due_deadlines():
                await asyncio.sleep(DEADLINE_TICK_SECONDS)

    rt.tasks.append(deadlines)


def main() -> None:
    runner.main(NAME, setup)


if __name__ == "__main__":
    main()
