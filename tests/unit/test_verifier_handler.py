"""The core business-kpis verifier's check with in-memory ports: verdicts from fake counts, and synthetic
journeys run against the instances the deployer published (its projection of `release.environments`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from contracts.cloudevents import Envelope
from contracts.events import EnvironmentState, ServingVersion, Verdict
from releasegate_sdk import TransientError
from releasegate_sdk.schedule import Finish, Window, after_answer, after_error
from releasegate_sdk.testing import fake_request
from releasegate_sdk.types import RETRYABLE
from services.verifier.domain import Counts, endpoints_of, supersedes
from services.verifier.handlers import BusinessKpis

DIGEST = "sha256:" + "a" * 64
SPEC = {"journey": "checkout", "tenants": ["acme"], "profiles": ["visa"], "journeys_per_tenant": 2}
THRESHOLDS = {"checkout_success_rate": {"min": 0.85}}


class FakeKpiStore:
    """Counts per version and the kept environment states, as PostgreSQL would hold them."""

    def __init__(self, counts: dict[str, Counts] | None = None) -> None:
        self.counts_by_version = counts or {}
        self.states: dict[tuple[str, str], EnvironmentState] = {}

    async def counts(self, environment, version, start, end, tenants=None) -> Counts:
        return self.counts_by_version.get(version, Counts())

    async def targets(self, service: str, environment: str, version: str) -> list[str]:
        state = self.states.get((service, environment))
        return [] if state is None else endpoints_of(state, version)

    async def keep_environment(self, state: EnvironmentState) -> bool:
        key = (state.service, state.environment)
        if not supersedes(state, self.states.get(key)):
            return False
        self.states[key] = state
        return True


def state(sequence: int, **endpoints: list[str]) -> EnvironmentState:
    return EnvironmentState(
        service="shop",
        environment="staging",
        sequence=sequence,
        stable_version="v1",
        stable_digest=DIGEST,
        serving=[ServingVersion(version=v, digest=DIGEST, weight=0, endpoints=urls) for v, urls in endpoints.items()],
        observed_at=datetime.now(UTC),
    )


@dataclass
class JourneyResult:
    tenant: str
    success: bool = True
    reason: str | None = None
    steps: list = field(default_factory=list)


class TestVerdictsFromCounts:
    async def judge(self, candidate: Counts, *, final: bool = True):
        store = FakeKpiStore({"v1": Counts(checkout_succeeded=40), "v2": candidate})
        req = fake_request(thresholds=THRESHOLDS, min_samples=15, is_final_look=final)
        return req, await BusinessKpis(store, lambda: req.window_end).check(req)

    async def test_a_healthy_candidate_passes(self):
        _, result = await self.judge(Counts(checkout_succeeded=30))
        assert result.verdict is Verdict.PASS

    async def test_a_candidate_whose_checkouts_fail_fails_before_the_window_ends(self):
        _, result = await self.judge(Counts(checkout_succeeded=2, checkout_failed=28), final=False)
        assert result.verdict is Verdict.FAIL and "checkout_success_rate" in result.reason

    async def test_too_few_checkouts_end_inconclusive_at_the_deadline_never_passed(self):
        req, result = await self.judge(Counts(checkout_succeeded=3))
        assert result.verdict is None
        outcome = after_answer(
            Window(req.window_start, req.window_end, req.deadline), result, final=True, now=req.deadline, looks_every=1
        )
        assert isinstance(outcome, Finish) and outcome.result.verdict is Verdict.INCONCLUSIVE
        assert "needs >= 15 candidate samples, has 3" in outcome.result.reason


class TestPublishedEnvironments:
    async def test_journeys_run_against_the_endpoints_the_deployer_published(self):
        store = FakeKpiStore()
        ran: list[str] = []

        async def journey(client, base_url, tenant, profile):
            ran.append(base_url)
            return JourneyResult(tenant)

        kpis = BusinessKpis(store, lambda: None, journeys=lambda service, name: journey)
        published = state(3, v1=["http://127.0.0.1:18001"], v2=["http://127.0.0.1:18002", "http://127.0.0.1:18003"])
        await kpis.on_environment_state(Envelope.new(published, "releasegate/deployer"))
        result = await kpis.check(fake_request(synthetic=SPEC))
        assert result.verdict is Verdict.PASS
        assert ran == ["http://127.0.0.1:18002", "http://127.0.0.1:18003"]

    async def test_before_the_deployer_published_the_candidate_the_check_retries_then_ends_inconclusive(self):
        store = FakeKpiStore()
        kpis = BusinessKpis(store, lambda: None, journeys=lambda service, name: None)
        await kpis.on_environment_state(Envelope.new(state(1, v1=["http://127.0.0.1:18001"]), "releasegate/deployer"))
        req = fake_request(synthetic=SPEC)
        with pytest.raises(TransientError) as waiting:
            await kpis.check(req)
        assert "no serving instance of v2 in staging published by the deployer" in str(waiting.value)
        window = Window(req.window_start, req.window_end, req.deadline)
        retryable = isinstance(waiting.value, RETRYABLE)
        assert not isinstance(
            after_error(window, waiting.value, attempt=1, retryable=retryable, now=req.window_end), Finish
        )
        last = after_error(window, waiting.value, attempt=9, retryable=retryable, now=req.deadline)
        assert isinstance(last, Finish) and last.result.verdict is Verdict.INCONCLUSIVE

    async def test_an_older_or_repeated_state_never_replaces_a_newer_one(self):
        store = FakeKpiStore()
        kpis = BusinessKpis(store, lambda: None)
        for published in (
            state(7, v2=["http://127.0.0.1:18007"]),
            state(6, v2=["http://127.0.0.1:18006"]),
            state(7, v2=["http://127.0.0.1:18099"]),
        ):
            await kpis.on_environment_state(Envelope.new(published, "releasegate/deployer"))
        assert await store.targets("shop", "staging", "v2") == ["http://127.0.0.1:18007"]
        await kpis.on_environment_state(Envelope.new(state(8), "releasegate/deployer"))
        assert await store.targets("shop", "staging", "v2") == []


def test_endpoints_are_those_of_the_asked_version_only():
    published = state(1, v1=["http://127.0.0.1:1"], v2=["http://127.0.0.1:2"])
    assert endpoints_of(published, "v2") == ["http://127.0.0.1:2"]
    assert endpoints_of(published, "v3") == []
