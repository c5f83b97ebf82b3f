"""Statistics for verifiers: percentiles, the Wilson interval, and sequential canary-vs-baseline tests that stay
valid however often they are looked at. Pure functions; the core verifier and team verifiers use the same ones.

Both tests use a mixture sequential probability ratio test (mSPRT, Johari et al. 2017) on an asymptotically
normal estimate: with estimate θ̂, its variance s² and a normal mixing prior of variance τ² around the
tolerance boundary θ0, Λ = sqrt(s²/(s²+τ²)) · exp(τ²(θ̂−θ0)² / (2 s²(s²+τ²))). Under θ = θ0, P(Λ ever ≥ 1/α)
≤ α across all looks, so checking every interval does not inflate the false-rollback rate the way a fixed
p-value checked every interval does. The decision rule is two one-sided tests against the tolerance:
  fail  when Λ ≥ 1/α and the canary is worse than baseline by more than the tolerance,
  pass  when Λ ≥ 1/β and the canary is better than that boundary (evidence that it is within tolerance),
  otherwise no decision yet (inconclusive at the end of the window).
- Proportions (checkout success, payment authorization): θ = p_canary − p_baseline, boundary −tolerance.
- Latency: a rank statistic, θ = P(canary latency > baseline latency) (Mann–Whitney AUC), boundary
  0.5 + tolerance, variance (n₁+n₂+1)/(12 n₁ n₂) under no difference.

When the catalog states the smallest regression a rate must catch (`detect`), the rate is judged instead by a
sequential probability ratio test tuned to it (`detect_drop`, Wald 1945): H0 "no drop" against H1 "a drop of
`detect`", on the stratified difference (segments such as tenants weighted by the candidate's traffic, so a
different traffic mix is not a regression). Its likelihood ratio is a martingale under H0, so P(Λ ever ≥ 1/α) ≤ α
however often it is looked at; tuned to the effect, it needs on average fewer samples than the fixed-horizon test
with the same α and power (`fixed_horizon`). A drop concentrated in one segment is seen sooner by a test on that
segment alone: Λ is the mixture ½ Λ_all + ½ mean(Λ_segment), still a martingale under H0. It passes when every
component's Λ ≤ β/(1−α) (evidence of no drop as large as `detect`) and says how much evidence a decision needs
(`evidence_needed`), so a window too short for the traffic ends inconclusive with the numbers, never a pass.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from statistics import NormalDist


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank q-quantile (0 < q <= 1) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def wilson(p: float, n: int, z: float = 3.29) -> tuple[float, float]:
    """Wilson score interval of a proportion p observed over n trials (z = 3.29: two-sided 99.9%)."""
    if n == 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


class Decision(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NONE = "none"


@dataclass(frozen=True)
class TestResult:
    decision: Decision
    test: str
    estimate: float
    boundary: float
    statistic: float
    rule: str


def log_msprt(estimate: float, variance: float, boundary: float, tau2: float) -> float:
    """log Λ of the normal mixture SPRT for an estimate with the given variance, centred on `boundary`."""
    if variance <= 0:
        return math.inf if estimate != boundary else 0.0
    return 0.5 * math.log(variance / (variance + tau2)) + tau2 * (estimate - boundary) ** 2 / (
        2 * variance * (variance + tau2)
    )


def _decide(
    test: str,
    estimate: float,
    variance: float,
    boundary: float,
    worse_is_higher: bool,
    alpha: float,
    beta: float,
    tau2: float,
) -> TestResult:
    log_lambda = log_msprt(estimate, variance, boundary, tau2)
    worse = estimate > boundary if worse_is_higher else estimate < boundary
    direction = ">" if worse_is_higher else "<"
    rule = (
        f"fail if Λ ≥ 1/α = {1 / alpha:.0f} and estimate {direction} {boundary:.4g}; "
        f"pass if Λ ≥ 1/β = {1 / beta:.0f} on the other side"
    )
    statistic = math.exp(min(log_lambda, 700.0))
    if worse and log_lambda >= math.log(1 / alpha):
        return TestResult(Decision.FAIL, test, estimate, boundary, statistic, rule)
    if not worse and log_lambda >= math.log(1 / beta):
        return TestResult(Decision.PASS, test, estimate, boundary, statistic, rule)
    return TestResult(Decision.NONE, test, estimate, boundary, statistic, rule)


def proportions(
    successes_c: int,
    trials_c: int,
    successes_b: int,
    trials_b: int,
    tolerance: float,
    alpha: float,
    beta: float,
    tau: float = 0.05,
) -> TestResult:
    """Canary proportion vs baseline proportion, failing on a drop larger than `tolerance` (absolute)."""
    pc, pb = successes_c / trials_c, successes_b / trials_b
    # Pooled-with-prior variance keeps the test sane at 0% or 100% observed rates.
    vc = (successes_c + 1) * (trials_c - successes_c + 1) / (trials_c + 2) ** 3
    vb = (successes_b + 1) * (trials_b - successes_b + 1) / (trials_b + 2) ** 3
    return _decide("mSPRT on difference of proportions", pc - pb, vc + vb, -tolerance, False, alpha, beta, tau * tau)


def mann_whitney_auc(canary: Sequence[float], baseline: Sequence[float]) -> float:
    """P(canary > baseline) + ½ P(tie), from both sorted samples in O((n+m) log(n+m))."""
    base = sorted(baseline)
    below = equal = 0.0
    for value in canary:
        lo = bisect_left(base, value)
        below += lo
        equal += bisect_right(base, value, lo) - lo
    return (below + equal / 2) / (len(canary) * len(base))


def auc_test(auc: float, n1: int, n2: int, tolerance: float, alpha: float, beta: float, tau: float = 0.1) -> TestResult:
    """The latency test on an AUC computed elsewhere (the judge benchmark keeps it incrementally)."""
    variance = (n1 + n2 + 1) / (12 * n1 * n2)
    return _decide("mSPRT on Mann–Whitney AUC", auc, variance, 0.5 + tolerance, True, alpha, beta, tau * tau)


def latency_rank(
    canary: Sequence[float], baseline: Sequence[float], tolerance: float, alpha: float, beta: float, tau: float = 0.1
) -> TestResult:
    """Canary latencies vs baseline by rank: fails when P(canary slower) exceeds 0.5 + tolerance."""
    return auc_test(mann_whitney_auc(canary, baseline), len(canary), len(baseline), tolerance, alpha, beta, tau)


# --- A sequential test tuned to the smallest drop that must be caught -------------------------------------------


@dataclass(frozen=True)
class Stratum:
    """One segment's successes and trials on each side (candidate, baseline)."""

    successes_c: int
    trials_c: int
    successes_b: int
    trials_b: int


@dataclass(frozen=True)
class DropTest:
    """`detect_drop`'s result: the decision, the stratified estimate and what a decision needs."""

    decision: Decision
    estimate: float  # stratified candidate − baseline difference
    statistic: float  # Λ, the mixture likelihood ratio of "a drop of `detect`" against "no drop"
    samples: int  # candidate trials in the compared segments
    baseline_samples: int  # baseline trials in them
    segments: int  # how many were compared
    rate: float  # stable's rate at the candidate's segment mix (what the candidate should reach)
    worst_segment: str | None  # the segment with the largest Λ, when there are several
    fail_at: float  # Λ ≥ this fails (1/α)
    pass_at: float  # every component's Λ ≤ this passes (β/(1−α))

    @property
    def test(self) -> str:
        return "SPRT for a drop of the stated size (stratified)"


def _pooled(x: int, n: int, y: int, m: int) -> float:
    return (x + y + 1) / (n + m + 2)


MIN_EXPECTED_FAILURES = 5.0
"""A component of `detect_drop` counts once its candidate side expects this many failures at the pooled rate: below
it a rate near 100% is too skewed for the normal likelihood (two failures in ten Visa checkouts would read as a
drop). A real drop brings it sooner: its failures lower the pooled rate."""


def _normal_enough(trials: int, pooled: float) -> bool:
    return trials * (1 - pooled) >= MIN_EXPECTED_FAILURES


_Z = NormalDist()


def _variance_if_dropped(base: float, drop: float, trials_c: int, trials_b: int) -> float:
    """Variance of candidate − stable if the candidate's rate were `drop` below stable's."""
    dropped = min(max(base - drop, 1e-3), 1 - 1e-3)
    return dropped * (1 - dropped) / trials_c + base * (1 - base) / trials_b


def _log_lr(diff: float, variance0: float, variance1: float, detect: float) -> float:
    """log of N(−detect, V) / N(0, V) at the observed difference, (−detect·diff − detect²/2) / V, with V the larger
    of the variances under either hypothesis: near 100% a lower rate varies more, and with V₀ the test falls
    short of the power asked. One V for both keeps Λ growing with the drop (with each its own, a drop far larger
    than `detect` would look less like H1 than like H0, and pass)."""
    return (-detect * diff - detect * detect / 2) / max(variance0, variance1)


def detect_drop(strata: dict[str, Stratum], detect: float, alpha: float, power: float) -> DropTest:
    """Wald's SPRT of "no drop" against "a drop of `detect`" in candidate − baseline, stratified over the segments
    both sides have samples in (weights: the candidate's share of its trials in each), mixed with one SPRT per
    segment tuned to the drop in that segment alone that costs `detect` overall. The variance is the larger of
    the pooled one (H0) and that of stable's rate beside the dropped one (H1); both smoothed, so a 100% observed
    rate does not make them zero."""
    compared = {k: s for k, s in strata.items() if s.trials_c > 0 and s.trials_b > 0}
    n = sum(s.trials_c for s in compared.values())
    fail_at, pass_at = 1 / alpha, (1 - power) / (1 - alpha)
    if n == 0:
        return DropTest(Decision.NONE, 0.0, 1.0, 0, 0, 0, 0.0, None, fail_at, pass_at)
    diff = variance0 = variance1 = 0.0
    segments: dict[str, float] = {}
    for key, s in compared.items():
        w = s.trials_c / n
        pooled = _pooled(s.successes_c, s.trials_c, s.successes_b, s.trials_b)
        base = _pooled(s.successes_b, s.trials_b, 0, 0)
        v0 = pooled * (1 - pooled) * (1 / s.trials_c + 1 / s.trials_b)
        d = s.successes_c / s.trials_c - s.successes_b / s.trials_b
        diff += w * d
        variance0 += w * w * v0
        variance1 += w * w * _variance_if_dropped(base, detect, s.trials_c, s.trials_b)
        if len(compared) > 1 and _normal_enough(s.trials_c, pooled):
            drop = min(detect / w, max(base, detect))
            segments[key] = _log_lr(d, v0, _variance_if_dropped(base, drop, s.trials_c, s.trials_b), drop)
    m = sum(s.trials_b for s in compared.values())
    pooled_all = _pooled(
        sum(s.successes_c for s in compared.values()), n, sum(s.successes_b for s in compared.values()), m
    )
    overall = _log_lr(diff, variance0, variance1, detect) if _normal_enough(n, pooled_all) else 0.0
    components = [overall, *segments.values()]
    if segments:  # log(½ Λ_all + ½ mean Λ_s), computed stably
        top = max(components)
        mix = 0.5 * math.exp(overall - top) + 0.5 * sum(math.exp(x - top) for x in segments.values()) / len(segments)
        log_lambda = top + math.log(mix)
    else:
        log_lambda = overall
    rate = sum(s.trials_c / n * s.successes_b / s.trials_b for s in compared.values())  # stable at the candidate's mix
    worst = max(segments, key=segments.__getitem__) if segments else None
    if log_lambda >= math.log(fail_at):
        decision = Decision.FAIL
    elif max(components) <= math.log(pass_at):
        decision = Decision.PASS
    else:
        decision = Decision.NONE
    return DropTest(
        decision, diff, math.exp(min(log_lambda, 700.0)), n, m, len(compared), rate, worst, fail_at, pass_at
    )


def _unit_variances(rate: float, detect: float, ratio: float) -> tuple[float, float]:
    """Variance of candidate − stable times the candidate's samples: with no drop, and with a drop of `detect`."""
    dropped = min(max(rate - detect, 1e-3), 1 - 1e-3)
    return rate * (1 - rate) * (1 + 1 / ratio), dropped * (1 - dropped) + rate * (1 - rate) / ratio


def fixed_horizon(rate: float, detect: float, alpha: float, power: float, ratio: float = 1.0) -> int:
    """Candidate samples of the one-sided fixed-horizon z-test of two proportions with level α and the given power
    against a drop of `detect` from `rate`, with `ratio` baseline samples per candidate sample (the textbook
    formula, each hypothesis with its variance): the oracle that knows the effect."""
    a, b = _unit_variances(rate, detect, ratio)
    z = _Z.inv_cdf(1 - alpha) * math.sqrt(a) + _Z.inv_cdf(power) * math.sqrt(b)
    return math.ceil(z * z / (detect * detect))


@dataclass(frozen=True)
class Evidence:
    """Candidate samples a `detect_drop` decision needs on average (Wald's approximations, no overshoot)."""

    if_dropped: int  # expected samples to a rollback when the drop is `detect`
    if_healthy: int  # expected samples to a pass when there is no drop
    fixed: int  # the fixed-horizon test with the same α and power

    @property
    def to_decide(self) -> int:
        return max(self.if_dropped, self.if_healthy)


def evidence_needed(rate: float, detect: float, alpha: float, power: float, ratio: float = 1.0) -> Evidence:
    """The power calculation the verifier shows and bases `inconclusive` on: expected candidate samples for
    `detect_drop` to decide either way at this baseline `rate`, with `ratio` baseline samples per candidate one."""
    rate = min(max(rate, 1e-3), 1 - 1e-3)
    a, b = _unit_variances(rate, detect, ratio)
    beta = 1 - power
    log_a, log_b = math.log(1 / alpha), math.log(beta / (1 - alpha))
    # Wald: E[log Λ] at the decision over its drift per candidate sample, δ²/(2V) with the larger of the two unit
    # variances (with the smaller, simulation takes about 40% longer near 100%: the plug-in variances and the
    # overshoot at discrete looks)
    drift = detect * detect / (2 * max(a, b))
    dropped = (power * log_a + beta * log_b) / drift
    healthy = -((1 - alpha) * log_b + alpha * log_a) / drift
    return Evidence(math.ceil(dropped), math.ceil(healthy), fixed_horizon(rate, detect, alpha, power, ratio))
