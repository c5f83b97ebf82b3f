"""Composition root of the dr-checker: the one place that wires its real adapters (catalog, backup catalog, its reports, the
PostgreSQL tools, the topic retention reader, the standby, the runbook lookup, clock) into the handler and the
subscriber."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from contracts.cloudevents import Envelope
from contracts.events import DRCheckRequested
from releasegate_platform.catalog import Catalog
from releasegate_platform.pgtools.catalog import PgBackupCatalog
from releasegate_platform.pgtools.dumps import PgTools
from releasegate_runtime import runner, worker
from releasegate_runtime.settings import REPO_ROOT
from services.dr_checker.adapters import PgDRReports, PgStandby
from services.dr_checker.handlers import DRChecker, utcnow
from services.dr_checker.retention import topic_retention

CONSUMER = "dr-checker"


def runbook_exists(ref: str) -> bool:
    return ref.startswith(("http://", "https://")) or (REPO_ROOT / ref).is_file()


def build(rt: runner.Runtime) -> DRChecker:
    settings = rt.settings
    return DRChecker(
        catalog=Catalog(settings.catalog_dir),
        backups=PgBackupCatalog(rt.pool),
        reports=PgDRReports(rt.pool),
        dumps=PgTools(settings.database_url, settings.run_dir),
        retention=partial(topic_retention, settings),
        standby=PgStandby(settings.database_url),
        runbook_exists=runbook_exists,
        clock=utcnow,
    )


def subscriber(rt: runner.Runtime, checker: DRChecker) -> Callable[[Envelope], Awaitable[None]]:
    """The handler once per event: a redelivered request gets the recorded result."""

    async def on_request(envelope: Envelope) -> None:
        req: DRCheckRequested = envelope.data  # type: ignore[assignment]
        await worker.reply_once(rt.pool, CONSUMER, envelope, lambda: checker.handle(req), rt.direct)

    return on_request
