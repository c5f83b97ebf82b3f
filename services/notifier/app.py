"""Notifier process."""

from __future__ import annotations

from contracts import topics
from contracts.events import AlertRaised, ReleaseStatusChanged
from releasegate_runtime import runner
from services.notifier import bootstrap
from services.notifier.config import NotifierSettings

NAME = "notifier"


async def setup(rt: runner.Runtime) -> None:
    wired = bootstrap.build(rt, NotifierSettings().for_principal(NAME))
    rt.consumer.subscribe(
        topics.STATUS, bootstrap.subscriber(wired.notifier, topics.STATUS), accept=(ReleaseStatusChanged,)
    )
    rt.consumer.subscribe(topics.ALERTS, bootstrap.subscriber(wired.notifier, topics.ALERTS), accept=(AlertRaised,))
    # what one fetch brought is recorded in one transaction; a batch that fails is handled again event by event
    rt.consumer.batched(wired.batch, rt.settings.consumer_batch)

    async def deliveries() -> None:
        await wired.worker.run()

    rt.tasks.append(deliveries)
    rt.on_stop.append(wired.http.close)


def main() -> None:
    runner.main(NAME, setup)
