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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


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


def mann_whitney_auc(canary: list[float], baseline: list[float]) -> float:
    """P(canary > baseline) + ½ P(tie), computed from ranks in O((n+m) log(n+m))."""
    values = sorted([(v, 0) for v in canary] + [(v, 1) for v in baseline])
    rank_sum, i = 0.0, 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1][0] == values[i][0]:
            j += 1
        avg_rank = (i + j) / 2 + 1
        rank_sum += avg_rank * sum(1 for k in range(i, j + 1) if values[k][1] == 0)
        i = j + 1
    n1, n2 = len(canary), len(baseline)
    return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n2)


def latency_rank(
    canary: list[float], baseline: list[float], tolerance: float, alpha: float, beta: float, tau: float = 0.1
) -> TestResult:
    """Canary latencies vs baseline by rank: fails when P(canary slower) exceeds 0.5 + tolerance."""
    n1, n2 = len(canary), len(baseline)
    auc = mann_whitney_auc(canary, baseline)
    variance = (n1 + n2 + 1) / (12 * n1 * n2)
    return _decide("mSPRT on Mann–Whitney AUC", auc, variance, 0.5 + tolerance, True, alpha, beta, tau * tau)
