"""Synthetic journeys verifier: scripted browse → cart → checkout → confirmation journeys run directly against
the candidate's instances, per tenant, before it gets customer traffic. Reports per-tenant journey success and
per-step success and latency."""
from __future__ import annotations

import asyncio
import importlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from contracts.events import KpiResult, SyntheticJourneys, Verdict
from services.verifier.domain import VerifierError, percentile

Journey = Callable[[httpx.AsyncClient, str, str, str], Awaitable[Any]]


def load_journey(reference: str) -> Journey:
    module, _, name = reference.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise VerifierError(f"journey script {reference!r} cannot be loaded: {exc}") from None


async def run(spec: SyntheticJourneys, targets: list[str], journey: Journey | None = None
              ) -> tuple[Verdict, str, list[KpiResult]]:
    if not targets:
        return Verdict.INCONCLUSIVE, "no serving candidate instance to run journeys against", []
    journey = journey or load_journey(spec.journey)
    plan = [(tenant, spec.profiles[i % len(spec.profiles)], targets[i % len(targets)])
            for tenant in spec.tenants for i in range(spec.journeys_per_tenant)]
    async with httpx.AsyncClient(timeout=10) as client:
        results = await asyncio.gather(*(journey(client, target, tenant, profile)
                                         for tenant, profile, target in plan))
    return judge(spec, results)


def judge(spec: SyntheticJourneys, results: list[Any]) -> tuple[Verdict, str, list[KpiResult]]:
    by_tenant: dict[str, list[Any]] = defaultdict(list)
    steps: dict[str, list[Any]] = defaultdict(list)
    for r in results:
        by_tenant[r.tenant].append(r)
        for s in r.steps:
            steps[s.name].append(s)
    kpis, failures = [], []
    for tenant, rs in by_tenant.items():
        rate = sum(r.success for r in rs) / len(rs)
        ok = rate >= spec.min_success_rate
        kpis.append(KpiResult(name=f"journey_success[{tenant}]", candidate=rate, baseline=None,
                              candidate_samples=len(rs), baseline_samples=0,
                              verdict=Verdict.PASS if ok else Verdict.FAIL,
                              rule=f"journeys succeeded >= {spec.min_success_rate}"))
        if not ok:
            reasons = sorted({r.reason for r in rs if not r.success and r.reason})
            failures.append(f"{tenant}: {rate:.0%} of {len(rs)} journeys succeeded ({'; '.join(reasons[:3])})")
    for name, ss in steps.items():
        good = [s for s in ss if s.status is not None and s.status < 500 and s.error is None]
        kpis.append(KpiResult(name=f"step[{name}]", candidate=len(good) / len(ss), baseline=None,
                              candidate_samples=len(ss), baseline_samples=0, verdict=Verdict.PASS,
                              rule=f"reported: p95 {percentile([s.latency_ms for s in ss], 0.95):.0f} ms"))
    if failures:
        return Verdict.FAIL, "synthetic journeys failed for " + "; ".join(failures), kpis
    return Verdict.PASS, f"{len(results)} synthetic journeys over {len(by_tenant)} tenants succeeded", kpis
