"""The gatekeeper's composition root: the one place that builds its adapters (catalog, artifact store, Rego
policy, trust root, calendar, identities and environment manifests, parity probes, PostgreSQL store, outbox
replies) and hands them to the handler as ports; and the subscriptions that feed it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg

from contracts import topics
from contracts.events import EnvironmentState, GateCheckRequested
from releasegate_platform.artifacts import ArtifactStore
from releasegate_platform.catalog import Catalog
from releasegate_runtime import outbox, runner
from releasegate_runtime.settings import ServiceSettings
from services.gatekeeper.adapters.files import GateFiles, StoreBundles
from services.gatekeeper.adapters.parity import ProbedParity
from services.gatekeeper.adapters.replies import OutboxReplies
from services.gatekeeper.adapters.store import PostgresGateStore
from services.gatekeeper.handlers import CONSUMER, Gatekeeper, utcnow
from services.gatekeeper.policy import Policy


def build(
    pool: asyncpg.Pool,
    settings: ServiceSettings,
    clock: Callable[[], datetime] = utcnow,
    direct: outbox.DirectPublisher | None = None,
) -> Gatekeeper:
    return Gatekeeper(
        catalog=Catalog(settings.catalog_dir),
        bundles=StoreBundles(ArtifactStore(settings.artifact_store)),
        policy=Policy(settings.policy_dir),
        files=GateFiles(
            settings.trust_root_file,
            settings.calendar_file,
            settings.identities_file,
            settings.environments_dir,
            settings.attester_keys,
        ),
        store=PostgresGateStore(pool),
        replies=OutboxReplies(pool, CONSUMER, direct),
        parity=ProbedParity(settings),
        clock=clock,
    )


async def setup(rt: runner.Runtime) -> None:
    gatekeeper = build(rt.pool, rt.settings, direct=rt.direct)
    rt.consumer.subscribe(topics.GATE_COMMANDS, gatekeeper.on_request, accept=(GateCheckRequested,))
    rt.consumer.subscribe(topics.ENVIRONMENTS, gatekeeper.on_environment_state, accept=(EnvironmentState,))
