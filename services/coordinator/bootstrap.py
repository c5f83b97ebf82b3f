"""The coordinator's composition root: the one place that builds its adapters (PostgreSQL store, catalog,
identities file, grant key, clock) and hands them to the handlers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from releasegate_platform import identity
from releasegate_platform.catalog import Catalog
from releasegate_platform.verifier_registry import Registry
from releasegate_runtime import grants, outbox
from releasegate_runtime.settings import ServiceSettings
from services.coordinator.adapters.postgres import PgSagaStore
from services.coordinator.handlers import Coordinator, utcnow
from services.coordinator.ports import LoadIdentities
from services.coordinator.results import Results


@dataclass(frozen=True)
class Wired:
    coordinator: Coordinator
    results: Results


def identities_from(path: Path, attester_keys: Mapping[str, Path] | None = None) -> LoadIdentities:
    """The identities file and the attesters' keys, re-read at each call: people change."""
    return lambda: identity.load_identities(path, attester_keys or {})


def build(pool: asyncpg.Pool, settings: ServiceSettings, direct: outbox.DirectPublisher | None = None) -> Wired:
    """`direct`: publishes the events of each decision straight after its commit (None: the outbox relay does)."""
    # no key, no start: without it no deploy or compensation could be authorized
    grant_key = settings.signing_key_file or settings.secrets_dir / "keys" / "coordinator.key"
    store = PgSagaStore(pool, direct=direct)
    coordinator = Coordinator(
        store,
        Catalog(settings.catalog_dir),
        identities_from(settings.identities_file, settings.attester_keys),
        grants.load_grant_signer(grant_key),
        clock=utcnow,
    )
    results = Results(store, coordinator.on_event, Registry(pool).on_heartbeat, utcnow)
    return Wired(coordinator, results)
