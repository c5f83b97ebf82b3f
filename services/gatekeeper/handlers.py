"""Gatekeeper handler: gather the facts about a candidate (artifact, signature, bundle diff, migrations, calendar,
approvals), let the Rego policy judge them, store the decision and reply once. Everything it touches comes in as a
port (`ports.py`), wired by `bootstrap.py`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from contracts.cloudevents import Envelope
from contracts.events import CheckResult, EnvironmentState, GateCheckFinished, GateCheckRequested
from contracts.names import clip
from releasegate_platform import environments, parity, regional, supply_chain
from releasegate_platform.catalog import CatalogError, ServiceEntry
from releasegate_platform.identity import IdentityError, verify_approval
from services.gatekeeper import migrations as migration_lint
from services.gatekeeper.adapters import bundles
from services.gatekeeper.domain import BundleUnreadable, GateDecision, GateError, checks_from
from services.gatekeeper.policy import input_digest
from services.gatekeeper.ports import (
    BundlesPort,
    CatalogPort,
    FilesPort,
    GateStorePort,
    ParityPort,
    PolicyPort,
    RepliesPort,
)

CONSUMER = "gatekeeper"
PRODUCTION = "production"
# how soon a gate that waits for the deployer's first published state of production asks again
STATE_RETRY = timedelta(seconds=5)
log = structlog.get_logger()


def utcnow() -> datetime:
    return datetime.now(UTC)


class Gatekeeper:
    def __init__(
        self,
        *,
        catalog: CatalogPort,
        bundles: BundlesPort,
        policy: PolicyPort,
        files: FilesPort,
        store: GateStorePort,
        replies: RepliesPort,
        parity: ParityPort,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._catalog, self._bundles, self.policy, self._files = catalog, bundles, policy, files
        self._parity = parity
        self._store, self._replies, self._clock = store, replies, clock

    async def on_request(self, envelope: Envelope) -> None:
        req: GateCheckRequested = envelope.data  # type: ignore[assignment]
        await self._replies.once(envelope, lambda: self.check(req, envelope.id))

    async def on_environment_state(self, envelope: Envelope) -> None:
        """The deployer's read model: keep the newest state of each environment (idempotent by sequence)."""
        await environments.keep_newest(self._store, envelope)

    async def check(self, req: GateCheckRequested, request_id: str) -> GateCheckFinished:
        now = self._clock()
        production = await self._store.environment(req.service, PRODUCTION)
        if production is None:
            return self._wait_for_environment_state(req, now)
        try:
            policy_input, timing = await self.facts(req, now, production)
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
        await self._store.record(
            GateDecision(
                request_id=request_id,
                release_id=req.release_id,
                step_id=req.step_id,
                environment=req.environment,
                decision=result.decision,
                risk=result.risk,
                policy_version=self.policy.version,
                input_digest=digest,
                input=policy_input,
                rules=[c.model_dump(mode="json") for c in checks],
                warnings=[w["msg"] for w in result.warn],
                refused=result.refused,
            )
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

    def _wait_for_environment_state(self, req: GateCheckRequested, now: datetime) -> GateCheckFinished:
        """Without the deployer's state of production there is no baseline to diff the candidate against, and
        guessing one (nothing in production: everything is new) would misjudge the change: wait for it."""
        reason = (
            f"waiting for the deployer to publish what {PRODUCTION} runs for {req.service} "
            "(release.environments): the change cannot be classified without it"
        )
        log.warning("gate waits for environment state", release_id=req.release_id, service=req.service)
        return GateCheckFinished(
            release_id=req.release_id,
            step_id=req.step_id,
            environment=req.environment,
            passed=False,
            decision="wait",
            policy_version=self.policy.version,
            checks=[CheckResult(name="environment_state", passed=False, reason=reason, evidence={"outcome": "wait"})],
            waiting_for=[reason],
            retry_at=now + STATE_RETRY,
        )

    async def facts(
        self, req: GateCheckRequested, now: datetime, production: EnvironmentState
    ) -> tuple[dict[str, Any], Any]:
        """The policy input; every file is re-read per request so policy, trust and calendar edits apply at once."""
        candidate = req.candidate
        try:
            entry: ServiceEntry | None = self._catalog.get(req.service)
            catalog_error = None
        except CatalogError as exc:
            entry, catalog_error = None, str(exc)
        artifact_error, files = None, None
        try:
            files = self._bundles.read(req.digest)
        except BundleUnreadable as exc:
            artifact_error = str(exc)
        baseline_version, baseline = self._production_bundle(production)
        change = bundles.change(
            baseline, files or {}, entry.change_domains if entry else {}, entry.domains if entry else []
        )
        new_migrations = {
            name: sql
            for name, sql in bundles.migrations(files or {}).items()
            if name not in bundles.migrations(baseline or {})
        }
        reports = migration_lint.analyse_all(list(new_migrations.items()))
        candidate_regional, production_regional = regional.load(files or {}), regional.load(baseline or {})
        trust_root = self._files.trust_root()
        attestation = supply_chain.inspect(
            candidate.attestation if candidate else None, req.digest, req.service, trust_root
        )
        calendar = timing = None
        if entry is not None:
            calendar = self._files.calendar()
            timing = calendar.timing(now, tier=entry.tier, domains=list(change.domains))
        approvals = self._approvals(req, now)
        vulns = candidate.vulnerabilities if candidate else None
        policy_input = {
            "environment": req.environment,
            "catalog": {"error": catalog_error, "revision": entry.revision if entry else None},
            "service": _service_input(req.service, entry),
            "artifact": {"digest": req.digest, "error": artifact_error},
            "attestation": attestation.as_input(),
            "tests": req.tests.model_dump(),
            "staging": {"verified": _staging_verified(req)},
            "incidents": _incidents_input(req, entry),
            "vulnerabilities": (
                {"present": True, **vulns.model_dump(include={"critical", "high", "medium", "low"})}
                if vulns
                else {"present": False}
            ),
            "environment_controls": self._files.environment_controls(req.environment),
            "change": {
                "author": candidate.author if candidate else None,
                **change.as_input(),
                "baseline_version": baseline_version,
                "regional": regional.diff(production_regional, candidate_regional),
            },
            "regional": {
                "present": candidate_regional.present,
                "problems": candidate_regional.problems,
                "removed": production_regional.present and not candidate_regional.present,
            },
            "parity": await self._parity_input(req, entry, candidate_regional),
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

    async def _parity_input(
        self, req: GateCheckRequested, entry: ServiceEntry | None, candidate: regional.RegionalSet
    ) -> dict[str, Any] | None:
        """Staging vs production, measured for a production gate only: that is where drift would go live."""
        if req.environment != PRODUCTION:
            return None
        if entry is None:
            return parity.unmeasured(f"{req.service} has no valid catalog entry to probe its environments by")
        return await self._parity.report(entry, candidate if candidate.present else None)

    def _production_bundle(self, production: EnvironmentState) -> tuple[str | None, dict[str, bytes] | None]:
        if production.stable_version is None or production.stable_digest is None:
            return None, None
        try:
            return production.stable_version, self._bundles.read(production.stable_digest)
        except BundleUnreadable as exc:
            log.warning(
                "production bundle unreadable; diffing against nothing", service=production.service, error=str(exc)
            )
            return production.stable_version, None

    def _approvals(self, req: GateCheckRequested, now: datetime) -> list[dict[str, Any]]:
        identities = self._files.identities()
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
                attested=a.attested,
            )
            out.append(
                {
                    "actor": a.actor,
                    "kind": a.kind,
                    "reason": a.reason,
                    "signature_valid": refused is None,
                    "refused_reason": refused,
                    "groups": sorted(
                        identities.groups_for(a.actor, a.attested) if refused is None else identities.groups_of(a.actor)
                    ),
                    "attested_by": a.attested.by if a.attested else None,
                    "age_seconds": int((now - a.signed_at).total_seconds()),
                }
            )
        return out


def _staging_verified(req: GateCheckRequested) -> bool:
    """The coordinator's fact in the command: this release's artifact, this digest, passed staging verification."""
    return req.staging_verified is not None and req.staging_verified.digest == req.digest


def _incidents_input(req: GateCheckRequested, entry: ServiceEntry | None) -> dict[str, Any]:
    """The coordinator's fact in the command (the service's open incident follow-ups) and the catalog's severities
    that block production on them; `known` false when the command did not say (not a production gate)."""
    return {
        "known": req.open_followups is not None,
        "open_followups": [f.model_dump(mode="json") for f in req.open_followups or []],
        "block_production_on_open": list(entry.incidents.block_production_on_open) if entry else [],
    }


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
