"""Composition root of the notifier: the one place that wires its real adapters (catalog routes, secret files, HTTP
and SMTP channels, the PostgreSQL delivery ledger) into the handler, the delivery worker and the subscriber."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from contracts.cloudevents import Envelope
from releasegate_runtime import runner
from services.notifier.adapters.channels import Channels
from services.notifier.adapters.http import HttpChannel
from services.notifier.adapters.postgres import PgDeliveries
from services.notifier.adapters.routes import CatalogRoutes
from services.notifier.adapters.secrets import FileSecrets
from services.notifier.adapters.smtp import SmtpChannel
from services.notifier.config import NotifierSettings
from services.notifier.handlers import DeliveryWorker, Notifier

CONSUMER = "notifier"


@dataclass(frozen=True)
class Wired:
    notifier: Notifier
    worker: DeliveryWorker
    http: HttpChannel
    deliveries: PgDeliveries

    def batch(self, _envelopes: Sequence[Envelope]) -> AbstractAsyncContextManager[None]:
        """The consumer's batch scope: the batch's events recorded in one transaction, then the delivery worker
        woken (a wake during the batch finds its deliveries not yet committed)."""
        return _committed_then(self.deliveries.batch(), self.worker.wake)


@asynccontextmanager
async def _committed_then(scope: AbstractAsyncContextManager[None], then: Callable[[], None]) -> AsyncIterator[None]:
    async with scope:
        yield
    then()


def tls_context(settings: NotifierSettings) -> ssl.SSLContext:
    """The system's trust store, plus the configured CA bundle (a company CA, or a test's own)."""
    context = ssl.create_default_context()
    if settings.notifier_ca_file is not None:
        context.load_verify_locations(cafile=str(settings.notifier_ca_file))
    return context


def build(rt: runner.Runtime, settings: NotifierSettings) -> Wired:
    secrets = FileSecrets(settings.secrets_root())
    context = tls_context(settings)
    http = HttpChannel(secrets, settings.notifier_timeout_seconds, context)
    deliveries = PgDeliveries(rt.pool, rt.name)
    worker = DeliveryWorker(
        deliveries=deliveries,
        channel=Channels(http, SmtpChannel(secrets, settings.notifier_timeout_seconds, context)),
        policy=settings.retry_policy(),
        lease_seconds=settings.lease_seconds(),
        concurrency=settings.notifier_concurrency,
        poll_seconds=settings.notifier_poll_seconds,
    )
    notifier = Notifier(
        consumer=CONSUMER,
        routes=CatalogRoutes(settings.catalog_dir),
        deliveries=deliveries,
        api_url=settings.api_url,
        wake=worker.wake,
    )
    return Wired(notifier, worker, http, deliveries)


def subscriber(notifier: Notifier, topic: str) -> Callable[[Envelope], Awaitable[None]]:
    async def on_event(envelope: Envelope) -> None:
        await notifier.on_event(topic, envelope)

    return on_event
