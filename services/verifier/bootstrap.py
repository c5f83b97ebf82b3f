"""The core verifier's composition root: builds its adapters once (KPI store and environment projection in
PostgreSQL, business-event ingest, HAProxy request log, Prometheus, the catalog's journeys) and hands them to
the check as ports; subscribes the projection to the deployer's read model."""

from __future__ import annotations

import socket
from importlib import metadata

from contracts import topics
from contracts.events import EnvironmentState
from releasegate_platform.catalog import Catalog
from releasegate_runtime.kafka import client_options
from releasegate_sdk import Runtime, Verifier
from services.verifier import synthetic
from services.verifier.adapters import haproxy_log
from services.verifier.adapters.ingest import BusinessEventIngest
from services.verifier.adapters.prometheus import PrometheusProvider
from services.verifier.adapters.store import KpiStore
from services.verifier.config import VerifierSettings
from services.verifier.domain import Counts, measure
from services.verifier.handlers import BusinessKpis

NAME = "business-kpis"


def build(settings: VerifierSettings) -> Verifier:
    verifier = Verifier(
        name=NAME,
        version=metadata.version("releasegate"),
        services=["*"],
        environments=["*"],
        kpis=list(measure(Counts())),
        looks_every=settings.tick_seconds,
        handles_synthetic=True,
        # a look woken by data is two indexed counts and fails only on what may be looked at that often
        data_look_gap=settings.data_look_gap_seconds,
    )

    @verifier.on_startup
    async def wire(rt: Runtime) -> None:
        store = KpiStore(rt.pool)
        # Each ingest batch wakes the open windows (Verifier.new_data, at most every 50 ms per window): a crossing
        # sample is judged as it arrives, not at the next tick. Those looks may only fail, and only on what is safe
        # to look at that often (rate bounds on their Wilson interval, the sequential tests); the latency bounds,
        # point checks that raised false alarms when looked at on every arrival, stay on the 0.5 s tick.
        # a process with a health port is one per host and port, and keeps both when restarted: its static name
        ingest = BusinessEventIngest(
            client_options(rt.settings),
            store,
            rt.consumer.dead_letter,
            verifier.new_data,
            instance=f"{socket.gethostname()}-{rt.settings.health_port}" if rt.settings.health_port else None,
        )
        prometheus = PrometheusProvider(settings.prometheus_url) if settings.prometheus_url else None
        journeys = synthetic.CatalogJourneys(Catalog(settings.catalog_dir))
        kpis = BusinessKpis(store, lambda: ingest.caught_up_at, prometheus, journeys=journeys)
        verifier.check(kpis.check)
        rt.consumer.subscribe(topics.ENVIRONMENTS, kpis.on_environment_state, accept=(EnvironmentState,))

        async def request_log() -> None:
            await haproxy_log.receive(settings.haproxy_log_udp, store.add_http_samples)

        rt.tasks += [ingest.run, request_log]

    return verifier
