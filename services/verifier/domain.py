"""KPI computation and judgement, pure: counts in, verdict with its numbers out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from contracts.events import NEEDS_SECONDS_MAX, EnvironmentState, KpiResult, KpiThreshold, Verdict
from releasegate_sdk.statistics import (
    Decision,
    DropTest,
    Stratum,
    TestResult,
    detect_drop,
    evidence_needed,
    latency_rank,
    percentile,
    proportions,
    wilson,
)

INFORMATIONAL = ("orders_placed",)


class VerifierError(Exception):
    """Base error of the verifier."""


@dataclass
class Counts:
    """What one version did in the window."""

    checkout_succeeded: int = 0
    checkout_failed: int = 0
    payment_authorized: int = 0
    payment_declined: int = 0
    orders: int = 0
    http_total: int = 0
    http_5xx: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    checkout_latencies_ms: list[float] = field(default_factory=list)
    # per segment (tenant): (successes, trials), for the stratified test of a rate with `detect`
    checkout_segments: dict[str, tuple[int, int]] = field(default_factory=dict)
    payment_segments: dict[str, tuple[int, int]] = field(default_factory=dict)


def endpoints_of(state: EnvironmentState, version: str) -> list[str]:
    """Base URLs of `version`'s serving instances in a published environment state; none if it does not serve."""
    return [url for serving in state.serving if serving.version == version for url in serving.endpoints]


def supersedes(incoming: EnvironmentState, kept: EnvironmentState | None) -> bool:
    """Whether a published environment state replaces the one kept: only a newer one does (a state may arrive
    twice, or an older one after a newer one when the topic is read again)."""
    return kept is None or incoming.sequence > kept.sequence


def measure(c: Counts) -> dict[str, tuple[float | None, int]]:
    """KPI name → (value, sample count)."""
    checkouts = c.checkout_succeeded + c.checkout_failed
    payments = c.payment_authorized + c.payment_declined
    return {
        "checkout_success_rate": (c.checkout_succeeded / checkouts if checkouts else None, checkouts),
        "payment_authorization_rate": (c.payment_authorized / payments if payments else None, payments),
        "http_error_rate": (c.http_5xx / c.http_total if c.http_total else None, c.http_total),
        "latency_p95_ms": (percentile(c.latencies_ms, 0.95), c.http_total),
        "checkout_latency_p95_ms": (percentile(c.checkout_latencies_ms, 0.95), len(c.checkout_latencies_ms)),
        "orders_placed": (float(c.orders), c.orders),
    }


def merge_verdicts(
    verdict: Verdict | None, reason: str, extra: list[KpiResult], final: bool
) -> tuple[Verdict | None, str]:
    """Fold KPIs of another provider into a verdict: any failure fails; missing data at the end is
    inconclusive, never a pass."""
    failed = [k for k in extra if k.verdict is Verdict.FAIL]
    if failed:
        why = "; ".join(f"{k.name}: {k.candidate:.4g} violates {k.rule}" for k in failed)
        return Verdict.FAIL, why if verdict is not Verdict.FAIL else f"{reason}; {why}"
    missing = [k for k in extra if k.verdict is Verdict.INCONCLUSIVE]
    if verdict is Verdict.PASS and missing:
        if not final:
            return None, "window still open"
        return Verdict.INCONCLUSIVE, "; ".join(f"{k.name}: {k.rule}" for k in missing)
    return verdict, reason


PROPORTIONS = {"checkout_success_rate", "payment_authorization_rate"}
RATES = PROPORTIONS | {"http_error_rate"}
LATENCY = {"latency_p95_ms", "checkout_latency_p95_ms"}


def _rules(t: KpiThreshold) -> list[str]:
    return [
        r
        for r in (
            f"candidate >= {t.min}" if t.min is not None else None,
            f"candidate <= {t.max}" if t.max is not None else None,
            f"baseline - candidate <= {t.max_drop}" if t.max_drop is not None else None,
            f"candidate / baseline <= {t.max_increase_ratio}" if t.max_increase_ratio is not None else None,
        )
        if r
    ]


@dataclass(frozen=True)
class Sample:
    """What the judge knows of one version for one KPI."""

    value: float | None
    n: int
    latencies: list[float] = field(default_factory=list)
    segments: dict[str, tuple[int, int]] = field(default_factory=dict)  # segment -> (successes, trials)


DEFAULT_POWER = 0.9


ACROSS_SEGMENTS = "all"


def strata(cand: Sample, base: Sample) -> dict[str, Stratum]:
    """The segments both sides report. A version without segments is one segment; so are both when they share
    none (a tenant-phased release: the candidate serves tenants stable no longer does), and then the comparison
    is across segments, under the key `ACROSS_SEGMENTS`."""
    assert cand.value is not None and base.value is not None
    pooled = {ACROSS_SEGMENTS: Stratum(round(cand.value * cand.n), cand.n, round(base.value * base.n), base.n)}
    if not cand.segments or not base.segments:
        return pooled
    shared = {k: Stratum(*cand.segments[k], *base.segments[k]) for k in cand.segments if k in base.segments}
    return shared if any(s.trials_c and s.trials_b for s in shared.values()) else pooled


def evidence_rule(
    name: str, t: KpiThreshold, test: DropTest, alpha: float, elapsed_s: float | None, *, across: bool = False
) -> tuple[str, float | None]:
    """The detection test's numbers: what it saw, its bounds, and how much evidence a decision needs at this
    traffic (the same power calculation as the judge benchmark); with the seconds of data so far, how long a
    window the decision needs in all at this traffic."""
    assert t.detect is not None
    power = t.power or DEFAULT_POWER
    ratio = max(test.baseline_samples, 1) / max(test.samples, 1)
    need = evidence_needed(test.rate, t.detect, alpha, power, ratio)
    segments = f" over {test.segments} segments (most suspect: {test.worst_segment})" if test.worst_segment else ""
    if across:
        segments = " across segments (candidate and stable share none)"
    text = (
        f"{test.test}: drop to catch {t.detect:g} at power {power:g}; estimate {test.estimate:+.4f}{segments}, "
        f"Λ={test.statistic:.3g} (fail at ≥ {test.fail_at:.0f}, pass at ≤ {test.pass_at:.3g}); "
        f"{test.samples} candidate samples of the ≈{need.if_dropped} a drop of {t.detect:g} needs to be caught "
        f"(≈{need.if_healthy} to pass without one; fixed-horizon test {need.fixed})"
    )
    seconds = None
    if elapsed_s and elapsed_s > 0 and test.samples:
        rate = test.samples / elapsed_s
        seconds = min(need.to_decide / rate, NEEDS_SECONDS_MAX)
        text += f"; at {rate:.3g}/s a decision takes ≈{seconds:.0f} s in all ({elapsed_s:.0f} s so far)"
    return text, seconds


def _sequential(name: str, t: KpiThreshold, cand: Sample, base: Sample, alpha: float) -> TestResult | None:
    if t.tolerance is None or name not in PROPORTIONS | LATENCY:
        return None
    if name in PROPORTIONS:
        return proportions(
            round(cand.value * cand.n), cand.n, round(base.value * base.n), base.n, t.tolerance, alpha, alpha
        )
    return latency_rank(cand.latencies, base.latencies, t.tolerance, alpha, alpha)


def judge_kpi(
    name: str,
    t: KpiThreshold,
    cand: Sample,
    base: Sample,
    min_samples: int,
    alpha: float = 0.05,
    *,
    point_checks: bool = True,
    elapsed_s: float | None = None,
) -> tuple[KpiResult, bool]:
    """The KPI's verdict and whether it is decisive (a sequential test reached a decision, so the window may
    close early). Absolute bounds are guardrails checked at every look; the comparison with stable is the
    sequential test when the catalog gives a tolerance, else the fixed `max_drop` / `max_increase_ratio`.
    `point_checks=False` (a look woken by new data, which may come many times a second) leaves out what is not
    safe to look at that often: the bounds on a latency percentile and the fixed comparisons with stable, which
    read one noisy figure each time. Kept are the bounds on rates, judged on their 99.9% Wilson interval, and the
    sequential tests, which stay valid however often they are looked at (mSPRT).

    A guardrail that stable breaks too, in the same window and by the same test, is not the candidate's failure
    (the database both share is down, the payment provider is away): rolling back would not help, and a good
    release would be rolled back for an outage. The KPI is then inconclusive, with both figures in its rule,
    unless the comparison with stable shows the candidate worse still (then it fails as before). The window
    stays open, and if the outage outlasts it the catalog's `on_inconclusive` applies (a pause for a human).

    A rate with `detect` is compared with stable by `detect_drop` instead (stratified by segment): undecided, it is
    inconclusive, never a pass, with the evidence it has and needs at this traffic (`elapsed_s` of data), so the
    SDK keeps looking until the deadline and a window too short for the traffic ends inconclusive with the
    numbers."""
    has_baseline = base.value is not None and base.n >= min_samples

    def result(verdict: Verdict, rule: str, test: TestResult | DropTest | None = None) -> KpiResult:
        return KpiResult(
            name=name,
            candidate=cand.value,
            baseline=base.value,
            candidate_samples=cand.n,
            baseline_samples=base.n,
            verdict=verdict,
            rule=rule,
            test=test.test if test else None,
            statistic=test.statistic if test else None,
        )

    if cand.value is None or cand.n < min_samples:
        return result(Verdict.INCONCLUSIVE, f"needs >= {min_samples} candidate samples, has {cand.n}"), False
    violated = []
    if not point_checks and name not in RATES:
        t = t.model_copy(update={"min": None, "max": None})
    if not point_checks:
        t = t.model_copy(update={"max_drop": None, "max_increase_ratio": None})
    low, high = _bounds(name, cand)
    base_low, base_high = _bounds(name, base) if has_baseline else (None, None)
    shared = []  # guardrails stable breaks too
    # A rate breaks its guardrail only when it is clearly out of bounds (99.9% Wilson interval), so looking
    # every interval at small samples does not turn noise into rollbacks.
    if t.min is not None and high < t.min:
        (shared if base_high is not None and base_high < t.min else violated).append(
            f"candidate {cand.value:.4g} < min {t.min}" + (f" (upper bound {high:.3g})" if name in RATES else "")
        )
    if t.max is not None and low > t.max:
        (shared if base_low is not None and base_low > t.max else violated).append(
            f"candidate {cand.value:.4g} > max {t.max}" + (f" (lower bound {low:.3g})" if name in RATES else "")
        )
    if has_baseline and t.max_drop is not None and base.value - cand.value > t.max_drop:
        violated.append(f"drop {base.value - cand.value:.4g} below baseline {base.value:.4g} > {t.max_drop}")
    if (
        has_baseline
        and t.max_increase_ratio is not None
        and base.value > 0
        and cand.value / base.value > t.max_increase_ratio
    ):
        violated.append(f"ratio {cand.value / base.value:.3g} > {t.max_increase_ratio}")
    if violated:
        return result(Verdict.FAIL, "; ".join(violated)), True
    if t.detect is not None and name in PROPORTIONS and base.n > 0:
        # (stable not serving beside the candidate at all, as in staging, where the candidate replaces it: there
        # is no drop to measure; the guardrails judge, as without `detect`, and the rule says so)
        return _judge_drop(name, t, cand, base, has_baseline, shared, alpha, elapsed_s, result)
    test = _sequential(name, t, cand, base, alpha) if has_baseline else None
    if test is not None:
        rule = (
            f"{test.test}: estimate {test.estimate:.4g} vs boundary {test.boundary:.4g}, Λ={test.statistic:.3g}; "
            f"{test.rule}"
        )
        if test.decision is Decision.FAIL:
            return result(Verdict.FAIL, rule, test), True
    if shared:
        return result(Verdict.INCONCLUSIVE, _shared_failure(shared, base), test), False
    if test is not None:
        if test.decision is Decision.PASS:
            return result(Verdict.PASS, rule, test), True
        # Undecided: no evidence of a regression beyond tolerance so far. At the end of the window (with the
        # minimum samples met) that is a pass; before it, the window stays open.
        return result(Verdict.PASS, f"no evidence of a regression beyond tolerance (Λ < 1/α): {rule}", test), False
    rules = " and ".join(_rules(t)) or "reported"
    if t.tolerance is not None or t.max_drop is not None or t.max_increase_ratio is not None or t.detect is not None:
        rules += " (comparison with stable skipped: stable has too few samples; absolute bounds only)"
    return result(Verdict.PASS, rules), False


def _judge_drop(
    name: str,
    t: KpiThreshold,
    cand: Sample,
    base: Sample,
    has_baseline: bool,
    shared: list[str],
    alpha: float,
    elapsed_s: float | None,
    result: Callable[[Verdict, str, TestResult | DropTest | None], KpiResult],
) -> tuple[KpiResult, bool]:
    assert t.detect is not None
    if not has_baseline:
        return result(
            Verdict.INCONCLUSIVE,
            f"stable has {base.n} samples, too few to tell a drop of {t.detect:g} (needs >= the minimum)",
            None,
        ), False
    compared = strata(cand, base)
    test = detect_drop(compared, t.detect, alpha, t.power or DEFAULT_POWER)
    across = list(compared) == [ACROSS_SEGMENTS] and bool(cand.segments) and bool(base.segments)
    rule, needs_seconds = evidence_rule(name, t, test, alpha, elapsed_s, across=across)
    if test.decision is Decision.FAIL:
        return result(Verdict.FAIL, rule, test), True
    if shared:
        return result(Verdict.INCONCLUSIVE, _shared_failure(shared, base), test), False
    if test.decision is Decision.PASS:
        return result(Verdict.PASS, f"no drop of {t.detect:g}: {rule}", test), True
    undecided = result(Verdict.INCONCLUSIVE, f"not enough evidence yet to tell a drop of {t.detect:g}: {rule}", test)
    return undecided.model_copy(update={"needs_seconds": needs_seconds}), False


def _shared_failure(shared: list[str], base: Sample) -> str:
    assert base.value is not None
    return (
        f"{'; '.join(shared)}, but stable breaks it too ({base.value:.4g}, n={base.n}): a failure of what both "
        "share, not of the candidate"
    )


def _bounds(name: str, s: Sample) -> tuple[float, float]:
    """The interval a guardrail is judged on: a rate's 99.9% Wilson interval, any other figure itself."""
    assert s.value is not None
    return wilson(s.value, s.n) if name in RATES else (s.value, s.value)


def _samples(c: Counts) -> dict[str, Sample]:
    raw = {"latency_p95_ms": c.latencies_ms, "checkout_latency_p95_ms": c.checkout_latencies_ms}
    segments = {"checkout_success_rate": c.checkout_segments, "payment_authorization_rate": c.payment_segments}
    return {
        name: Sample(value, n, raw.get(name, []), segments.get(name, {})) for name, (value, n) in measure(c).items()
    }


def judge(
    thresholds: dict[str, KpiThreshold],
    candidate: Counts,
    baseline: Counts,
    min_samples: int,
    *,
    final: bool,
    alpha: float = 0.05,
    woken_by_data: bool = False,
    elapsed_s: float | None = None,
) -> tuple[Verdict | None, str, list[KpiResult]]:
    """Verdict (None = keep watching), its reason and every KPI's numbers. Fails as soon as a KPI is out of
    bounds or its sequential test fails; passes early only when every KPI's sequential test passed; otherwise
    decides at the end of the window. Too few samples is inconclusive, never a pass. A look `woken_by_data` may
    only fail, on the checks that are safe to repeat at every arrival (`judge_kpi`); everything else waits for
    the tick."""
    cand, base = _samples(candidate), _samples(baseline)
    judged = [
        judge_kpi(
            name,
            t,
            cand.get(name, Sample(None, 0)),
            base.get(name, Sample(None, 0)),
            min_samples,
            alpha,
            point_checks=not woken_by_data,
            elapsed_s=elapsed_s,
        )
        for name, t in thresholds.items()
    ]
    results = [r for r, _ in judged]
    informational = [
        KpiResult(
            name=name,
            candidate=cand[name].value,
            baseline=base[name].value,
            candidate_samples=cand[name].n,
            baseline_samples=base[name].n,
            verdict=Verdict.PASS,
            rule="reported, not judged (no threshold in the catalog)",
        )
        for name in INFORMATIONAL
        if name not in thresholds
    ]
    failed = [r for r in results if r.verdict is Verdict.FAIL]
    if failed:
        return Verdict.FAIL, "; ".join(f"{r.name}: {r.rule}" for r in failed), results + informational
    if woken_by_data:
        return None, "looked on new data: no rate out of bounds and no sequential test failed", results + informational
    early_pass = bool(judged) and all(decisive and r.verdict is Verdict.PASS for r, decisive in judged)
    if not final and not early_pass:
        return None, "window still open", results + informational
    missing = [r for r in results if r.verdict is Verdict.INCONCLUSIVE]
    if missing:
        return Verdict.INCONCLUSIVE, "; ".join(f"{r.name}: {r.rule}" for r in missing), results + informational
    summary = ", ".join(f"{r.name}={r.candidate:.4g} (n={r.candidate_samples})" for r in results)
    early = "early on strong evidence: " if not final else ""
    return Verdict.PASS, f"{early}all KPIs within bounds: {summary}", results + informational
