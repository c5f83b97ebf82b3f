"""Coordinator process: consumes candidates, results and operator control; fires persisted deadlines once it has
caught up with what arrived while it was down."""

from __future__ import annotations

import asyncio

from contracts import topics
from contracts.events import (
    AbortRequested,
    ApprovalGiven,
    CandidateSubmitted,
    FollowupAdded,
    FollowupClosed,
    PauseRequested,
    PromoteRequested,
    ResumeRequested,
)
from releasegate_platform.identity import refuse_demo_keys
from releasegate_runtime import metrics, runner
from releasegate_runtime.bus import BusPolicy
from releasegate_runtime.catch_up import CatchUpBarrier, KafkaOffsets
from releasegate_runtime.kafka import client_options
from services.coordinator import bootstrap
from services.coordinator.adapters import metrics as saga_metrics
from services.coordinator.senders import RESULT_TYPES

NAME = "coordinator"
DEADLINE_TICK_SECONDS = 0.5
# bounded: a consumer that cannot catch up (a record retried while PostgreSQL is down) must not freeze deadlines
CATCH_UP_TIMEOUT_SECONDS = 120.0


async def setup(rt: runner.Runtime) -> None:
    # a decision's events go to the broker straight after its commit; the outbox relay is the safety net
    wired = bootstrap.build(rt.pool, rt.settings, rt.direct)
    coordinator = wired.coordinator
    rt.consumer.subscribe(topics.CANDIDATES, coordinator.on_event, accept=(CandidateSubmitted,))
    rt.consumer.subscribe(
        topics.CONTROL,
        coordinator.on_event,
        accept=(
            ApprovalGiven,
            AbortRequested,
            PauseRequested,
            ResumeRequested,
            PromoteRequested,
            FollowupAdded,
            FollowupClosed,
        ),
    )
    # each producer's own result topic; who may write it is the bus policy (a new verifier: add its principal,
    # `make acls`, restart the coordinator)
    for topic, sender in BusPolicy.load(rt.settings.bus_policy_file).results_producers().items():
        rt.consumer.subscribe(topic, wired.results.handler(sender), accept=RESULT_TYPES)
    # what one fetch brought is decided in one transaction (one commit, one read and one write of each kind)
    rt.consumer.batched(coordinator.batch, rt.settings.consumer_batch)

    # a restarted coordinator first reads the results that arrived while it was down, then fires deadlines
    caught_up = CatchUpBarrier(
        KafkaOffsets(client_options(rt.settings)),
        rt.consumer.group,
        rt.consumer.topics,
        timeout=CATCH_UP_TIMEOUT_SECONDS,
    )

    async def deadlines() -> None:
        await caught_up.wait()
        while True:
            if not await coordinator.fire_due_deadlines():
                await asyncio.sleep(DEADLINE_TICK_SECONDS)

    rt.tasks.append(deadlines)
    metrics.add_sampler("coordinator", saga_metrics.sampler(rt.pool, rt.settings.catalog_dir))


def main() -> None:
    runner.main(NAME, setup, preflight=[refuse_demo_keys])


if __name__ == "__main__":
    main()
