"""Sequential tests on known distributions: false-rollback rate across repeated looks, power on known shifts."""

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from releasegate_sdk.statistics import (
    Decision,
    Stratum,
    detect_drop,
    evidence_needed,
    fixed_horizon,
    latency_rank,
    mann_whitney_auc,
    proportions,
)

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

    def test_mann_whitney_auc_equals_the_brute_force_count_on_random_data_with_ties(self):
        rng = random.Random(23)
        for _ in range(50):
            canary = [rng.randint(0, 20) / 2 for _ in range(rng.randint(1, 40))]
            base = [rng.randint(0, 20) / 2 for _ in range(rng.randint(1, 40))]
            brute = sum((c > b) + 0.5 * (c == b) for c in canary for b in base) / (len(canary) * len(base))
            assert math.isclose(mann_whitney_auc(canary, base), brute, rel_tol=1e-12)


# --- detect_drop: the SPRT tuned to the smallest drop to catch (detect 0.02 at power 0.9, α 0.05) ------------------

DETECT, POWER = 0.02, 0.9
STEP, RATIO, LOOKS = 10, 3, 300  # a look after every 10 candidate samples (30 baseline), up to 3,000 candidate ones


@dataclass(frozen=True)
class Segment:
    """One segment (tenant): its share of each side's traffic and its success rate on each side."""

    share_c: float
    rate_c: float
    share_b: float
    rate_b: float


def one(rate_c: float, rate_b: float) -> tuple[tuple[str, Segment], ...]:
    return (("all", Segment(1.0, rate_c, 1.0, rate_b)),)


def looks_at(rng: random.Random, segments: tuple[tuple[str, Segment], ...]) -> Iterator[dict[str, Stratum]]:
    """The cumulative strata at each look: every batch brings each segment its share of the batch on each side."""
    counts = {name: [0, 0, 0, 0] for name, _ in segments}
    for _ in range(LOOKS):
        for name, s in segments:
            nc, nb = round(s.share_c * STEP), round(s.share_b * STEP * RATIO)
            c = counts[name]
            c[0] += sum(rng.random() < s.rate_c for _ in range(nc))
            c[1] += nc
            c[2] += sum(rng.random() < s.rate_b for _ in range(nb))
            c[3] += nb
        yield {name: Stratum(*c) for name, c in counts.items()}


def pooled(strata: dict[str, Stratum]) -> dict[str, Stratum]:
    """The same data as one stratum: what a test that ignores the segments sees."""
    s = strata.values()
    return {
        "all": Stratum(
            sum(x.successes_c for x in s),
            sum(x.trials_c for x in s),
            sum(x.successes_b for x in s),
            sum(x.trials_b for x in s),
        )
    }


@cache
def simulate(seed: int, segments: tuple[tuple[str, Segment], ...], runs: int, pool: bool = False):
    """(decision, candidate samples) of each run: the first decision, as the verifier stops at it, or none after
    the last look. The same seed gives the same data, so stratified and pooled runs are paired."""
    rng = random.Random(seed)
    outcomes = []
    for _ in range(runs):
        outcome = (Decision.NONE, STEP * LOOKS)
        for strata in looks_at(rng, segments):
            test = detect_drop(pooled(strata) if pool else strata, DETECT, ALPHA, POWER)
            if test.decision is not Decision.NONE:
                outcome = (test.decision, test.samples)
                break
        outcomes.append(outcome)
    return outcomes


def share(outcomes, decision: Decision) -> float:
    return sum(d is decision for d, _ in outcomes) / len(outcomes)


def mean_samples(outcomes, decision: Decision | None = None) -> float:
    samples = [n for d, n in outcomes if decision is None or d is decision]
    return sum(samples) / len(samples)


class TestDetectDrop:
    def test_identical_rates_are_rarely_rolled_back_however_many_looks(self):
        runs = simulate(31, one(0.97, 0.97), 2000)
        assert share(runs, Decision.FAIL) <= ALPHA
        assert share(runs, Decision.PASS) >= 0.9  # and it does look: most runs end in a pass, not the horizon

    def test_the_designed_drop_is_caught_with_the_power_asked_sooner_than_a_fixed_horizon(self):
        runs = simulate(32, one(0.95, 0.97), 1000)
        assert share(runs, Decision.FAIL) >= 0.8
        assert mean_samples(runs, Decision.FAIL) < fixed_horizon(0.97, DETECT, ALPHA, POWER, RATIO)

    def test_a_drop_far_larger_than_the_one_to_catch_fails_at_once(self):
        # tuned to 2 points, the test must still read 20 points as a drop (with each hypothesis its own variance,
        # the likelihood ratio once fell for such drops and passed most of them)
        for segments in (one(0.77, 0.97), (("a", Segment(0.5, 0.77, 0.5, 0.97)), ("b", Segment(0.5, 0.97, 0.5, 0.97)))):
            runs = simulate(35, segments, 300)
            assert share(runs, Decision.FAIL) == 1.0 and mean_samples(runs) <= 200

    def test_a_different_traffic_mix_is_not_a_regression(self):
        # the candidate serves mostly the weak tenant (80%), stable mostly the strong one; no drop within either
        mix = (("strong", Segment(0.2, 0.99, 0.8, 0.99)), ("weak", Segment(0.8, 0.90, 0.2, 0.90)))
        assert share(simulate(33, mix, 1000), Decision.FAIL) <= ALPHA
        assert share(simulate(33, mix, 200, pool=True), Decision.FAIL) >= 0.9  # pooled: 0.918 vs 0.972 overall

    def test_a_drop_in_one_segment_is_caught_sooner_with_segments_than_pooled(self):
        # one tenant of three, with 20% of the traffic, drops 10 points: 2 points overall, the drop to catch
        segments = (
            ("a", Segment(0.4, 0.97, 0.4, 0.97)),
            ("b", Segment(0.4, 0.97, 0.4, 0.97)),
            ("c", Segment(0.2, 0.87, 0.2, 0.97)),
        )
        stratified, pooled_runs = simulate(34, segments, 500), simulate(34, segments, 500, pool=True)
        assert share(stratified, Decision.FAIL) >= share(pooled_runs, Decision.FAIL) >= 0.8
        assert mean_samples(stratified, Decision.FAIL) < 0.85 * mean_samples(pooled_runs, Decision.FAIL)

    def test_evidence_needed_agrees_with_simulation(self):
        need = evidence_needed(0.97, DETECT, ALPHA, POWER, RATIO)
        dropped, healthy = simulate(32, one(0.95, 0.97), 1000), simulate(31, one(0.97, 0.97), 2000)
        assert 0.65 * need.if_dropped <= mean_samples(dropped) <= 1.35 * need.if_dropped
        assert 0.65 * need.if_healthy <= mean_samples(healthy) <= 1.35 * need.if_healthy
        assert need.if_dropped < need.fixed == fixed_horizon(0.97, DETECT, ALPHA, POWER, RATIO)

    def test_fixed_horizon_is_the_textbook_sample_size(self):
        # n = (z_{1-α} √a + z_power √b)² / δ², a = p(1-p)(1 + 1/r), b = p'(1-p') + p(1-p)/r, p' = p - δ;
        # z_0.95 = 1.6449, z_0.8 = 0.8416, z_0.9 = 1.2816
        assert fixed_horizon(0.9, 0.05, 0.05, 0.8) == 476  # (1.6449·√0.18 + 0.8416·√0.2175)² / 0.0025 = 475.6
        assert fixed_horizon(0.97, 0.02, 0.05, 0.9, ratio=3) == 994  # (1.6449·√0.0388 + 1.2816·√0.0572)² / 0.0004

    def test_the_result_explains_itself(self):
        test = detect_drop({"all": Stratum(900, 1000, 2910, 3000)}, DETECT, ALPHA, POWER)
        assert test.decision is Decision.FAIL and math.isclose(test.estimate, -0.07)
        assert (test.samples, test.baseline_samples, test.segments, test.rate) == (1000, 3000, 1, 0.97)
        assert test.fail_at == 1 / ALPHA and math.isclose(test.pass_at, 0.1 / 0.95) and test.statistic >= 20
