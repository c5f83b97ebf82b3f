"""The gatekeeper's handler wired to in-memory ports (the unit tests' world): the real Rego policy and signature
checks judge, fakes stand in for the catalog, the artifact store, the files, the parity probes, PostgreSQL and the
outbox."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from contracts.cloudevents import Envelope
from contracts.events import (
    Artifact,
    CandidateSubmitted,
    Contract,
    EnvironmentState,
    GateCheckFinished,
    GateCheckRequested,
    SourceRef,
    VulnerabilitySummary,
)
from contracts.events import (
    TestReport as CiTests,
)
from releasegate_platform import parity, supply_chain
from releasegate_platform.catalog import Catalog, CatalogError, ServiceEntry
from releasegate_platform.identity import Identities
from releasegate_platform.regional import RegionalSet
from releasegate_platform.supply_chain import TrustRoot
from services.gatekeeper.calendar import Calendar
from services.gatekeeper.domain import BundleUnreadable, GateDecision, supersedes
from services.gatekeeper.handlers import Gatekeeper
from services.gatekeeper.policy import Policy
from tests.support.provenance import BUILDER, REPOSITORY, signed_provenance

REPO = Path(__file__).resolve().parents[2]
STABLE_FILES = {"bundle.json": b'{"version": "v1"}', "storefront/catalog.py": b"PRODUCTS = []\n"}
STABLE_DIGEST = "sha256:" + hashlib.sha256(b"v1").hexdigest()
# Christmas freeze of policies/calendar.yaml: payment changes wait until it ends (29 Dec 06:00 London) and business
# hours open (09:00 Berlin)
IN_FREEZE = datetime(2026, 12, 22, 10, 0, tzinfo=UTC)
FREEZE_OVER = datetime(2026, 12, 29, 8, 0, tzinfo=UTC)
OUTSIDE_FREEZE = datetime(2026, 12, 9, 14, 0, tzinfo=UTC)  # a Wednesday afternoon


class FakeCatalog:
    def __init__(self, entries: dict[str, ServiceEntry]) -> None:
        self.entries = entries

    def get(self, service: str) -> ServiceEntry:
        if service not in self.entries:
            raise CatalogError(f"no catalog entry for {service}")
        return self.entries[service]


class FakeBundles:
    def __init__(self) -> None:
        self.bundles: dict[str, dict[str, bytes]] = {STABLE_DIGEST: STABLE_FILES}

    def add(self, files: dict[str, bytes]) -> str:
        digest = "sha256:" + hashlib.sha256(json.dumps(sorted(files)).encode() + b"".join(files.values())).hexdigest()
        self.bundles[digest] = files
        return digest

    def read(self, digest: str) -> dict[str, bytes]:
        if digest not in self.bundles:
            raise BundleUnreadable(f"artifact {digest} is not in the store")
        return self.bundles[digest]


class FakeFiles:
    def __init__(self, trust_root: TrustRoot) -> None:
        self.root = trust_root
        self.calendar_yaml = (REPO / "policies" / "calendar.yaml").read_text()

    def trust_root(self) -> TrustRoot:
        return self.root

    def calendar(self) -> Calendar:
        return Calendar.from_yaml(self.calendar_yaml)

    def identities(self) -> Identities:
        return Identities({}, "sha256:" + "0" * 64)

    def environment_controls(self, environment: str) -> list[str]:
        return ["tls", "network_policy", "service_identity"]


class FakeStore:
    def __init__(self) -> None:
        self.environments: dict[tuple[str, str], EnvironmentState] = {}
        self.decisions: dict[str, GateDecision] = {}

    async def environment(self, service: str, environment: str) -> EnvironmentState | None:
        return self.environments.get((service, environment))

    async def keep_environment(self, state: EnvironmentState) -> bool:
        key = (state.service, state.environment)
        if not supersedes(state, self.environments.get(key)):
            return False
        self.environments[key] = state
        return True

    async def record(self, decision: GateDecision) -> None:
        self.decisions.setdefault(decision.request_id, decision)


class FakeReplies:
    def __init__(self) -> None:
        self.answered: dict[str, Contract] = {}
        self.computed = 0

    async def once(self, envelope: Envelope, compute: Callable[[], Awaitable[Contract]]) -> None:
        if envelope.id in self.answered:
            return
        self.computed += 1
        self.answered[envelope.id] = await compute()


class FakeParity:
    """Probes answered from facts the test sets, judged by the real comparison; by default both environments
    agree on every fact."""

    def __init__(self) -> None:
        self.staging = parity.Facts("staging", {"database.server_version": "16.4"})
        self.production = parity.Facts("production", {"database.server_version": "16.4"})
        self.accepted: list[parity.Accepted] = []
        self.regional: list[RegionalSet | None] = []

    async def report(self, entry: ServiceEntry, regional: RegionalSet | None) -> dict[str, object]:
        self.regional.append(regional)
        return parity.compare(entry.name, self.staging, self.production, self.accepted).as_input()


def state(sequence: int, stable: str | None = "v1", digest: str | None = STABLE_DIGEST) -> EnvironmentState:
    return EnvironmentState(
        service="shop",
        environment="production",
        sequence=sequence,
        stable_version=stable,
        stable_digest=digest,
        serving=[],
        observed_at=datetime(2026, 12, 1, tzinfo=UTC),
    )


class World:
    """The gatekeeper wired to fakes, with a trusted builder key to sign candidates."""

    def __init__(self, tmp_path: Path, now: datetime) -> None:
        self.builder_key, public = supply_chain.keygen(tmp_path / "keys", "builder")
        root = TrustRoot.parse(
            {
                "version": 1,
                "builders": {BUILDER: {"threshold": 1, "keys": [json.loads(public.read_text())]}},
                "services": {"shop": {"sources": [{"repository": REPOSITORY, "refs": ["refs/heads/main"]}]}},
            },
            "sha256:" + "1" * 64,
        )
        self.bundles, self.store, self.replies = FakeBundles(), FakeStore(), FakeReplies()
        self.parity = FakeParity()
        self.now = now
        self.gatekeeper = Gatekeeper(
            catalog=FakeCatalog({"shop": Catalog(REPO / "catalog").get("shop")}),
            bundles=self.bundles,
            policy=Policy(REPO / "policies"),
            files=FakeFiles(root),
            store=self.store,
            replies=self.replies,
            parity=self.parity,
            clock=lambda: self.now,
        )
        self.store.environments[("shop", "production")] = state(1)

    def request(
        self, files: dict[str, bytes], environment: str = "staging", *, signed: bool = True, **fields
    ) -> GateCheckRequested:
        digest = self.bundles.add(files)
        attestation = None
        if signed:
            attestation = signed_provenance(digest, self.builder_key, started_on=self.now - timedelta(hours=1))
        candidate = CandidateSubmitted(
            release_id="shop-v2-1a2b3c4d",
            service="shop",
            version="v2",
            artifact=Artifact(digest=digest, uri=f"store://{digest}"),
            source=SourceRef(repository=REPOSITORY, ref="refs/heads/main", commit="3f1c9a7"),
            tests=CiTests(passed=10, failed=0),
            author="dev",
            attestation=attestation,
            vulnerabilities=VulnerabilitySummary(tool="grype", components=12),
        )
        return GateCheckRequested(
            release_id=candidate.release_id,
            step_id=f"gate-{environment}",
            service="shop",
            version="v2",
            digest=digest,
            environment=environment,
            tests=candidate.tests,
            candidate=candidate,
            **fields,
        )

    def decide(self, req: GateCheckRequested) -> GateCheckFinished:
        envelope = Envelope.new(req, "releasegate/coordinator", subject=req.release_id)
        asyncio.run(self.gatekeeper.on_request(envelope))
        reply = self.replies.answered[envelope.id]
        assert isinstance(reply, GateCheckFinished)
        return reply


CONTENT_CHANGE = {**STABLE_FILES, "storefront/catalog.py": b"PRODUCTS = ['socks']\n"}
PAYMENT_CHANGE = {**STABLE_FILES, "storefront/payments.py": b"def authorize(card):\n    return True\n"}


def outcome(reply: GateCheckFinished, rule: str) -> str | None:
    return next((c.evidence.get("outcome") for c in reply.checks if c.name == rule), None)
