"""Prometheus metric provider: KPIs as PromQL templates from the catalog, read over the HTTP API."""

from __future__ import annotations

import math
from string import Template

import httpx

from contracts.events import KpiResult, PromQuery, Verdict


class PrometheusProvider:
    def __init__(self, url: str) -> None:
        self._url = url.rstrip("/")

    async def value(self, query: str) -> float | None:
        """The query's single value; None when Prometheus has no data (or is unreachable)."""
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                r = await client.get(f"{self._url}/api/v1/query", params={"query": query})
                body = r.json()
        except (httpx.HTTPError, ValueError):
            return None
        result = body.get("data", {}).get("result") or []
        if body.get("status") != "success" or not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) or math.isinf(value) else value

    async def kpis(
        self,
        queries: dict[str, PromQuery],
        version: str,
        environment: str,
        window_seconds: int,
        *,
        stable: str | None = None,
    ) -> list[KpiResult]:
        """Each query for `version`; one the candidate breaks is asked for `stable` too, in the same window: if
        stable breaks it as well, the KPI is inconclusive (what both share failed, not the candidate)."""
        results = []
        for name, q in queries.items():

            def query_of(v: str, q: PromQuery = q) -> str:
                return Template(q.query).safe_substitute(
                    version=v, environment=environment, window=max(window_seconds, 4)
                )

            query = query_of(version)
            value = await self.value(query)
            baseline = None
            rule = " and ".join(
                r
                for r in (
                    f"candidate >= {q.min}" if q.min is not None else "",
                    f"candidate <= {q.max}" if q.max is not None else "",
                )
                if r
            )
            if value is None:
                verdict, rule = Verdict.INCONCLUSIVE, f"no data from Prometheus for {query}"
            elif breaks(q, value):
                verdict = Verdict.FAIL
                baseline = await self.value(query_of(stable)) if stable else None
                if baseline is not None and breaks(q, baseline):
                    verdict = Verdict.INCONCLUSIVE
                    rule += (
                        f": candidate {value:.4g}, but stable {stable} breaks it too ({baseline:.4g}), a failure of"
                        " what both share, not of the candidate"
                    )
            else:
                verdict = Verdict.PASS
            results.append(
                KpiResult(
                    name=f"prometheus:{name}",
                    candidate=value,
                    baseline=baseline,
                    candidate_samples=0 if value is None else 1,
                    baseline_samples=0,
                    verdict=verdict,
                    rule=rule,
                    test="PromQL",
                )
            )
        return results


def breaks(q: PromQuery, value: float) -> bool:
    return (q.min is not None and value < q.min) or (q.max is not None and value > q.max)
