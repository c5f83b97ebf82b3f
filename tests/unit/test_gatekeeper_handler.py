"""The gatekeeper's handler with in-memory ports: the real Rego policy and signature checks judge, fakes stand in
for the catalog, the artifact store, the files, PostgreSQL and the outbox."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts.cloudevents import Envelope
from contracts.events import (
    Artifact,
    CandidateSubmitted,
    Contract,
    EnvironmentState,
    GateCheckFinished,
    GateCheckRequested,
    SourceRef,
    StagingVerification,
    VulnerabilitySummary,
)
from contracts.events import (
    TestReport as CiTests,
)
from releasegate_platform import supply_chain
from releasegate_platform.catalog import Catalog, CatalogError, ServiceEntry
from releasegate_platform.identity import Identities
from releasegate_platform.supply_chain import TrustRoot
from services.gatekeeper.calendar import Calendar
from services.gatekeeper.domain import BundleUnreadable, GateDecision, supersedes
from services.gatekeeper.handlers import STATE_RETRY, Gatekeeper
from services.gatekeeper.policy import Policy

REPO = Path(__file__).resolve().parents[2]
BUILDER = "https://ci.example/builders/release@v1"
REPOSITORY = "github.com/example/shop"
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
        self.now = now
        self.gatekeeper = Gatekeeper(
            catalog=FakeCatalog({"shop": Catalog(REPO / "catalog").get("shop")}),
            bundles=self.bundles,
            policy=Policy(REPO / "policies"),
            files=FakeFiles(root),
            store=self.store,
            replies=self.replies,
            clock=lambda: self.now,
        )
        self.store.environments[("shop", "production")] = state(1)

    def request(
        self, files: dict[str, bytes], environment: str = "staging", *, signed: bool = True, **fields
    ) -> GateCheckRequested:
        digest = self.bundles.add(files)
        attestation = None
        if signed:
            statement = supply_chain.provenance_statement(
                artifact_name="shop.tar.gz",
                digest=digest,
                builder_id=BUILDER,
                build_type="https://ci.example/build-types/bundle@v1",
                repository=REPOSITORY,
                ref="refs/heads/main",
                commit="3f1c9a7be2d04c58a1e6b7f90d2c4e8a6b1f3d57",
                dependencies=[],
                invocation_id="run-1",
                started_on=self.now - timedelta(hours=1),
            )
            attestation = supply_chain.sign(statement, [self.builder_key])
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


class TestGateDecisions:
    def test_a_signed_content_change_passes_the_staging_gate_and_the_decision_is_stored(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        reply = world.decide(world.request(CONTENT_CHANGE))
        assert (reply.decision, reply.passed, reply.risk) == ("pass", True, "low"), reply.checks
        assert all(c.passed for c in reply.checks)
        (stored,) = world.store.decisions.values()
        assert stored.decision == "pass" and stored.input["change"]["paths"] == ["storefront/catalog.py"]
        assert stored.input["change"]["baseline_version"] == "v1"

    def test_an_unsigned_artifact_is_refused_by_the_signed_provenance_rule(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        reply = world.decide(world.request(CONTENT_CHANGE, signed=False))
        assert (reply.decision, reply.passed) == ("block", False)
        assert outcome(reply, "signed_provenance") == "deny"
        assert "unsigned" in next(c.reason for c in reply.checks if c.name == "signed_provenance")

    def test_failed_tests_deny_with_the_tests_passed_rule(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        req = world.request(CONTENT_CHANGE)
        reply = world.decide(req.model_copy(update={"tests": CiTests(passed=9, failed=1)}))
        assert reply.decision == "block"
        assert [c.name for c in reply.checks if not c.passed] == ["tests_passed"]

    def test_a_payment_change_in_a_freeze_waits_until_the_freeze_ends(self, tmp_path):
        world = World(tmp_path, IN_FREEZE)
        verified = StagingVerification(
            release_id="shop-v2-1a2b3c4d", digest="sha256:" + "0" * 64, step_id="verify-staging", verified_at=IN_FREEZE
        )
        req = world.request(PAYMENT_CHANGE, "production")
        req = req.model_copy(update={"staging_verified": verified.model_copy(update={"digest": req.digest})})
        reply = world.decide(req)
        assert reply.decision == "wait" and not reply.passed
        assert outcome(reply, "freeze_window") == "wait"
        assert reply.retry_at == FREEZE_OVER

    def test_production_takes_the_staging_fact_from_the_command(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        req = world.request(CONTENT_CHANGE, "production")
        assert outcome(world.decide(req), "passed_staging") == "deny"
        other = StagingVerification(
            release_id=req.release_id, digest="sha256:" + "e" * 64, step_id="verify-staging", verified_at=world.now
        )
        assert outcome(world.decide(req.model_copy(update={"staging_verified": other})), "passed_staging") == "deny"
        same = other.model_copy(update={"digest": req.digest})
        assert outcome(world.decide(req.model_copy(update={"staging_verified": same})), "passed_staging") == "pass"

    def test_a_repeated_command_is_answered_once(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        req = world.request(CONTENT_CHANGE)
        envelope = Envelope.new(req, "releasegate/coordinator", subject=req.release_id)
        asyncio.run(world.gatekeeper.on_request(envelope))
        asyncio.run(world.gatekeeper.on_request(envelope))
        assert world.replies.computed == 1 and len(world.replies.answered) == 1
        assert len(world.store.decisions) == 1

    def test_an_artifact_missing_from_the_store_is_denied_not_crashed_on(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        req = world.request(CONTENT_CHANGE)
        del world.bundles.bundles[req.digest]
        reply = world.decide(req)
        assert reply.decision == "block" and outcome(reply, "artifact_digest") == "deny"


class TestProductionState:
    def test_without_the_deployers_state_of_production_the_gate_waits_and_says_why(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        world.store.environments.clear()
        reply = world.decide(world.request(CONTENT_CHANGE))
        assert (reply.decision, reply.passed) == ("wait", False)
        assert outcome(reply, "environment_state") == "wait"
        assert "release.environments" in reply.waiting_for[0]
        assert reply.retry_at == OUTSIDE_FREEZE + STATE_RETRY
        assert world.store.decisions == {}

    def test_a_production_with_no_stable_version_yet_diffs_against_nothing(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        world.store.environments[("shop", "production")] = state(2, stable=None, digest=None)
        world.decide(world.request(CONTENT_CHANGE))
        (stored,) = world.store.decisions.values()
        assert stored.input["change"]["baseline_version"] is None
        assert stored.input["change"]["paths"] == sorted(CONTENT_CHANGE)

    def test_a_published_state_is_kept_and_an_older_or_repeated_one_is_ignored(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)

        def publish(s: EnvironmentState) -> None:
            asyncio.run(world.gatekeeper.on_environment_state(Envelope.new(s, "releasegate/deployer")))

        publish(state(5, stable="v2", digest="sha256:" + "2" * 64))
        publish(state(4, stable="v1"))
        publish(state(5, stable="v9", digest="sha256:" + "9" * 64))
        assert world.store.environments[("shop", "production")].stable_version == "v2"
        publish(state(6, stable="v3", digest="sha256:" + "3" * 64))
        assert world.store.environments[("shop", "production")].stable_version == "v3"


@pytest.mark.parametrize(
    ("incoming", "kept", "replaces"), [(2, None, True), (2, 1, True), (2, 2, False), (1, 2, False)]
)
def test_only_a_newer_state_supersedes_the_kept_one(incoming, kept, replaces):
    assert supersedes(state(incoming), state(kept) if kept else None) is replaces
