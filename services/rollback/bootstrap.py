"""Composition root of the rollback service: the one place that wires its real adapters (catalog, the deployment
target of each environment as the deployer builds them, PostgreSQL tools, business-event topic, the service's
database, the catalog-named replayer, step ledger, admission, clock) into the handler and the subscriber."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import RollbackRequested
from releasegate_platform.catalog import Catalog
from releasegate_platform.edge import VarnishEdge, catalog_edge, rollback_flusher
from releasegate_platform.haproxy import HAProxy
from releasegate_platform.pgtools.dumps import PgTools
from releasegate_platform.replay import EventLog, load_replayer
from releasegate_platform.targets.directory import target_directory
from releasegate_runtime import grants, runner, worker
from releasegate_runtime.admission import Admission
from services.rollback.adapters import PgServiceDatabase
from services.rollback.config import RollbackSettings
from services.rollback.handlers import Rollback, utcnow
from services.rollback.ledger import PgStepLedger

CONSUMER = "rollback"


def build(rt: runner.Runtime, settings: RollbackSettings) -> Rollback:
    """`settings`: the service's, with how it reaches kubernetes targets (as its own ServiceAccount:
    RG_ROLLBACK_KUBECONFIG, else in a Pod the Pod's own). The local target gets no launcher: the rollback service
    never starts an instance."""
    catalog = Catalog(settings.catalog_dir)
    edge = VarnishEdge(settings.edge_url, settings.edge_admin, settings.edge_secret())
    return Rollback(
        catalog=catalog,
        targets=target_directory(settings, rt.pool, HAProxy(settings.haproxy_admin)),
        dumps=PgTools(settings.database_url, settings.run_dir),
        events=EventLog(settings, topics.SHOP_EVENTS),
        database=PgServiceDatabase(settings.database_url),
        replayer_of=load_replayer,
        ledger=PgStepLedger(rt.pool, CONSUMER),
        clock=utcnow,
        edge_flush=rollback_flusher(catalog_edge(catalog), edge),
    )


def subscriber(rt: runner.Runtime, rollback: Rollback) -> Callable[[Envelope], Awaitable[None]]:
    """Admission first (a refused command does nothing at all), then the handler once per event."""
    coordinator_key = grants.load_grant_key(
        rt.settings.coordinator_public_key_file or rt.settings.secrets_dir / "keys" / "coordinator.pub.json"
    )
    admission = Admission(rt.pool, CONSUMER, coordinator_key)

    async def check(_conn: object, req: grants.Command) -> str | None:
        return rollback.refusal(req) if isinstance(req, RollbackRequested) else None

    async def on_request(envelope: Envelope) -> None:
        req: RollbackRequested = envelope.data  # type: ignore[assignment]
        await admission.admit(envelope, check=check)
        await worker.reply_once(rt.pool, CONSUMER, envelope, lambda: rollback.restore(req), rt.direct)

    return on_request
