"""Composition root of the API service: the OIDC token verifier, the read models (as rg_api), the attesting command
publisher (the API's key, the `api` Kafka principal), the CI trust from the trust root, the catalog's approver
groups, the freeze calendar, the live status hub and the change records (the records key), wired into the FastAPI app."""

from __future__ import annotations

import hashlib
from typing import Any

import structlog
import yaml

from contracts.cloudevents import Envelope
from releasegate_platform.catalog import Catalog, CatalogError
from releasegate_platform.oidc import TokenVerifier, TrustedIssuers
from releasegate_runtime import runner
from releasegate_runtime.keys import load_signer
from services.api import ci, http
from services.api.commands import Commands
from services.api.config import ApiSettings
from services.api.live import StatusHub
from services.api.read_models import PgReadModels
from services.api.record_store import PgRecordStore
from services.api.records import Records

log = structlog.get_logger()


def approver_groups(catalog: Catalog, settings: ApiSettings) -> frozenset[str]:
    """Every group the catalog lets approve or act on some service's releases."""
    groups: set[str] = set()
    for path in sorted(settings.catalog_dir.glob("*.yaml")):
        try:
            entry = catalog.get(path.stem)
        except CatalogError:
            continue
        a = entry.approvers
        groups |= {a.group, a.exception_group}
        groups |= a.actions.groups("resume") | a.actions.groups("promote") | a.actions.groups("go")
    return frozenset(groups)


def calendar(settings: ApiSettings) -> dict[str, Any]:
    """The freeze calendar the gatekeeper judges release windows by, as it is now, with its digest."""
    path = settings.calendar_file
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return {"file": str(path), "error": f"cannot read: {exc.strerror}"}
    return {"file": path.name, "digest": f"sha256:{hashlib.sha256(raw).hexdigest()}", "calendar": yaml.safe_load(raw)}


def build(rt: runner.Runtime, settings: ApiSettings, hub: StatusHub) -> http.Ports:
    catalog = Catalog(settings.catalog_dir)

    async def publish(topic: str, envelope: Envelope) -> None:
        # straight to the broker (acks=all) before the caller hears 202: the API keeps no state of its own
        await rt.producer.send_envelope(topic, envelope)

    async def read_calendar() -> dict[str, Any]:
        return calendar(settings)

    return http.Ports(
        read_models=PgReadModels(rt.pool),
        commands=Commands(settings.signing_key, settings.oidc_issuer, publish),
        tokens=TrustedIssuers(
            [
                TokenVerifier(i, settings.oidc_audience)
                for i in dict.fromkeys([settings.oidc_issuer, *settings.ci_issuers])
            ]
        ),
        ci_trust=lambda: ci.load(settings.trust_root_file),
        approver_groups=lambda: approver_groups(catalog, settings),
        calendar=read_calendar,
        hub=hub,
        issuer=settings.oidc_issuer,
        public_url=settings.api_url,
        dashboard_client=settings.oidc_dashboard_client,
        audience=settings.oidc_audience,
        records=records(rt, settings),
    )


def records(rt: runner.Runtime, settings: ApiSettings) -> Records | None:
    """The change records, signed with the records key; None (said loudly) where the key is not installed, e.g. a
    cluster whose chart does not mount one yet: the API serves everything else."""
    try:
        signer = load_signer(settings.records_key)
    except (OSError, ValueError) as exc:
        log.error("no change records: the records key cannot be read", key=str(settings.records_key), error=str(exc))
        return None
    return Records(PgRecordStore(rt.pool), signer)
