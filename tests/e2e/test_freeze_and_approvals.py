"""End to end, business timing and approvals under a freeze window that covers now: a low-risk content change
ships with no human involved, a payment change waits for the freeze (self-approval and out-of-group approvals
refused and recorded) and goes on once a release manager grants an exception."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import approve, cli, operate, release, status, submit

pytestmark = [pytest.mark.slow, pytest.mark.integration]
HUMANS = {"alice", "bob", "carol", "dave", "dev"}


@pytest.fixture(scope="module")
def catalog_env(tmp_path_factory) -> dict[str, str]:
    new_york = datetime.now(UTC).astimezone(ZoneInfo("America/New_York"))
    start, end = (new_york + timedelta(hours=h) for h in (-1, 6))
    calendar = tmp_path_factory.mktemp("calendar") / "calendar.yaml"
    calendar.write_text(f"""version: 1
freezes:
  - name: peak-trading-test
    timezone: America/New_York
    start: {start:%Y-%m-%dT%H:%M}
    end: {end:%Y-%m-%dT%H:%M}
    blocks: [checkout, payment, pricing, erp-sync]
recurring: []
business_hours: []
""")
    return {"RG_CALENDAR_FILE": str(calendar)}


class TestFreezeWindow:
    async def test_low_risk_content_change_ships_during_the_freeze_with_no_human(self, services, stable_v1):
        rid, timeline = release("v2", promoted=True)
        assert not {t["actor"] for t in timeline} & HUMANS
        gate = next(t for t in timeline if t["step"] == "gate-production" and "passed" in t["reason"])
        assert gate["evidence"]["risk"] == "low"

    async def test_payment_change_waits_for_the_freeze_until_an_exception_is_approved(self, pool, services, stable_v1):
        rid = submit("v3", approvers=("alice", "bob", "dev"))
        approve(rid, "dave", reason="dave is not a shop approver")

        async def waiting_on_freeze():
            r = status(rid)
            return r["state"] == "awaiting_approval" and any(
                "frozen by peak-trading-test" in t["reason"] for t in r["timeline"]
            )

        await wait_until(waiting_on_freeze, 240, "v3 waiting at the production gate for the freeze")

        timeline = status(rid)["timeline"]
        assert any(t["actor"] == "dev" and "the author of a change cannot approve it" in t["reason"] for t in timeline)

        # dave's approval may arrive after the first evaluation of the gate; it is then evaluated again with it
        async def explained_with_dave():
            out = cli("explain", rid).stdout
            return out if "dave: not in the shop-approvers group" in out else None

        explained = await wait_until(explained_with_dave, 60, "the gate to have weighed dave's approval")
        assert "Waiting on freeze_window" in explained
        assert "high risk" in explained

        approve(rid, "dave", kind="exception", reason="fix for a live payment incident")

        async def past_the_gate():
            return any(t["step"] == "gate-production" and "passed" in t["reason"] for t in status(rid)["timeline"])

        await wait_until(past_the_gate, 120, "v3 through the production gate on the exception")
        gate = next(t for t in status(rid)["timeline"] if t["step"] == "gate-production" and "passed" in t["reason"])
        assert any("exception approved by dave" in w for w in gate["evidence"]["warnings"])
        operate("abort", rid, "end of the freeze test")
        await wait_until(lambda: _ended(rid), 240, "v3 aborted")


async def _ended(rid: str) -> bool:
    return status(rid)["state"] in {"aborted", "rolled_back"}
