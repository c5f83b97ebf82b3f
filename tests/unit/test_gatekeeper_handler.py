"""The gatekeeper's handler with in-memory ports: the real Rego policy and signature checks judge, fakes stand in
for the catalog, the artifact store, the files, PostgreSQL and the outbox (tests/support/gatekeeper.py)."""

from __future__ import annotations

import asyncio

import pytest

from contracts.cloudevents import Envelope
from contracts.events import EnvironmentState, StagingVerification
from contracts.events import TestReport as CiTests
from services.gatekeeper.domain import supersedes
from services.gatekeeper.handlers import STATE_RETRY
from tests.support.gatekeeper import (
    CONTENT_CHANGE,
    FREEZE_OVER,
    IN_FREEZE,
    OUTSIDE_FREEZE,
    PAYMENT_CHANGE,
    World,
    outcome,
    state,
)


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
