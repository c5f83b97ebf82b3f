"""The inventory-latency check on fake requests and fake latencies: no Kafka."""

import asyncio
import random
import uuid
from types import SimpleNamespace

from contracts.cloudevents import Envelope, encode
from contracts.events import InventoryConfirmed, InventoryReserved
from releasegate_sdk import Verdict
from releasegate_sdk.testing import fake_request

from .. import check as module


def latencies(n: int, median_ms: float, seed: int) -> list[float]:
    """Reservation → confirmation latencies with a long right tail, as a payment call plus a commit have."""
    rng = random.Random(seed)
    return [median_ms * rng.lognormvariate(0, 0.35) for _ in range(n)]


def judge(monkeypatch, candidate: list[float], stable: list[float], **request):
    async def fake_latencies(req):
        return {"v5": candidate, "v1": stable}

    monkeypatch.setattr(module, "confirmation_latencies", fake_latencies)
    request = {"environment": "production", "candidate_version": "v5", "stable_version": "v1", **request}
    return asyncio.run(module.check(fake_request(**request)))


class TestInventoryLatencyCheck:
    def test_passes_when_the_candidate_confirms_as_fast_as_stable(self, monkeypatch):
        for seed in range(20):
            result = judge(monkeypatch, latencies(40, 12, seed), latencies(300, 12, 1000 + seed))
            assert result.verdict is Verdict.PASS, result.reason
        assert (
            result.reason.startswith("no clear slowdown: p95 ")
            and "(40 confirmations of v5, 300 of v1)" in result.reason
        )

    def test_fails_when_the_candidate_p95_is_clearly_worse(self, monkeypatch):
        result = judge(monkeypatch, latencies(40, 24, 1), latencies(300, 12, 2))
        assert result.verdict is Verdict.FAIL and result.reason.startswith("reservations confirm clearly slower")
        p95, share = result.kpis()
        assert p95.candidate > 1.25 * p95.baseline and share.candidate > 0.3

    def test_a_few_milliseconds_on_a_fast_confirmation_are_not_a_regression(self, monkeypatch):
        result = judge(monkeypatch, [v + 3 for v in latencies(60, 4, 3)], latencies(300, 4, 4))
        assert result.verdict is Verdict.PASS, result.reason

    def test_a_single_slow_outlier_is_not_a_regression(self, monkeypatch):
        candidate = latencies(40, 12, 5)
        result = judge(monkeypatch, candidate[:-1] + [400.0], latencies(300, 12, 6))
        assert result.verdict is Verdict.PASS, result.reason

    def test_is_inconclusive_with_too_few_confirmations_of_either_version(self, monkeypatch):
        assert judge(monkeypatch, latencies(19, 12, 7), latencies(300, 12, 8)).verdict is Verdict.INCONCLUSIVE
        result = judge(monkeypatch, latencies(40, 12, 9), [])
        assert result.verdict is Verdict.INCONCLUSIVE
        assert result.reason == "40 confirmations of v5, 0 of v1 during the window; need 20 of each"

    def test_is_inconclusive_without_a_stable_version(self, monkeypatch):
        result = judge(monkeypatch, latencies(40, 12, 10), latencies(300, 12, 11), stable_version=None)
        assert result.verdict is Verdict.INCONCLUSIVE


class TestExceedanceTest:
    def test_gives_the_exact_chances_of_small_cases(self):
        assert module.exceedance_p_value([5.0], [3.0], 3.0) == 0.5  # one each: the candidate's is larger half the time
        assert module.exceedance_p_value([1.0, 2.0], [3.0, 4.0], 4.0) == 1.0  # none above: certain
        assert module.exceedance_p_value([5.0, 6.0], [3.0, 4.0], 4.0) == 1 / 6  # both above the top of two: 1/C(4,2)

    def test_rarely_flags_a_candidate_that_confirms_like_stable(self):
        flagged = 0
        for seed in range(300):
            candidate, stable = latencies(30, 12, seed), latencies(30, 12, 10_000 + seed)
            flagged += module.exceedance_p_value(candidate, stable, module.percentile(stable, 0.95)) < module.ALPHA
        assert flagged <= 6  # α = 1%: about 3 in 300


def record(event_type, version: str, tenant: str, latency_ms: float, environment: str = "production"):
    event = event_type(
        version=version,
        environment=environment,
        tenant=tenant,
        instance="s1",
        checkout_id=str(uuid.uuid4()),
        amount_cents=1900,
        currency="USD",
        latency_ms=latency_ms,
    )
    _, value, headers = encode(Envelope.new(event, f"shop/{environment}/s1", tenant=tenant))
    return SimpleNamespace(headers=headers, value=value, timestamp=0)


class TestConfirmationLatencies:
    def test_keeps_confirmations_of_both_versions_and_the_candidates_only_from_the_steps_tenants(self, monkeypatch):
        records = [
            record(InventoryConfirmed, "v5", "initech", 11.0),
            record(InventoryConfirmed, "v5", "acme", 12.0),
            record(InventoryConfirmed, "v1", "acme", 13.0),
            record(InventoryConfirmed, "v1", "initech", 14.0),
            record(InventoryReserved, "v5", "initech", 1.0),
            record(InventoryConfirmed, "v4", "initech", 15.0),
            record(InventoryConfirmed, "v5", "initech", 16.0, environment="staging"),
            SimpleNamespace(headers=[("ce_type", InventoryConfirmed.event_type.encode())], value=b"{", timestamp=0),
        ]

        async def fake_read(bootstrap, topic, start, end):
            return records

        monkeypatch.setattr(module, "read_window", fake_read)
        req = fake_request(environment="production", candidate_version="v5", stable_version="v1", tenants=["initech"])
        assert asyncio.run(module.confirmation_latencies(req)) == {"v5": [11.0], "v1": [13.0, 14.0]}
