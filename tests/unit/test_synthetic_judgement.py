"""Synthetic journeys: per-tenant success decides, per-step figures are reported."""

from dataclasses import dataclass, field

import pytest

from contracts.events import SyntheticJourneys, Verdict
from services.verifier import synthetic
from services.verifier.domain import VerifierError

SPEC = SyntheticJourneys(
    journey="checkout",
    tenants=["acme", "globex"],
    profiles=["visa", "amex"],
    journeys_per_tenant=4,
    min_success_rate=0.75,
)


@dataclass
class Step:
    name: str
    status: int | None
    latency_ms: float
    error: str | None = None


@dataclass
class Result:
    tenant: str
    success: bool
    reason: str | None = None
    steps: list = field(default_factory=list)


async def fake_journey(client, base_url, tenant, profile):
    ok = not (tenant == "globex" and profile == "amex")
    return Result(
        tenant,
        ok,
        None if ok else "checkout: 402 invalid_card",
        [Step("browse", 200, 5.0), Step("checkout", 201 if ok else 402, 20.0)],
    )


class TestSyntheticJourneys:
    async def test_a_tenant_whose_journeys_fail_fails_the_preview_with_reasons(self):
        verdict, reason, kpis = await synthetic.run(SPEC, ["http://a", "http://b"], fake_journey)
        assert verdict is Verdict.FAIL and "globex: 50% of 4 journeys" in reason and "invalid_card" in reason
        acme = next(k for k in kpis if k.name == "journey_success[acme]")
        assert (acme.candidate, acme.candidate_samples, acme.verdict) == (1.0, 4, Verdict.PASS)
        assert "p95 20 ms" in next(k for k in kpis if k.name == "step[checkout]").rule

    async def test_no_serving_instance_is_inconclusive(self):
        assert (await synthetic.run(SPEC, [], fake_journey))[0] is Verdict.INCONCLUSIVE

    def test_unknown_journey_script_is_a_clear_error(self):
        with pytest.raises(VerifierError, match="cannot be loaded"):
            synthetic.load_journey("no.such.module:journey")

    def test_the_shop_journey_script_loads(self):
        assert synthetic.load_journey("shop.synthetic:journey").__name__ == "journey"
