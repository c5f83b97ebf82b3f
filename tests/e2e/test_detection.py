"""End to end, a catalog that states the smallest drop of checkout success each step must catch (`detect: 0.02`)
at the local shop's traffic, which is far too low to tell such a drop from noise within a step: the release is not
passed on too little evidence. Its first verification ends inconclusive with the numbers (the candidate checkouts
it had, the ≈N a decision needs, and how long a window that is at this traffic); the evidence needs a longer window
than the catalog allows an extension to reach, so it pauses at once, saying so; `explain` tells the evidence."""

from __future__ import annotations

import shutil

import pytest
import yaml

from tests.conftest import REPO, wait_until
from tests.e2e.conftest import cli, operate, status, submit

pytestmark = [pytest.mark.slow, pytest.mark.integration]
LONGEST = 40  # seconds: verification.max_window_seconds


@pytest.fixture(scope="module")
def catalog_env(tmp_path_factory) -> dict[str, str]:
    path = tmp_path_factory.mktemp("catalog")
    shutil.copy(REPO / "catalog" / "shop.yaml", path / "shop.yaml")
    entry = yaml.safe_load((path / "shop.yaml").read_text())
    entry["kpis"]["checkout_success_rate"] = {"min": 0.85, "detect": 0.02}
    entry["verification"] |= {"on_inconclusive": "extend", "max_window_seconds": LONGEST}
    (path / "shop.yaml").write_text(yaml.safe_dump(entry))
    return {"RG_CATALOG_DIR": str(path)}


async def _state(pool, rid: str) -> str | None:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT state FROM sagas WHERE release_id = $1", rid)


async def test_too_little_traffic_for_the_drop_to_catch_pauses_with_the_numbers(pool, services, stable_v1):
    rid = submit("v2")
    try:

        async def settled() -> bool:
            return await _state(pool, rid) in ("paused", "promoted", "rolled_back", "rollback_failed", "rejected")

        await wait_until(settled, 240, "the first verification's outcome")
        assert await _state(pool, rid) == "paused", status(rid)["timeline"][-3:]
        timeline = status(rid)["timeline"]
        paused = timeline[-1]
        assert paused["step"].startswith("verify-"), paused
        assert f"longer than the catalog allows ({LONGEST}s)" in paused["reason"], paused["reason"]
        (kpi,) = [k for k in paused["evidence"]["kpis"] if k["name"] == "checkout_success_rate"]
        assert kpi["verdict"] == "inconclusive" and kpi["test"].startswith("SPRT for a drop")
        assert kpi["needs_seconds"] > LONGEST and "a drop of 0.02 needs to be caught" in kpi["rule"]
        assert not any(" passed: " in t["reason"] and t["step"] == paused["step"] for t in timeline)
        explained = cli("explain", rid)
        assert explained.returncode == 0, explained.stderr
        assert "Evidence for the drops the catalog says must be caught:" in explained.stdout
        assert f"{paused['step']} (business-kpis): checkout_success_rate inconclusive" in explained.stdout
    finally:
        operate("abort", rid, "test done")
        await wait_until(lambda: _aborted(pool, rid), 240, "the aborted release's compensations")


async def _aborted(pool, rid: str) -> bool:
    return await _state(pool, rid) in ("rolled_back", "rollback_failed", "aborted", "rejected")
