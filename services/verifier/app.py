"""Verifier process: business-event ingest, HAProxy log receiver, verification requests, judging loop."""
from __future__ import annotations

import asyncio

import structlog

from contracts import topics
from contracts.events import VerificationRequested
from services.common import runner
from services.verifier.adapters import haproxy_log
from services.verifier.adapters.ingest import BusinessEventIngest
from services.verifier.adapters.prometheus import PrometheusProvider
from services.verifier.adapters.store import KpiStore
from services.verifier.config import VerifierSettings
from services.verifier.handlers import Verifier

NAME = "verifier"
log = structlog.get_logger()


async def setup(rt: runner.Runtime) -> None:
    settings = VerifierSettings()
    store = KpiStore(rt.pool)
    ingest = BusinessEventIngest(settings.kafka_bootstrap, store, rt.consumer.dead_letter)
    prometheus = PrometheusProvider(settings.prometheus_url) if settings.prometheus_url else None
    verifier = Verifier(rt.pool, store, lambda: ingest.caught_up_at, prometheus)
    rt.consumer.subscribe(topics.VERIFY_COMMANDS, verifier.on_request, accept=(VerificationRequested,))

    async def judging() -> None:
        while True:
            try:
                await verifier.judge_open()
            except Exception as exc:  # a bad tick must not stop judging the others
                log.error("judging tick failed", error=repr(exc))
            await asyncio.sleep(settings.tick_seconds)

    async def request_log() -> None:
        await haproxy_log.receive(settings.haproxy_log_udp, store.add_http_samples)

    rt.tasks += [ingest.run, judging, request_log]


def main() -> None:
    runner.main(NAME, setup)
