"""KPI judgement: the verdict, its numbers and its rule."""

import re

from contracts.events import KpiThreshold, PromQuery, Verdict
from releasegate_sdk.statistics import evidence_needed
from services.verifier.adapters.prometheus import PrometheusProvider
from services.verifier.domain import Counts, Sample, judge, judge_kpi, measure, percentile

THRESHOLDS = {
    "checkout_success_rate": KpiThreshold(min=0.85, max_drop=0.08),
    "payment_authorization_rate": KpiThreshold(min=0.85, max_drop=0.08),
    "http_error_rate": KpiThreshold(max=0.05),
    "latency_p95_ms": KpiThreshold(max=1500),
}


def healthy(n: int = 100) -> Counts:
    return Counts(
        checkout_succeeded=n - 2,
        checkout_failed=2,
        payment_authorized=n - 2,
        payment_declined=2,
        orders=n - 2,
        http_total=4 * n,
        http_5xx=0,
        latencies_ms=[10.0] * (4 * n),
    )


class TestKpiJudgement:
    def test_healthy_candidate_passes_at_window_end_with_its_numbers(self):
        verdict, reason, kpis = judge(THRESHOLDS, healthy(40), healthy(400), 15, final=True)
        assert verdict is Verdict.PASS
        rate = next(k for k in kpis if k.name == "checkout_success_rate")
        assert (rate.candidate, rate.candidate_samples, rate.baseline_samples) == (0.95, 40, 400)

    def test_order_throughput_is_reported_beside_the_judged_kpis(self):
        _, _, kpis = judge(THRESHOLDS, healthy(40), healthy(400), 15, final=True)
        orders = next(k for k in kpis if k.name == "orders_placed")
        assert (orders.candidate, orders.baseline) == (38.0, 398.0) and "not judged" in orders.rule

    def test_payment_regression_fails_before_the_window_ends(self):
        bad = Counts(
            checkout_succeeded=8,
            checkout_failed=12,
            payment_authorized=8,
            payment_declined=12,
            http_total=80,
            latencies_ms=[10.0] * 80,
        )
        verdict, reason, kpis = judge(THRESHOLDS, bad, healthy(400), 15, final=False)
        assert verdict is Verdict.FAIL
        assert "payment_authorization_rate" in reason and "< min 0.85" in reason

    def test_drop_against_baseline_fails_even_above_the_floor(self):
        cand = Counts(
            checkout_succeeded=86,
            checkout_failed=14,
            payment_authorized=99,
            payment_declined=1,
            http_total=400,
            latencies_ms=[10.0] * 400,
        )
        verdict, reason, _ = judge(THRESHOLDS, cand, healthy(1000), 15, final=True)
        assert verdict is Verdict.FAIL and "below baseline" in reason

    def test_too_few_samples_is_inconclusive_never_pass(self):
        verdict, reason, _ = judge(THRESHOLDS, healthy(5), healthy(400), 15, final=True)
        assert verdict is Verdict.INCONCLUSIVE and "needs >= 15" in reason

    def test_no_data_at_all_is_inconclusive(self):
        assert judge(THRESHOLDS, Counts(), Counts(), 15, final=True)[0] is Verdict.INCONCLUSIVE

    def test_open_window_without_failure_keeps_watching(self):
        assert judge(THRESHOLDS, healthy(40), healthy(400), 15, final=False)[0] is None

    def test_missing_baseline_skips_relative_rules_and_says_so(self):
        verdict, _, kpis = judge(THRESHOLDS, healthy(40), Counts(), 15, final=True)
        assert verdict is Verdict.PASS
        assert "comparison with stable skipped" in next(k for k in kpis if k.name == "checkout_success_rate").rule

    def test_latency_p95_and_error_rate_come_from_http_samples(self):
        c = Counts(http_total=100, http_5xx=7, latencies_ms=[float(i) for i in range(1, 101)])
        m = measure(c)
        assert m["latency_p95_ms"] == (95.0, 100) and m["http_error_rate"] == (0.07, 100)
        assert percentile([], 0.95) is None


SEQUENTIAL = {
    "checkout_success_rate": KpiThreshold(min=0.5, tolerance=0.03),
    "payment_authorization_rate": KpiThreshold(min=0.5, tolerance=0.03),
    "latency_p95_ms": KpiThreshold(max=5000, tolerance=0.1),
}


class TestSequentialComparison:
    def test_regression_fails_by_the_sequential_test_and_names_it(self):
        bad = Counts(
            checkout_succeeded=60,
            checkout_failed=40,
            payment_authorized=60,
            payment_declined=40,
            http_total=400,
            latencies_ms=[10.0] * 400,
        )
        verdict, reason, kpis = judge(SEQUENTIAL, bad, healthy(1000), 15, final=False)
        assert verdict is Verdict.FAIL
        rate = next(k for k in kpis if k.name == "checkout_success_rate")
        assert rate.test == "mSPRT on difference of proportions" and rate.statistic >= 20

    def test_healthy_candidate_with_plenty_of_evidence_passes_before_the_window_ends(self):
        verdict, reason, _ = judge(SEQUENTIAL, healthy(600), healthy(6000), 15, final=False)
        assert verdict is Verdict.PASS and reason.startswith("early")

    def test_undecided_comparison_keeps_the_window_open_then_passes_without_evidence_of_regression(self):
        assert judge(SEQUENTIAL, healthy(20), healthy(200), 15, final=False)[0] is None
        verdict, _, kpis = judge(SEQUENTIAL, healthy(20), healthy(200), 15, final=True)
        assert verdict is Verdict.PASS
        assert "no evidence of a regression" in next(k for k in kpis if k.name == "checkout_success_rate").rule

    def test_slower_candidate_fails_the_rank_test(self):
        slow = healthy(300)
        slow.latencies_ms = [30.0] * len(slow.latencies_ms)
        verdict, reason, kpis = judge(SEQUENTIAL, slow, healthy(3000), 15, final=False)
        assert verdict is Verdict.FAIL and "Mann" in next(k for k in kpis if k.name == "latency_p95_ms").test


class TestOtherProviders:
    def _kpi(self, verdict, value=0.0):
        from contracts.events import KpiResult

        return KpiResult(
            name="prometheus:http_5xx_ratio",
            candidate=value,
            baseline=None,
            candidate_samples=1,
            baseline_samples=0,
            verdict=verdict,
            rule="candidate <= 0.05",
            test="PromQL",
        )

    def test_a_failing_prometheus_kpi_fails_the_verdict(self):
        from services.verifier.domain import merge_verdicts

        verdict, reason = merge_verdicts(Verdict.PASS, "ok", [self._kpi(Verdict.FAIL, 0.2)], final=True)
        assert verdict is Verdict.FAIL and "0.2 violates candidate <= 0.05" in reason

    def test_missing_prometheus_data_is_inconclusive_at_the_end_never_pass(self):
        from services.verifier.domain import merge_verdicts

        assert merge_verdicts(Verdict.PASS, "ok", [self._kpi(Verdict.INCONCLUSIVE)], final=False)[0] is None
        assert (
            merge_verdicts(Verdict.PASS, "ok", [self._kpi(Verdict.INCONCLUSIVE)], final=True)[0] is Verdict.INCONCLUSIVE
        )


class TestCheckoutLatency:
    def test_slower_checkouts_fail_the_rank_test_even_when_all_requests_hide_it(self):
        base, cand = healthy(3000), healthy(300)
        base.checkout_latencies_ms = [20.0 + (i % 7) for i in range(3000)]
        cand.checkout_latencies_ms = [27.0 + (i % 7) for i in range(300)]
        thresholds = {"checkout_latency_p95_ms": KpiThreshold(tolerance=0.1)}
        verdict, reason, kpis = judge(thresholds, cand, base, 15, final=False)
        assert verdict is Verdict.FAIL and "Mann" in kpis[0].test


class TestGuardrailsUnderNoise:
    def test_a_rate_just_under_its_floor_on_few_samples_is_not_a_failure(self):
        noisy = Counts(
            checkout_succeeded=15,
            checkout_failed=3,
            payment_authorized=15,
            payment_declined=3,
            http_total=72,
            latencies_ms=[10.0] * 72,
        )
        verdict, _, kpis = judge(THRESHOLDS, noisy, Counts(), 15, final=False)
        assert verdict is None
        assert next(k for k in kpis if k.name == "checkout_success_rate").verdict is Verdict.PASS

    def test_a_rate_clearly_under_its_floor_fails_with_the_bound_in_the_rule(self):
        bad = Counts(
            checkout_succeeded=7,
            checkout_failed=8,
            payment_authorized=7,
            payment_declined=8,
            http_total=60,
            latencies_ms=[10.0] * 60,
        )
        verdict, reason, _ = judge(THRESHOLDS, bad, Counts(), 15, final=False)
        assert verdict is Verdict.FAIL and "upper bound" in reason


class TestLooksWokenByNewData:
    """Looks brought forward by each ingest batch (many a second) may only fail, and only on what stays sound
    when looked at that often; the rest waits for the tick."""

    def test_a_collapsed_rate_fails_at_once(self):
        bad = Counts(
            checkout_succeeded=3, checkout_failed=17, payment_authorized=3, payment_declined=17,
            http_total=80, latencies_ms=[10.0] * 80,
        )  # fmt: skip
        verdict, reason, _ = judge(THRESHOLDS, bad, healthy(400), 15, final=False, woken_by_data=True)
        assert verdict is Verdict.FAIL and "payment_authorization_rate" in reason

    def test_a_latency_percentile_over_its_bound_waits_for_the_tick(self):
        slow = healthy(40)
        slow.latencies_ms = [2000.0] * len(slow.latencies_ms)
        assert judge(THRESHOLDS, slow, healthy(400), 15, final=False, woken_by_data=True)[0] is None
        assert judge(THRESHOLDS, slow, healthy(400), 15, final=False)[0] is Verdict.FAIL  # on the tick

    def test_a_drop_against_stable_by_the_fixed_rule_waits_for_the_tick(self):
        cand = Counts(
            checkout_succeeded=86, checkout_failed=14, payment_authorized=99, payment_declined=1,
            http_total=400, latencies_ms=[10.0] * 400,
        )  # fmt: skip
        assert judge(THRESHOLDS, cand, healthy(1000), 15, final=False, woken_by_data=True)[0] is None

    def test_it_never_passes_even_when_every_sequential_test_did(self):
        tolerant = {"checkout_success_rate": KpiThreshold(tolerance=0.01)}
        verdict, reason, _ = judge(tolerant, healthy(3000), healthy(3000), 15, final=False)
        assert verdict is Verdict.PASS and "early" in reason  # on the tick: strong evidence ends the window
        assert judge(tolerant, healthy(3000), healthy(3000), 15, final=False, woken_by_data=True)[0] is None


def outage(n: int, failed: int) -> Counts:
    """A window in which `failed` of `n` checkouts failed (the shop's database away, say)."""
    return Counts(
        checkout_succeeded=n - failed,
        checkout_failed=failed,
        payment_authorized=n - failed,
        payment_declined=failed,
        http_total=4 * n,
        latencies_ms=[10.0] * (4 * n),
    )


class TestOutagesBothVersionsShare:
    """A guardrail stable breaks too, in the same window, is not the candidate's failure: rolling back would not
    mend it, and a good release would be rolled back for an outage (found by make bench-chaos-live: PostgreSQL,
    which the shop shares, restarted during a good canary's window)."""

    def test_a_guardrail_stable_breaks_too_is_inconclusive_not_a_failure(self):
        verdict, reason, kpis = judge(THRESHOLDS, outage(60, 40), outage(600, 400), 15, final=False)
        assert verdict is None, "the window stays open: the outage may pass"
        rate = next(k for k in kpis if k.name == "checkout_success_rate")
        assert rate.verdict is Verdict.INCONCLUSIVE and "stable breaks it too" in rate.rule
        verdict, reason, _ = judge(THRESHOLDS, outage(60, 40), outage(600, 400), 15, final=True)
        assert verdict is Verdict.INCONCLUSIVE and "not of the candidate" in reason

    def test_the_same_collapse_with_stable_healthy_still_fails(self):
        verdict, reason, _ = judge(THRESHOLDS, outage(60, 40), healthy(600), 15, final=False)
        assert verdict is Verdict.FAIL and "< min 0.85" in reason

    def test_a_candidate_worse_still_than_a_failing_stable_fails(self):
        verdict, reason, _ = judge(THRESHOLDS, outage(100, 90), outage(1000, 300), 15, final=False)
        assert verdict is Verdict.FAIL and "below baseline" in reason

    def test_a_shared_breach_never_passes_even_when_the_comparison_finds_no_regression(self):
        thresholds = {"checkout_success_rate": KpiThreshold(min=0.85, tolerance=0.03)}
        verdict, _, kpis = judge(thresholds, outage(200, 100), outage(2000, 1000), 15, final=True)
        assert verdict is Verdict.INCONCLUSIVE and kpis[0].verdict is Verdict.INCONCLUSIVE


class TestPrometheusOutagesBothVersionsShare:
    QUERY = {"http_5xx_ratio": PromQuery(query='ratio{version="$version"}', max=0.05)}

    @staticmethod
    def provider(ratios: dict[str, float | None]) -> PrometheusProvider:
        class Answering(PrometheusProvider):
            async def value(self, query: str) -> float | None:
                return next(v for version, v in ratios.items() if f'"{version}"' in query)

        return Answering("http://prometheus.invalid")

    async def test_a_bound_stable_breaks_too_is_inconclusive(self):
        (kpi,) = await self.provider({"v2": 0.82, "v1": 0.79}).kpis(self.QUERY, "v2", "production", 30, stable="v1")
        assert kpi.verdict is Verdict.INCONCLUSIVE and kpi.baseline == 0.79
        assert "stable v1 breaks it too" in kpi.rule

    async def test_a_bound_only_the_candidate_breaks_fails(self):
        (kpi,) = await self.provider({"v2": 0.82, "v1": 0.0}).kpis(self.QUERY, "v2", "production", 30, stable="v1")
        assert kpi.verdict is Verdict.FAIL

    async def test_no_data_for_stable_leaves_the_failure_standing(self):
        (kpi,) = await self.provider({"v2": 0.82, "v1": None}).kpis(self.QUERY, "v2", "production", 30, stable="v1")
        assert kpi.verdict is Verdict.FAIL


DETECTING = {"checkout_success_rate": KpiThreshold(min=0.5, detect=0.02)}
SPRT = "SPRT for a drop of the stated size (stratified)"


def checkouts(succeeded: int, total: int, tenants: dict[str, tuple[int, int]] | None = None) -> Counts:
    return Counts(checkout_succeeded=succeeded, checkout_failed=total - succeeded, checkout_segments=tenants or {})


class TestDetectingTheDropToCatch:
    """A rate with `detect` is judged by the SPRT tuned to that drop, stratified by tenant: it fails on a drop,
    passes early on evidence of none, and is otherwise inconclusive with the evidence it has and needs, never a
    pass."""

    def test_a_clear_drop_fails_by_the_sprt_and_names_it(self):
        verdict, reason, kpis = judge(DETECTING, checkouts(900, 1000), checkouts(2910, 3000), 15, final=False)
        assert verdict is Verdict.FAIL and SPRT in reason and "drop to catch 0.02" in reason
        rate = next(k for k in kpis if k.name == "checkout_success_rate")
        assert rate.verdict is Verdict.FAIL and rate.test == SPRT and rate.statistic >= 20

    def test_a_healthy_large_sample_passes_early(self):
        result, decisive = judge_kpi(
            "checkout_success_rate", DETECTING["checkout_success_rate"], Sample(0.97, 2000), Sample(0.97, 6000), 15
        )
        assert result.verdict is Verdict.PASS and decisive and result.rule.startswith("no drop of 0.02")
        verdict, reason, _ = judge(DETECTING, checkouts(1940, 2000), checkouts(5820, 6000), 15, final=False)
        assert verdict is Verdict.PASS and reason.startswith("early")

    def test_a_small_sample_is_inconclusive_at_the_final_look_with_the_evidence_it_needs(self):
        cand, base = checkouts(97, 100), checkouts(291, 300)
        assert judge(DETECTING, cand, base, 15, final=False)[0] is None
        verdict, reason, kpis = judge(DETECTING, cand, base, 15, final=True)
        assert verdict is Verdict.INCONCLUSIVE and kpis[0].verdict is Verdict.INCONCLUSIVE
        need = evidence_needed(0.97, 0.02, 0.05, 0.9, ratio=3)
        assert f"100 candidate samples of the ≈{need.if_dropped} a drop of 0.02 needs" in reason
        assert f"≈{need.if_healthy} to pass without one; fixed-horizon test {need.fixed}" in reason
        assert "/s" not in reason  # no traffic rate without the time the samples took

    def test_with_the_elapsed_time_it_says_how_long_a_decision_takes_at_this_traffic(self):
        verdict, reason, kpis = judge(DETECTING, checkouts(97, 100), checkouts(291, 300), 15, final=True, elapsed_s=50)
        assert verdict is Verdict.INCONCLUSIVE
        traffic, seconds = re.search(r"at ([\d.]+)/s\D*≈(\d+) s", reason).groups()
        need = evidence_needed(0.97, 0.02, 0.05, 0.9, ratio=3)
        assert float(traffic) == 2.0 and int(seconds) == round(need.to_decide / 2)  # 100 samples in 50 s
        # the coordinator's `extend` reads the same figure from the result
        assert kpis[0].needs_seconds == need.to_decide / 2

    def test_a_different_tenant_mix_is_not_a_drop_though_the_pooled_rate_is(self):
        # the candidate serves mostly the weak tenant, stable mostly the strong one; within each, the same rate
        cand = checkouts(9180, 10000, {"weak": (7200, 8000), "strong": (1980, 2000)})
        base = checkouts(29160, 30000, {"weak": (5400, 6000), "strong": (23760, 24000)})
        verdict, reason, kpis = judge(DETECTING, cand, base, 15, final=True)
        assert verdict is not Verdict.FAIL and kpis[0].verdict is not Verdict.FAIL
        assert kpis[0].candidate == 0.918 and kpis[0].baseline == 0.972  # pooled: 5.4 points apart
        pooled_verdict, pooled_reason, _ = judge(
            DETECTING, checkouts(9180, 10000), checkouts(29160, 30000), 15, final=True
        )
        assert pooled_verdict is Verdict.FAIL and SPRT in pooled_reason

    def test_the_rule_names_the_most_suspect_tenant(self):
        cand = checkouts(1880, 2000, {"acme": (960, 1000), "globex": (920, 1000)})
        base = checkouts(5820, 6000, {"acme": (2910, 3000), "globex": (2910, 3000)})
        verdict, reason, _ = judge(DETECTING, cand, base, 15, final=False)
        assert verdict is Verdict.FAIL and "over 2 segments (most suspect: globex)" in reason

    def test_stable_with_too_few_samples_is_inconclusive_never_pass(self):
        verdict, reason, kpis = judge(DETECTING, checkouts(1940, 2000), checkouts(10, 10), 15, final=True)
        assert verdict is Verdict.INCONCLUSIVE and "stable has 10 samples" in reason
        assert kpis[0].verdict is Verdict.INCONCLUSIVE

    def test_where_stable_does_not_serve_beside_the_candidate_the_guardrails_judge_as_without_detect(self):
        # staging: the candidate replaces stable, so there is no drop to measure; the rule says the comparison was
        # skipped, and the guardrail still fails a clearly bad candidate
        verdict, reason, kpis = judge(DETECTING, checkouts(1940, 2000), checkouts(0, 0), 15, final=True)
        assert verdict is Verdict.PASS and "comparison with stable skipped" in kpis[0].rule
        assert judge(DETECTING, checkouts(500, 2000), checkouts(0, 0), 15, final=True)[0] is Verdict.FAIL

    def test_a_look_woken_by_data_fails_on_the_drop_but_never_passes(self):
        dropped, healthy = checkouts(900, 1000), checkouts(1940, 2000)
        assert judge(DETECTING, dropped, checkouts(2910, 3000), 15, final=False, woken_by_data=True)[0] is Verdict.FAIL
        assert judge(DETECTING, healthy, checkouts(5820, 6000), 15, final=False, woken_by_data=True)[0] is None
