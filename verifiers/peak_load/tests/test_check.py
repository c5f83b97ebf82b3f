"""The load gate's judgement on made-up load results (no load, no stack), the validation of `peak_readiness`, and
the check's choice of running the load at all. The catalog's own rules on it: tests/unit/test_catalog_peak.py."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime

import pytest
import yaml
from pydantic import ValidationError

from contracts.events import Verdict
from contracts.peak import PeakReadiness
from releasegate_sdk.testing import fake_request

from .. import check as module
from ..judge import Sample, Saturation, VersionLoad, judge, step_stats

PEAK = {
    "when": "always",
    "profile": {
        "duration_seconds": 10,
        "journeys": {"browse": 8, "checkout": 6},
        "tenants": {"acme": 5, "globex": 3},
        "steps": [1, 2],
    },
    "slo": {"p95_ms": 400, "error_rate": 0.02},
    "expected_peak_rps": 20,
    "min_capacity_ratio": 0.8,
}


def peak(**changes) -> PeakReadiness:
    return PeakReadiness.model_validate({**PEAK, **changes})


def run(
    p: PeakReadiness, version: str, *, served: list[float], ms: list[float], errors: float = 0.0, seed: int = 1
) -> VersionLoad:
    """A version's load run as Locust would record it: per step, `served` of the offered journeys completed (the
    share), answered in about `ms` milliseconds, `errors` of the requests failed."""
    rng, samples = random.Random(seed), []
    length = p.profile.step_seconds
    for i, multiple in enumerate(p.profile.steps):
        for journey, rps in p.profile.journeys.items():
            kinds = ["products"] if journey == "browse" else ["cart", "checkout"]
            count = round(rps * multiple * length * served[i])
            for n in range(count):
                at = i * length + (n + 0.5) * length / count
                for kind in kinds:
                    samples.append(Sample(at, kind, rng.uniform(0.5, 1.0) * ms[i], rng.random() >= errors))
    return VersionLoad(version, step_stats(samples, p), Saturation(3, 0, 12, 180.0, 4))


def verdict(candidate: VersionLoad, stable: VersionLoad | None, p: PeakReadiness, instances: int = 1):
    result = judge(candidate, stable, p, instances)
    return result, {k.name: k for k in result.kpis()}


class TestTheLoadGate:
    def test_passes_a_candidate_that_holds_the_slo_and_stables_capacity(self):
        p = peak()
        result, kpis = verdict(run(p, "v2", served=[1, 1], ms=[60, 90]), run(p, "v1", served=[1, 1], ms=[60, 90]), p)
        assert result.verdict is Verdict.PASS, result.reason
        assert kpis["capacity_rps_per_instance"].candidate == pytest.approx(28, rel=0.05)
        assert kpis["capacity_at_peak_rps"].verdict is Verdict.PASS
        assert "v2: x1: 14.0/14.0 journeys/s" in result.reason and "vs v1's 28.0" in result.reason

    def test_blocks_a_candidate_that_halves_capacity(self):
        # holds the profile itself, but at twice the load serves 60% of it and answers in seconds
        p = peak()
        result, kpis = verdict(
            run(p, "v12", served=[1, 0.6], ms=[300, 2500]), run(p, "v2", served=[1, 1], ms=[60, 90]), p
        )
        assert result.verdict is Verdict.FAIL
        assert "lowers capacity to 50% of v2's" in result.reason
        assert "cannot carry the expected peak (14.0 < 20 journeys/s)" in result.reason
        capacity = kpis["capacity_rps_per_instance"]
        assert capacity.verdict is Verdict.FAIL and capacity.baseline == pytest.approx(28, rel=0.05)
        assert kpis["load_latency_p95_ms"].verdict is Verdict.PASS  # the profile itself was held

    def test_blocks_a_candidate_that_misses_the_slo_under_the_profile(self):
        p = peak()
        result, kpis = verdict(
            run(p, "v12", served=[0.8, 0.5], ms=[900, 3000], errors=0.1), run(p, "v2", served=[1, 1], ms=[60, 90]), p
        )
        assert result.verdict is Verdict.FAIL and "misses the SLO under the profile" in result.reason
        assert kpis["load_throughput_rps"].verdict is Verdict.FAIL
        assert kpis["load_latency_p95_ms"].verdict is Verdict.FAIL
        assert kpis["load_error_rate"].verdict is Verdict.FAIL
        assert "at most (no step within the SLO)" in result.reason

    def test_is_inconclusive_when_stable_misses_the_slo_too(self):
        p = peak()
        slow = run(p, "v1", served=[0.7, 0.5], ms=[900, 3000])
        result, _ = verdict(run(p, "v2", served=[0.7, 0.5], ms=[900, 3000]), slow, p)
        assert result.verdict is Verdict.INCONCLUSIVE and "staging could not carry the load" in result.reason

    def test_more_instances_carry_the_expected_peak(self):
        p = peak(expected_peak_rps=50)
        one, _ = verdict(run(p, "v2", served=[1, 1], ms=[60, 90]), None, p, instances=1)
        two, _ = verdict(run(p, "v2", served=[1, 1], ms=[60, 90]), None, p, instances=2)
        assert one.verdict is Verdict.FAIL and "cannot carry the expected peak" in one.reason
        assert two.verdict is Verdict.PASS and "no stable version serving in staging" in two.reason

    def test_reports_the_saturation_of_the_database_and_the_outbox(self):
        p = peak()
        _, kpis = verdict(run(p, "v2", served=[1, 1], ms=[60, 90]), run(p, "v1", served=[1, 1], ms=[60, 90]), p)
        assert kpis["db_active_sessions_max"].candidate == 3 and kpis["outbox_backlog_max"].candidate == 4
        assert kpis["db_commits_per_s"].baseline == 180

    def test_the_warm_up_of_each_step_is_not_judged(self):
        p = peak(profile={**PEAK["profile"], "steps": [1]})
        slow_start = [Sample(0.1, "products", 5000, True)] * 50 + [Sample(5.0, "products", 50, True)] * 64
        (stats,) = step_stats(slow_start, p)
        assert stats.p95_ms == 50 and stats.requests == 64


class TestThePeakReadinessOfTheCatalog:
    def test_a_window_is_in_its_own_time_zone(self):
        p = peak(
            when="peak_preparation",
            windows=[{"name": "black-friday", "start": "2026-11-27T00:00", "end": "2026-11-28T00:00",
                      "timezone": "America/New_York"}],
        )  # fmt: skip
        assert p.applies(datetime.fromisoformat("2026-11-27T04:59:00+00:00")) is False
        assert p.active_window(datetime.fromisoformat("2026-11-27T05:00:00+00:00")).name == "black-friday"
        assert peak(when="peak_preparation").applies(datetime.fromisoformat("2026-11-27T12:00:00+00:00")) is False

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"profile": {**PEAK["profile"], "journeys": {"search": 3}}}, "browse"),
            ({"profile": {**PEAK["profile"], "journeys": {"browse": 0}}}, "no load at all"),
            ({"profile": {**PEAK["profile"], "steps": [2, 1]}}, "steps must rise"),
            ({"profile": {**PEAK["profile"], "tenants": {"Not A Tenant": 1}}}, "pattern"),
            ({"windows": [{"name": "x", "start": "2026-11-27T00:00", "end": "2026-11-28T00:00",
                           "timezone": "Mars/Olympus"}]}, "unknown IANA time zone"),
            ({"windows": [{"name": "x", "start": "2026-11-28T00:00", "end": "2026-11-27T00:00"}]}, "ends before"),
            ({"windows": [{"name": "x", "start": "2026-11-27T00:00+01:00", "end": "2026-11-28T00:00"}]}, "offset"),
            ({"slo": {"p95_ms": 0, "error_rate": 0.01}}, "greater than 0"),
            ({"min_capacity_ratio": 1.5}, "less than or equal to 1"),
        ],
    )  # fmt: skip
    def test_refuses_a_bad_profile_with_a_clear_error(self, changes, message):
        with pytest.raises(ValidationError, match=message):
            peak(**changes)


class TestTheCheck:
    @pytest.fixture
    def measured(self, monkeypatch, tmp_path) -> list[str]:
        """The versions the check loaded (the load replaced by made-up results), with the catalog in tmp_path."""
        monkeypatch.setenv("RG_CATALOG_DIR", str(tmp_path))
        loaded: list[str] = []

        async def fake_measure(req, p, settings):
            loaded.append(req.candidate_version)
            return run(p, req.candidate_version, served=[1, 1], ms=[60, 90]), run(p, "v1", served=[1, 1], ms=[60, 90])

        monkeypatch.setattr(module, "measure", fake_measure)
        module._verdicts.clear()
        return loaded

    @staticmethod
    def catalog(tmp_path, peak_readiness: dict | None) -> None:
        entry = {"rollout": {"instances": 1}, **({"peak_readiness": peak_readiness} if peak_readiness else {})}
        (tmp_path / "shop.yaml").write_text(yaml.safe_dump(entry))

    def test_passes_at_once_outside_a_peak_preparation_window(self, measured, tmp_path):
        self.catalog(tmp_path, {**PEAK, "when": "peak_preparation"})
        result = asyncio.run(module.check(fake_request(is_final_look=False)))
        assert result.verdict is Verdict.PASS and result.reason.startswith("not in a peak-preparation window")
        assert measured == []

    def test_passes_at_once_for_a_service_without_peak_readiness(self, measured, tmp_path):
        self.catalog(tmp_path, None)
        result = asyncio.run(module.check(fake_request(is_final_look=False)))
        assert result.verdict is Verdict.PASS and "no peak_readiness" in result.reason and measured == []

    def test_loads_when_the_service_asks_always_and_only_once_per_window(self, measured, tmp_path):
        self.catalog(tmp_path, PEAK)
        req = fake_request(is_final_look=False)
        first = asyncio.run(module.check(req))
        again = asyncio.run(module.check(req))
        assert first.verdict is Verdict.PASS
        assert first.reason.startswith("the service asks for the load gate always: ready for peak")
        assert again == first and measured == ["v2"]

    def test_an_invalid_profile_in_the_catalog_is_an_error_not_a_pass(self, measured, tmp_path):
        self.catalog(tmp_path, {**PEAK, "slo": {"p95_ms": -1, "error_rate": 0.01}})
        with pytest.raises(ValueError, match="peak_readiness is invalid"):
            asyncio.run(module.check(fake_request()))
