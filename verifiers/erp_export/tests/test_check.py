"""The erp-export check on fake requests, a fake shop database and a fake ERP: no Kafka, no database."""

import asyncio
import inspect
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from releasegate_sdk import Verdict
from releasegate_sdk.testing import fake_request

from .. import check as module

README = Path(__file__).resolve().parents[3] / "README.md"
V9_VIOLATIONS = [
    {"field": "amount_cents", "message": "Field required", "type": "missing"},
    {"field": "amount", "message": "Extra inputs are not permitted", "type": "extra_forbidden"},
]


def order(n: int, age_s: float) -> dict:
    return {"id": f"order-{n}", "created_at": datetime.fromtimestamp(time.time() - age_s, UTC)}


def arrived(n: int, lag_s: float, age_s: float, attempts: int = 1) -> dict:
    return {"order_id": f"order-{n}", "received_at_epoch": time.time() - age_s + lag_s, "attempts": attempts}


def judge(monkeypatch, orders: list[dict], received: list[dict], rejections: list[dict] = (), **request):
    async def fake_orders(req, settings):
        return orders

    async def fake_erp(since, settings):
        return {o["order_id"]: o for o in received}, list(rejections)

    monkeypatch.setattr(module, "candidate_orders", fake_orders)
    monkeypatch.setattr(module, "erp_view", fake_erp)
    return asyncio.run(module.check(fake_request(environment="production", candidate_version="v9", **request)))


def kpi(result, name: str):
    return next(k for k in result.kpis() if k.name == name)


class TestErpExportCheck:
    def test_passes_when_every_order_arrived_within_the_sla_even_after_retries(self, monkeypatch):
        result = judge(
            monkeypatch, [order(n, 8) for n in range(6)], [arrived(n, 0.5 + n, 8, attempts=1 + n % 3) for n in range(6)]
        )
        assert result.verdict is Verdict.PASS, result.reason
        assert "all 6 orders of v9 reached the ERP within 15s" in result.reason
        assert kpi(result, module.RETRIED).candidate == 4
        assert kpi(result, module.LAG).candidate == pytest.approx(5.5, abs=0.1)

    def test_fails_naming_the_contract_violations_of_refused_exports(self, monkeypatch):
        refusal = {
            "order_id": "order-1",
            "exporter": "v9/shop-s1",
            "reason": "contract_violation",
            "violations": V9_VIOLATIONS,
        }
        result = judge(monkeypatch, [order(n, 3) for n in range(6)], [], [refusal, refusal | {"order_id": "x"}])
        assert result.verdict is Verdict.FAIL
        assert result.reason.startswith(
            "the ERP refused 1 of 6 orders of v9 (amount extra_forbidden, amount_cents missing)"
        )
        assert "order-1 sent by v9/shop-s1" in result.reason
        assert kpi(result, module.REFUSED).candidate == 1 and kpi(result, module.REFUSED).verdict is Verdict.FAIL

    def test_a_refusal_fails_the_step_before_the_window_ends(self, monkeypatch):
        refusal = {"order_id": "order-0", "exporter": "v9/shop-s1", "violations": V9_VIOLATIONS}
        result = judge(monkeypatch, [order(0, 1)], [], [refusal], is_final_look=False)
        assert result.verdict is Verdict.FAIL

    def test_fails_on_orders_missing_or_arriving_after_the_sla(self, monkeypatch):
        result = judge(
            monkeypatch, [order(n, 20) for n in range(6)], [arrived(n, 1, 20) for n in range(4)] + [arrived(4, 16, 20)]
        )
        assert result.verdict is Verdict.FAIL
        assert result.reason == "2 of 6 orders of v9 not in the ERP within 15s: order-4, order-5"
        assert kpi(result, module.LAG).verdict is Verdict.FAIL

    def test_waits_for_orders_still_within_their_sla(self, monkeypatch):
        result = judge(monkeypatch, [order(n, 5) for n in range(6)], [arrived(n, 1, 5) for n in range(5)])
        assert result.verdict is None and result.reason == "1 of 6 orders of v9 still on their way to the ERP"

    def test_never_passes_before_the_window_ends(self, monkeypatch):
        result = judge(
            monkeypatch, [order(n, 5) for n in range(6)], [arrived(n, 1, 5) for n in range(6)], is_final_look=False
        )
        assert result.verdict is None

    def test_is_inconclusive_on_too_few_orders(self, monkeypatch):
        result = judge(monkeypatch, [order(0, 5)], [arrived(0, 1, 5)])
        assert result.verdict is Verdict.INCONCLUSIVE and "need 5" in result.reason


def test_the_readme_states_the_check_functions_true_line_count():
    """The check stays small, and the README's figure stays true."""
    lines = len(inspect.getsourcelines(module.check)[0]) - 1  # without the decorator
    stated = re.search(r"erp-export's check function is (\d+)\s+lines", README.read_text())
    assert stated is not None, "README: say how many lines erp-export's check function is"
    assert int(stated.group(1)) == lines <= 30
