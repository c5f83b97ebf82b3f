"""Saga bodies stored by an older coordinator: read as the current shape, they continue the release exactly as
the coordinator that wrote them would have (its decisions were recorded with the fixture)."""

import json
from datetime import datetime
from pathlib import Path

import pytest

from contracts.events import EVENT_TYPES
from services.coordinator import saga, upcast
from services.coordinator.model import SCHEMA_VERSION

FIXTURES = Path(__file__).resolve().parent / "fixtures"
V1 = sorted(FIXTURES.glob("saga_v1_*.json"))


def _fixture(path: Path) -> dict:
    return json.loads(path.read_text())


class TestUpcastingV1Bodies:
    def test_there_are_v1_fixtures_written_by_the_old_coordinator(self):
        assert len(V1) == 3
        assert all("schema_version" not in _fixture(p)["body"] for p in V1)
        assert all("verification" in _fixture(p)["body"] for p in V1)

    @pytest.mark.parametrize("path", V1, ids=lambda p: p.stem)
    def test_an_upcast_saga_continues_the_release_identically(self, path):
        fixture = _fixture(path)
        now = datetime.fromisoformat(fixture["now"])
        current = upcast.load(fixture["body"])
        assert current.schema_version == SCHEMA_VERSION and current.config is not None
        for event, expected in zip(fixture["events"], fixture["expected"], strict=True):
            decision = saga.handle(current, EVENT_TYPES[event["type"]].model_validate(event["data"]), now)
            assert decision.saga.state.value == expected["state"]
            assert decision.saga.waiting_for == expected["waiting_for"]
            assert [[t, c.event_type, c.model_dump(mode="json")] for t, c in decision.commands] == expected["commands"]
            assert [[t.state.value, t.step, t.actor, t.reason] for t in decision.transitions] == expected["transitions"]
            deadline = [decision.deadline[0], decision.deadline[1].isoformat()] if decision.deadline else None
            assert deadline == expected["deadline"]
            assert decision.clear_deadline == expected["clear_deadline"]
            current = decision.saga
        assert current.state.terminal

    def test_the_catalog_rules_become_typed_configuration_and_learnt_facts_their_own_fields(self):
        body = _fixture(FIXTURES / "saga_v1_data_rewrite_fails.json")["body"]
        current = upcast.load(body)
        assert current.config.min_samples == body["verification"]["min_samples"]
        assert current.config.dr.rpo_seconds == body["verification"]["dr"]["rpo_seconds"]
        assert current.staging_verdict.step == "verify-staging"
        assert set(current.verdicts) == set(body["verification"]["verdicts"])

    def test_compensable_steps_get_the_compensation_the_old_code_would_have_run(self):
        rewrite = upcast.load(_fixture(FIXTURES / "saga_v1_data_rewrite_fails.json")["body"])
        named = {s.id: s.compensation for s in rewrite.plan}
        assert named["migrate-production"] == "restore-data-production"
        assert named["migrate-staging"] == named["deploy-staging"] == "restore-traffic-staging"
        assert named["canary-10"] == "restore-traffic-production"
        assert named["gate-production"] is None and named["finalize-production"] is None
        rolling = upcast.load(_fixture(FIXTURES / "saga_v1_rolling_fails.json")["body"])
        assert {s.compensation for s in rolling.plan if s.id.startswith("roll-")} == {"redeploy-stable-production"}

    def test_a_current_body_is_read_as_it_is(self):
        current = upcast.load(_fixture(FIXTURES / "saga_v1_canary_midway.json")["body"])
        stored = current.model_dump(mode="json")
        assert upcast.upcast(stored) == stored and upcast.load(stored) == current

    def test_a_body_from_a_newer_coordinator_is_refused_with_the_reason(self):
        body = {**_fixture(FIXTURES / "saga_v1_canary_midway.json")["body"], "schema_version": SCHEMA_VERSION + 1}
        with pytest.raises(upcast.UpcastError, match="schema version"):
            upcast.load(body)
