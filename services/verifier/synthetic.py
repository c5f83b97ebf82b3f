"""Synthetic journeys verifier: scripted browse → cart → checkout → confirmation journeys run directly against
the candidate's instances, per tenant, before it gets customer traffic. Reports per-tenant journey success and
per-step success and latency.

A command names a journey; the script comes from the allow-list in the catalog entry of the request's service
(`journeys: {name: module:function}`, in the packages the catalog allows). A module path in a command is never
imported: a name the entry does not list is refused with the reason."""

from __future__ import annotations

import asyncio
import importlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from contracts.events import KpiResult, SyntheticJourneys, Verdict
from releasegate_platform.catalog import Catalog, CatalogError
from releasegate_sdk.statistics import percentile
from services.verifier.domain import VerifierError

Journey = Callable[[httpx.AsyncClient, str, str, str], Awaitable[Any]]
JourneyResolver = Callable[[str, str], Journey]


def load_journey(reference: str) -> Journey:
    """Import a `module:function` the catalog allow-listed (never one taken from a command)."""
    module, _, name = reference.partition(":")
    try:
        journey = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise VerifierError(f"journey script {reference!r} cannot be loaded: {exc}") from None
    if not callable(journey):
        raise VerifierError(f"journey script {reference!r} is not a function")
    return journey


class CatalogJourneys:
    """Resolves a journey name through the catalog entry of the request's service (re-read on every request, so an
    edited allow-list applies at once)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def __call__(self, service: str, name: str) -> Journey:
        try:
            allowed = self._catalog.get(service).journeys
        except CatalogError as exc:
            raise VerifierError(f"journey {name!r} cannot be resolved: {exc}") from None
        if name not in allowed:
            raise VerifierError(
                f"journey {name!r} is not in the journeys allow-list of {service}'s catalog entry "
                f"({', '.join(sorted(allowed)) or 'empty'}); refusing to run it"
            )
        return load_journey(allowed[name])


def no_journeys(service: str, name: str) -> Journey:
    """The resolver of a verifier wired without a catalog: every journey is refused."""
    raise VerifierError(f"journey {name!r} cannot be resolved: this verifier has no journey allow-list")


async def run(spec: SyntheticJourneys, targets: list[str], journey: Journey) -> tuple[Verdict, str, list[KpiResult]]:
    """Run `spec`'s journeys with the `journey` resolved from the catalog."""
    if not targets:
        return Verdict.INCONCLUSIVE, "no serving candidate instance to run journeys against", []
    plan = [
        (tenant, spec.profiles[i % len(spec.profiles)], targets[i % len(targets)])
        for tenant in spec.tenants
        for i in range(spec.journeys_per_tenant)
    ]
    async with httpx.AsyncClient(timeout=10) as client:
        results = await asyncio.gather(*(journey(client, target, tenant, profile) for tenant, profile, target in plan))
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
        kpis.append(
            KpiResult(
                name=f"journey_success[{tenant}]",
                candidate=rate,
                baseline=None,
                candidate_samples=len(rs),
                baseline_samples=0,
                verdict=Verdict.PASS if ok else Verdict.FAIL,
                rule=f"journeys succeeded >= {spec.min_success_rate}",
            )
        )
        if not ok:
            reasons = sorted({r.reason for r in rs if not r.success and r.reason})
            failures.append(f"{tenant}: {rate:.0%} of {len(rs)} journeys succeeded ({'; '.join(reasons[:3])})")
    for name, ss in steps.items():
        good = [s for s in ss if s.status is not None and s.status < 500 and s.error is None]
        kpis.append(
            KpiResult(
                name=f"step[{name}]",
                candidate=len(good) / len(ss),
                baseline=None,
                candidate_samples=len(ss),
                baseline_samples=0,
                verdict=Verdict.PASS,
                rule=f"reported: p95 {percentile([s.latency_ms for s in ss], 0.95):.0f} ms",
            )
        )
    if failures:
        return Verdict.FAIL, "synthetic journeys failed for " + "; ".join(failures), kpis
    return Verdict.PASS, f"{len(results)} synthetic journeys over {len(by_tenant)} tenants succeeded", kpis
