"""Gatekeeper handler: gather the facts about a candidate (artifact, signature, bundle diff, migrations, calendar,
approvals), let the Rego policy judge them, store the decision and reply through the outbox."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from contracts.cloudevents import Envelope
from contracts.events import CheckResult, GateCheckFinished, GateCheckRequested
from contracts.names import clip
from releasegate_platform import supply_chain
from releasegate_platform.artifacts import ArtifactError, ArtifactStore
from releasegate_platform.catalog import Catalog, CatalogError, ServiceEntry
from releasegate_platform.identity import Identities, IdentityError, verify_approval
from releasegate_runtime import worker
from releasegate_runtime.settings import ServiceSettings
from services.gatekeeper import migrations as migration_lint
from services.gatekeeper.adapters import bundles
from services.gatekeeper.calendar import Calendar
from services.gatekeeper.domain import GateError, checks_from, environment_controls
from services.gatekeeper.policy import Policy, input_digest

CONSUMER = "gatekeeper"
log = structlog.get_logger()


def utcnow() -> datetime:
    return datetime.now(UTC)


class Gatekeeper:
    def __init__(self, pool: asyncpg.Pool, settings: ServiceSettings, clock: Callable[[], datetime] = utcnow) -> None:
        self._pool, self._clock = pool, clock
        self._catalog = Catalog(settings.catalog_dir)
        self._store = ArtifactStore(settings.artifact_store)
        self._settings = settings
        self.policy = Policy(settings.policy_dir)

    async def on_request(self, envelope: Envelope) -> None:
        req: GateCheckRequested = envelope.data  # type: ignore[assignment]
        await worker.reply_once(self._pool, CONSUMER, envelope, lambda: self.check(req, envelope.id))

    async def check(self, req: GateCheckRequested, request_id: str) -> GateCheckFinished:
        now = self._clock()
        try:
            policy_input, timing = await self.facts(req, now)
            result = self.policy.evaluate(policy_input)
        except (GateError, supply_chain.TrustRootError, IdentityError) as exc:
            # A broken policy, trust root, calendar or identities file never lets a release through.
            log.error("gate cannot decide", release_id=req.release_id, error=str(exc))
            return GateCheckFinished(
                release_id=req.release_id,
                step_id=req.step_id,
                environment=req.environment,
                passed=False,
                decision="block",
                policy_version=self.policy.version,
                checks=[CheckResult(name="policy_configuration", passed=False, reason=clip(str(exc)))],
            )
        checks = checks_from(result)
        digest = input_digest(policy_input)
        retry_at = timing.retry_at if timing is not None and result.decision == "wait" else None
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO gate_decisions (request_id, release_id, step_id, environment, decision, risk,"
                " policy_version, input_digest, input, rules, warnings, refused)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) ON CONFLICT (request_id) DO NOTHING",
                request_id,
                req.release_id,
                req.step_id,
                req.environment,
                result.decision,
                result.risk,
                self.policy.version,
                digest,
                policy_input,
                [c.model_dump(mode="json") for c in checks],
                [w["msg"] for w in result.warn],
                result.refused,
            )
        log.info(
            "gate decided",
            release_id=req.release_id,
            step=req.step_id,
            decision=result.decision,
            risk=result.risk,
            policy=self.policy.version,
        )
        return GateCheckFinished(
            release_id=req.release_id,
            step_id=req.step_id,
            environment=req.environment,
            passed=result.decision == "pass",
            checks=checks,
            decision=result.decision,
            risk=result.risk,
            policy_version=self.policy.version,
            input_digest=digest,
            warnings=[w["msg"] for w in result.warn],
            waiting_for=[w["msg"] for w in result.wait],
            retry_at=retry_at,
            requires=result.requires,
            migrations=[
                {"name": m["name"], "kind": m["kind"], "rewrites_data": m["rewrites_data"]}
                for m in policy_input["migrations"]
            ],
        )

    async def facts(self, req: GateCheckRequested, now: datetime) -> tuple[dict[str, Any], Any]:
        """The policy input; every file is re-read per request so policy, trust and calendar edits apply at once."""
        settings = self._settings
        candidate = req.candidate
        try:
            entry: ServiceEntry | None = self._catalog.get(req.service)
            catalog_error = None
        except CatalogError as exc:
            entry, catalog_error = None, str(exc)
        artifact_error, files = None, None
        try:
            files = bundles.read(self._store.verify(req.digest))
        except (ArtifactError, bundles.BundleError) as exc:
            artifact_error = str(exc)
        baseline_version, baseline = await self._production_bundle(req.service)
        change = bundles.change(
            baseline, files or {}, entry.change_domains if entry else {}, entry.domains if entry else []
        )
        new_migrations = {
            name: sql
            for name, sql in bundles.migrations(files or {}).items()
            if name not in bundles.migrations(baseline or {})
        }
        reports = migration_lint.analyse_all(list(new_migrations.items()))
        trust_root = supply_chain.TrustRoot.load(settings.trust_root_file)
        attestation = supply_chain.inspect(
            candidate.attestation if candidate else None, req.digest, req.service, trust_root
        )
        calendar = timing = None
        if entry is not None:
            calendar = Calendar.load(settings.calendar_file)
            timing = calendar.timing(now, tier=entry.tier, domains=list(change.domains))
        approvals = self._approvals(req, now)
        async with self._pool.acquire() as conn:
            staged = await conn.fetchval(
                "SELECT 1 FROM staging_verified_artifacts WHERE service = $1 AND digest = $2", req.service, req.digest
            )
        vulns = candidate.vulnerabilities if candidate else None
        policy_input = {
            "environment": req.environment,
            "catalog": {"error": catalog_error, "revision": entry.revision if entry else None},
            "service": _service_input(req.service, entry),
            "artifact": {"digest": req.digest, "error": artifact_error},
            "attestation": attestation.as_input(),
            "tests": req.tests.model_dump(),
            "staging": {"verified": bool(staged)},
            "vulnerabilities": (
                {"present": True, **vulns.model_dump(include={"critical", "high", "medium", "low"})}
                if vulns
                else {"present": False}
            ),
            "environment_controls": environment_controls(settings.environments_dir, req.environment),
            "change": {
                "author": candidate.author if candidate else None,
                **change.as_input(),
                "baseline_version": baseline_version,
            },
            "migrations": [r.as_input() for r in reports],
            "schema": {
                "candidate_uses": bundles.manifest(files or {}).get("schema_uses", []),
                "production_version": baseline_version,
                "production_uses": bundles.manifest(baseline).get("schema_uses") if baseline else None,
            },
            "timing": _timing_input(timing, now),
            "approvals": approvals,
            "trust": {"trust_root": trust_root.digest, "calendar": calendar.digest if calendar else None},
        }
        return json.loads(json.dumps(policy_input, default=str)), timing

    async def _production_bundle(self, service: str) -> tuple[str | None, dict[str, bytes] | None]:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT stable_version, stable_digest FROM environments"
                " WHERE service = $1 AND environment = 'production'",
                service,
            )
        if row is None:
            return None, None
        try:
            return row["stable_version"], bundles.read(self._store.verify(row["stable_digest"]))
        except (ArtifactError, bundles.BundleError) as exc:
            log.warning("production bundle unreadable; diffing against nothing", service=service, error=str(exc))
            return row["stable_version"], None

    def _approvals(self, req: GateCheckRequested, now: datetime) -> list[dict[str, Any]]:
        identities = Identities.load(self._settings.identities_file)
        out = []
        for a in req.approvals:
            refused = verify_approval(
                identities,
                release_id=req.release_id,
                actor=a.actor,
                kind=a.kind,
                reason=a.reason,
                signed_at=a.signed_at,
                nonce=a.nonce,
                keyid=a.keyid,
                signature=a.signature,
            )
            out.append(
                {
                    "actor": a.actor,
                    "kind": a.kind,
                    "reason": a.reason,
                    "signature_valid": refused is None,
                    "refused_reason": refused,
                    "groups": sorted(identities.groups_of(a.actor)),
                    "age_seconds": int((now - a.signed_at).total_seconds()),
                }
            )
        return out


def _service_input(name: str, entry: ServiceEntry | None) -> dict[str, Any]:
    if entry is None:
        return {
            "name": name,
            "tier": 1,
            "environments": [],
            "security_controls": [],
            "approval_required": True,
            "approver_group": "approvers",
            "exception_group": "release-managers",
            "domains": [],
        }
    return {
        "name": entry.name,
        "tier": entry.tier,
        "environments": entry.environments,
        "security_controls": entry.security_controls,
        "approval_required": entry.approval_required,
        "approver_group": entry.approvers.group,
        "exception_group": entry.approvers.exception_group,
        "domains": entry.domains,
    }


def _timing_input(timing: Any, now: datetime) -> dict[str, Any]:
    if timing is None:
        return {
            "frozen": False,
            "frozen_domains": [],
            "freeze_name": None,
            "inside_business_hours": True,
            "business_hours_reason": None,
            "now_epoch": int(now.timestamp()),
        }
    return timing.as_input(now)
