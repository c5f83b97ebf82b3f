"""KPI computation and judgement, pure: counts in, verdict with its numbers out."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from contracts.events import KpiResult, KpiThreshold, Verdict

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


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def measure(c: Counts) -> dict[str, tuple[float | None, int]]:
    """KPI name → (value, sample count)."""
    checkouts = c.checkout_succeeded + c.checkout_failed
    payments = c.payment_authorized + c.payment_declined
    return {
        "checkout_success_rate": (c.checkout_succeeded / checkouts if checkouts else None, checkouts),
        "payment_authorization_rate": (c.payment_authorized / payments if payments else None, payments),
        "http_error_rate": (c.http_5xx / c.http_total if c.http_total else None, c.http_total),
        "latency_p95_ms": (percentile(c.latencies_ms, 0.95), c.http_total),
        "orders_placed": (float(c.orders), c.orders),
    }


def _rules(t: KpiThreshold) -> list[str]:
    return [r for r in (f"candidate >= {t.min}" if t.min is not None else None,
                        f"candidate <= {t.max}" if t.max is not None else None,
                        f"baseline - candidate <= {t.max_drop}" if t.max_drop is not None else None,
                        f"candidate / baseline <= {t.max_increase_ratio}" if t.max_increase_ratio is not None
                        else None) if r]


def judge_kpi(name: str, t: KpiThreshold, cand: tuple[float | None, int], base: tuple[float | None, int],
              min_samples: int) -> KpiResult:
    value, n = cand
    base_value, base_n = base
    rules = _rules(t)

    def result(verdict: Verdict, rule: str) -> KpiResult:
        return KpiResult(name=name, candidate=value, baseline=base_value, candidate_samples=n,
                         baseline_samples=base_n, verdict=verdict, rule=rule)

    if value is None or n < min_samples:
        return result(Verdict.INCONCLUSIVE, f"needs >= {min_samples} candidate samples, has {n}")
    violated = []
    if t.min is not None and value < t.min:
        violated.append(f"candidate {value:.4g} < min {t.min}")
    if t.max is not None and value > t.max:
        violated.append(f"candidate {value:.4g} > max {t.max}")
    has_baseline = base_value is not None and base_n >= min_samples
    if has_baseline and t.max_drop is not None and base_value - value > t.max_drop:
        violated.append(f"drop {base_value - value:.4g} below baseline {base_value:.4g} > {t.max_drop}")
    if has_baseline and t.max_increase_ratio is not None and base_value > 0 \
            and value / base_value > t.max_increase_ratio:
        violated.append(f"ratio {value / base_value:.3g} > {t.max_increase_ratio}")
    if violated:
        return result(Verdict.FAIL, "; ".join(violated))
    note = "" if has_baseline or (t.max_drop is None and t.max_increase_ratio is None) else \
        " (baseline rules skipped: stable has too few samples)"
    return result(Verdict.PASS, " and ".join(rules) + note)


def judge(thresholds: dict[str, KpiThreshold], candidate: Counts, baseline: Counts, min_samples: int,
          *, final: bool) -> tuple[Verdict | None, str, list[KpiResult]]:
    """Verdict (None = keep watching), its reason and every KPI's numbers. Fails as soon as a KPI with enough
    samples is out of bounds; passes or is inconclusive only at the end of the window."""
    cand, base = measure(candidate), measure(baseline)
    results = [judge_kpi(name, t, cand.get(name, (None, 0)), base.get(name, (None, 0)), min_samples)
               for name, t in thresholds.items()]
    informational = [KpiResult(name=name, candidate=cand[name][0], baseline=base[name][0],
                               candidate_samples=cand[name][1], baseline_samples=base[name][1], verdict=Verdict.PASS,
                               rule="reported, not judged (no threshold in the catalog)")
                     for name in INFORMATIONAL if name not in thresholds]
    failed = [r for r in results if r.verdict is Verdict.FAIL]
    if failed:
        return Verdict.FAIL, "; ".join(f"{r.name}: {r.rule}" for r in failed), results + informational
    if not final:
        return None, "window still open", results + informational
    missing = [r for r in results if r.verdict is Verdict.INCONCLUSIVE]
    if missing:
        return Verdict.INCONCLUSIVE, "; ".join(f"{r.name}: {r.rule}" for r in missing), results + informational
    summary = ", ".join(f"{r.name}={r.candidate:.4g} (n={r.candidate_samples})" for r in results)
    return Verdict.PASS, f"all KPIs within bounds: {summary}", results + informational
