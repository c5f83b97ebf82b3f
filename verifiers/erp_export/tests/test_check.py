"""The erp-export check on fake requests: no Kafka, no database."""
import asyncio

from releasegate_sdk import Verdict
from releasegate_sdk.testing import fake_request

from .. import check as module


def test_passes_when_the_candidate_meets_the_threshold():
    result = asyncio.run(module.check(fake_request(service="shop")))
    assert result.verdict is Verdict.PASS
    assert result.kpis()[0].name == "erp_export_success_rate"


def test_fails_when_the_candidate_is_below_the_threshold(monkeypatch):
    async def poor(req):
        return 0.5

    monkeypatch.setattr(module, "measure", poor)
    result = asyncio.run(module.check(fake_request(service="shop", environment="production")))
    assert result.verdict is Verdict.FAIL and "50.0%" in result.reason
