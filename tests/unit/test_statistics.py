"""Sequential tests on known distributions: false-rollback rate across repeated looks, power on known shifts."""

import random

from releasegate_sdk.statistics import Decision, latency_rank, mann_whitney_auc, proportions

ALPHA, BETA = 0.05, 0.05


def sequential_proportions(rng, p_canary, p_base, tolerance, looks=20, step=25, ratio=9):
    """Look every `step` canary samples (baseline gets `ratio` times more, as at a 10% canary)."""
    sc = tc = sb = tb = 0
    for _ in range(looks):
        for _ in range(step):
            tc += 1
            sc += rng.random() < p_canary
        for _ in range(step * ratio):
            tb += 1
            sb += rng.random() < p_base
        result = proportions(sc, tc, sb, tb, tolerance, ALPHA, BETA)
        if result.decision is not Decision.NONE:
            return result.decision, tc
    return Decision.NONE, tc


class TestProportionsSequentially:
    def test_identical_rates_are_rarely_rolled_back_despite_twenty_looks(self):
        rng = random.Random(7)
        runs = [sequential_proportions(rng, 0.97, 0.97, tolerance=0.0)[0] for _ in range(400)]
        assert runs.count(Decision.FAIL) / len(runs) <= ALPHA

    def test_a_two_point_drop_within_a_two_point_tolerance_is_not_rolled_back(self):
        rng = random.Random(11)
        runs = [sequential_proportions(rng, 0.95, 0.97, tolerance=0.02)[0] for _ in range(400)]
        assert runs.count(Decision.FAIL) / len(runs) <= ALPHA

    def test_a_large_regression_is_caught_early(self):
        rng = random.Random(3)
        runs = [sequential_proportions(rng, 0.50, 0.97, tolerance=0.02) for _ in range(200)]
        assert all(d is Decision.FAIL for d, _ in runs)
        assert max(n for _, n in runs) <= 75

    def test_a_seven_point_drop_is_detected_with_high_power_within_a_thousand_checkouts(self):
        rng = random.Random(5)
        runs = [sequential_proportions(rng, 0.90, 0.97, tolerance=0.02, looks=40)[0] for _ in range(200)]
        assert runs.count(Decision.FAIL) / len(runs) >= 0.95

    def test_healthy_canary_passes_early_when_the_evidence_is_strong(self):
        rng = random.Random(9)
        runs = [sequential_proportions(rng, 0.97, 0.97, tolerance=0.05)[0] for _ in range(100)]
        assert runs.count(Decision.PASS) / len(runs) >= 0.9

    def test_the_result_explains_itself(self):
        r = proportions(40, 100, 970, 1000, 0.02, ALPHA, BETA)
        assert r.decision is Decision.FAIL and round(r.estimate, 2) == -0.57 and r.boundary == -0.02
        assert "mSPRT" in r.test and "1/α = 20" in r.rule and r.statistic >= 20


def lognormal(rng, n, scale=1.0):
    return [scale * rng.lognormvariate(3.0, 0.5) for _ in range(n)]


class TestLatencyRankSequentially:
    def test_mann_whitney_auc_handles_ties(self):
        assert mann_whitney_auc([1, 2], [1, 2]) == 0.5
        assert mann_whitney_auc([3, 4], [1, 2]) == 1.0

    def test_identical_latency_distributions_are_rarely_rolled_back(self):
        rng = random.Random(21)
        fails = 0
        for _ in range(100):
            canary, base = [], []
            for _ in range(10):
                canary += lognormal(rng, 20)
                base += lognormal(rng, 100)
                if latency_rank(canary, base, 0.0, ALPHA, BETA).decision is Decision.FAIL:
                    fails += 1
                    break
        assert fails / 100 <= ALPHA

    def test_thirty_percent_slower_canary_is_detected(self):
        rng = random.Random(22)
        detected = 0
        for _ in range(50):
            canary, base = [], []
            for _ in range(10):
                canary += lognormal(rng, 20, scale=1.3)
                base += lognormal(rng, 100)
                if latency_rank(canary, base, 0.05, ALPHA, BETA).decision is Decision.FAIL:
                    detected += 1
                    break
        assert detected / 50 >= 0.9
