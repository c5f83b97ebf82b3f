"""The Prometheus metric provider against the real Prometheus scraping real shop instances."""

from __future__ import annotations

import subprocess
import sys

import pytest

from contracts.events import PromQuery, Verdict
from releasegate_cli.probes import versions_served
from releasegate_platform.catalog import Catalog
from services.verifier.adapters.prometheus import PrometheusProvider
from services.verifier.config import VerifierSettings
from tests.conftest import REPO, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stable_version():
    """The deployer's reconcile makes sure stable instances serve and are registered with Prometheus."""
    out = subprocess.run(
        [sys.executable, "-m", "services.deployer.bootstrap", str(REPO / "examples" / "candidates" / "shop-v1.json")],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1].split('"production": "')[1].split('"')[0]


class TestPrometheusProvider:
    async def test_catalog_promql_kpi_is_read_for_the_serving_version(self, stable_version):
        provider = PrometheusProvider(VerifierSettings().prometheus_url)
        queries = Catalog(REPO / "catalog").get("shop").prometheus

        async def measured():
            await versions_served("http://127.0.0.1:18080", 20)
            kpis = await provider.kpis(queries, stable_version, "production", 30)
            return kpis if kpis[0].verdict is not Verdict.INCONCLUSIVE else None

        kpis = await wait_until(measured, 60, "Prometheus to scrape the shop")
        assert kpis[0].name == "prometheus:http_5xx_ratio" and kpis[0].verdict is Verdict.PASS
        assert 0.0 <= kpis[0].candidate <= 0.05

    async def test_a_version_without_data_is_inconclusive_not_pass(self, stable_version):
        provider = PrometheusProvider(VerifierSettings().prometheus_url)
        query = {
            "requests": PromQuery(
                query='sum(increase(shop_http_requests_total{version="$version"}[${window}s]))', min=1
            )
        }
        (kpi,) = await provider.kpis(query, "v-never-deployed", "production", 30)
        assert kpi.verdict is Verdict.INCONCLUSIVE and "no data" in kpi.rule

    async def test_a_guardrail_violation_fails(self, stable_version):
        provider = PrometheusProvider(VerifierSettings().prometheus_url)
        query = {"scrapes": PromQuery(query='count(up{job="shop",environment="$environment"})', max=0)}
        (kpi,) = await provider.kpis(query, stable_version, "production", 30)
        assert kpi.verdict is Verdict.FAIL and kpi.candidate >= 1
