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
        self, queries: dict[str, PromQuery], version: str, environment: str, window_seconds: int
    ) -> list[KpiResult]:
        results = []
        for name, q in queries.items():
            query = Template(q.query).safe_substitute(
                version=version, environment=environment, window=max(window_seconds, 4)
            )
            value = await self.value(query)
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
            elif (q.min is not None and value < q.min) or (q.max is not None and value > q.max):
                verdict = Verdict.FAIL
            else:
                verdict = Verdict.PASS
            results.append(
                KpiResult(
                    name=f"prometheus:{name}",
                    candidate=value,
                    baseline=None,
                    candidate_samples=0 if value is None else 1,
                    baseline_samples=0,
                    verdict=verdict,
                    rule=rule,
                    test="PromQL",
                )
            )
        return results
