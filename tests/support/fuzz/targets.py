"""The topics a releasegate service consumes, who may write each (the threat: a legitimate credential in
hostile hands), who reads it, the event types it carries, and a valid event of each type to mutate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts import topics
from contracts.events import (
    AbortRequested,
    ApprovalGiven,
    CandidateSubmitted,
    CheckoutAttempted,
    CheckoutFailed,
    CheckoutSucceeded,
    Contract,
    DeployFinished,
    DeployRequested,
    DRCheckFinished,
    DRCheckRequested,
    GateCheckFinished,
    GateCheckRequested,
    InventoryConfirmed,
    InventoryReserved,
    OrderPlaced,
    PauseRequested,
    PaymentAuthorized,
    PaymentDeclined,
    PromoteRequested,
    ResumeRequested,
    RollbackFinished,
    RollbackRequested,
    VerificationFinished,
    VerificationRequested,
    VerifierHeartbeat,
)
from releasegate_runtime.bus import BusPolicy

TIME = "2026-11-28T12:00:00Z"
RESULT_TYPES = (
    GateCheckFinished,
    DRCheckFinished,
    DeployFinished,
    RollbackFinished,
    VerificationFinished,
    VerifierHeartbeat,
)
CONTROL_TYPES = (ApprovalGiven, AbortRequested, PauseRequested, ResumeRequested, PromoteRequested)
SHOP_TYPES = (
    CheckoutAttempted,
    CheckoutSucceeded,
    CheckoutFailed,
    PaymentAuthorized,
    PaymentDeclined,
    OrderPlaced,
    InventoryReserved,
    InventoryConfirmed,
)


@dataclass(frozen=True)
class Reader:
    """A service that reads a topic continuously; a dead letter names it by its consumer group (any of
    `groups`: the core verifier's business-event ingest may report under its own group)."""

    name: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Target:
    """A topic, a principal allowed to write it (the threat: a legitimate credential in hostile hands), who reads
    it, and the event types its readers accept."""

    topic: str
    writer: str
    readers: tuple[Reader, ...]
    accepted: tuple[type[Contract], ...]


def _reader(principal: str, *extra_groups: str) -> Reader:
    return Reader(principal, (f"releasegate-{principal}", *extra_groups))


def targets(policy: BusPolicy) -> list[Target]:
    """Every topic a service consumes as a group (deploy/kafka/acls.yaml), with its writer and readers. Topics
    read only in windows (the rollback's replay, the inventory-latency verifier) have no standing consumer
    here; `shop.events` is read continuously by the core verifier's ingest."""
    verifiers = tuple(
        _reader(p.name)
        for p in policy.principals.values()
        if p.template == "verifier" and topics.VERIFY_COMMANDS in p.consume
    )
    coordinator = (_reader("coordinator"),)
    out = [
        Target(topics.CANDIDATES, "ci", coordinator, (CandidateSubmitted,)),
        Target(topics.CONTROL, "ops", coordinator, CONTROL_TYPES),
        Target(topics.GATE_COMMANDS, "coordinator", (_reader("gatekeeper"),), (GateCheckRequested,)),
        Target(topics.DR_COMMANDS, "coordinator", (_reader("dr-checker"),), (DRCheckRequested,)),
        Target(topics.DEPLOY_COMMANDS, "coordinator", (_reader("deployer"),), (DeployRequested,)),
        Target(topics.ROLLBACK_COMMANDS, "coordinator", (_reader("rollback"),), (RollbackRequested,)),
        Target(topics.VERIFY_COMMANDS, "coordinator", verifiers, (VerificationRequested,)),
        Target(
            topics.SHOP_EVENTS, "shop", (_reader("verifier-business-kpis", "releasegate-verifier-ingest"),), SHOP_TYPES
        ),
    ]
    out += [Target(topic, p.name, coordinator, RESULT_TYPES) for topic, p in sorted(policy.results_producers().items())]
    return out


# --- valid bases ------------------------------------------------------------------------------------------------

RID = "shop-v2-1a2b3c4d"
DIGEST = "sha256:" + "f8" * 32
GRANT = {"grant_id": "0" * 32, "issued_at": TIME, "expires_at": TIME, "keyid": "a" * 64, "signature": "b" * 128}
SIGNED = {
    "actor": "carol",
    "reason": "reviewed the change",
    "signed_at": TIME,
    "nonce": "c" * 32,
    "keyid": "d" * 64,
    "signature": "e" * 128,
}
CHECK = {"name": "tests-passed", "passed": True, "reason": "128 passed, 0 failed", "evidence": {"passed": 128}}
KPI = {
    "name": "checkout_success_rate",
    "candidate": 0.97,
    "baseline": 0.96,
    "candidate_samples": 40,
    "baseline_samples": 300,
    "verdict": "pass",
    "rule": "candidate >= 0.85",
}
OBSERVED = {"weights": {"v1": 90, "v2": 10}, "instances": [], "stable_version": "v1", "tenants_on_candidate": []}
SHOP = {
    "version": "v1",
    "environment": "production",
    "tenant": "acme",
    "instance": "shop-v1-production-1",
    "checkout_id": "3f0c2b8e-7d1a-4c55-9a0e-2b7f1d4e6a90",
    "order_id": "ord-1042",
    "amount_cents": 4599,
    "currency": "EUR",
    "latency_ms": 182.5,
    "tax_cents": 735,
    "region": "eu-de",
    "items": [{"sku": "sku-1", "qty": "1"}],
    "customer": "cust-7",
    "payment_ref": "auth-991",
    "placed_at": TIME,
}

BASES: dict[type[Contract], dict[str, Any]] = {
    CandidateSubmitted: {
        "release_id": RID,
        "service": "shop",
        "version": "v2",
        "artifact": {"digest": DIGEST, "uri": "store://x"},
        "source": {"repository": "github.com/releasegate/sample-shop", "ref": "refs/heads/main", "commit": "8b" * 20},
        "tests": {"passed": 128, "failed": 0, "suite": "ci"},
        "author": "dev",
        "changes": "Catalog shows a free-shipping badge.",
        "submitted_by": "ci",
    },
    ApprovalGiven: {"release_id": RID, **SIGNED, "kind": "approval"},
    AbortRequested: {"release_id": RID, **SIGNED},
    PauseRequested: {"release_id": RID, **SIGNED},
    ResumeRequested: {"release_id": RID, **SIGNED},
    PromoteRequested: {"release_id": RID, **SIGNED, "full": True},
    GateCheckRequested: {
        "release_id": RID,
        "step_id": "gate-staging",
        "service": "shop",
        "version": "v2",
        "digest": DIGEST,
        "environment": "staging",
        "tests": {"passed": 128, "failed": 0},
        "approvals": [],
    },
    DRCheckRequested: {
        "release_id": RID,
        "step_id": "dr-check",
        "service": "shop",
        "version": "v2",
        "digest": DIGEST,
        "database": "shop",
        "rpo_seconds": 3600,
        "action": "readiness",
    },
    DeployRequested: {
        "release_id": RID,
        "step_id": "canary-10",
        "service": "shop",
        "version": "v2",
        "digest": DIGEST,
        "environment": "production",
        "action": "shift",
        "weight": 10,
        "instances": 1,
        "tenants": ["acme"],
        "grant": GRANT,
    },
    RollbackRequested: {
        "release_id": RID,
        "step_id": "compensate:production",
        "compensation": "restore_traffic",
        "service": "shop",
        "environment": "production",
        "candidate_version": "v2",
        "grant": GRANT,
    },
    VerificationRequested: {
        "release_id": RID,
        "step_id": "verify-canary-10",
        "service": "shop",
        "environment": "production",
        "candidate_version": "v2",
        "stable_version": "v1",
        "window_seconds": 10,
        "min_samples": 15,
        "thresholds": {"checkout_success_rate": {"min": 0.85, "tolerance": 0.03}},
        "tenants": ["acme"],
    },
    GateCheckFinished: {
        "release_id": RID,
        "step_id": "gate-staging",
        "environment": "staging",
        "passed": True,
        "checks": [CHECK],
        "decision": "pass",
        "risk": "low",
        "warnings": [],
        "requires": [],
    },
    DRCheckFinished: {"release_id": RID, "step_id": "dr-check", "ready": True, "checks": [CHECK]},
    DeployFinished: {
        "release_id": RID,
        "step_id": "canary-10",
        "environment": "production",
        "succeeded": True,
        "reason": "10% of traffic on v2",
        "observed": OBSERVED,
    },
    RollbackFinished: {
        "release_id": RID,
        "step_id": "compensate:production",
        "environment": "production",
        "succeeded": True,
        "reason": "traffic back on v1",
        "observed": OBSERVED,
        "evidence": {},
    },
    VerificationFinished: {
        "release_id": RID,
        "step_id": "verify-canary-10",
        "environment": "production",
        "verdict": "pass",
        "reason": "every KPI within bounds",
        "kpis": [KPI],
        "window_start": TIME,
        "window_end": TIME,
        "verifier": "business-kpis",
    },
    VerifierHeartbeat: {
        "name": "business-kpis",
        "version": "0.1.0",
        "instance": "host-1",
        "services": ["*"],
        "environments": ["*"],
        "kpis": ["checkout_success_rate"],
        "interval_seconds": 5,
        "sent_at": TIME,
    },
    **{t: dict(SHOP) for t in SHOP_TYPES},
}
# Names, ids, versions, tenants and databases: each has a pattern and a length limit (the point 1).
IDENTIFIERS = (
    "release_id",
    "step_id",
    "service",
    "version",
    "candidate_version",
    "stable_version",
    "environment",
    "tenant",
    "database",
    "instance",
    "verifier",
    "name",
    "actor",
)
NAME_LISTS = ("tenants", "services", "environments")
TIMESTAMPS = ("signed_at", "sent_at", "window_start", "window_end", "placed_at")
