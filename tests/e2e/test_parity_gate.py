"""End to end, staging/production parity: with the shipped deploy/parity.yaml (only documented differences) the
production gate passes; when staging's database is tuned differently from production's — a real difference the
gatekeeper's probes find, documented nowhere — the production gate blocks naming it, `releasegate parity` exits 1
naming it too, and production keeps serving the stable version."""

from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager

import asyncpg
import pytest

from tests.e2e.conftest import cli, operate, served, status, submit

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@asynccontextmanager
async def staging_work_mem(settings, value: str):
    """Staging's database gets its own work_mem (as the owner of the shop databases) and loses it again after."""
    conn = await asyncpg.connect(settings.role_dsn(settings.database_role(), "shop_staging"))
    try:
        await conn.execute(f"ALTER DATABASE shop_staging SET work_mem = '{value}'")
        yield
    finally:
        await conn.execute("ALTER DATABASE shop_staging RESET work_mem")
        await conn.close()


def _production_gate(rid: str, timeout: float = 80) -> dict:
    """The production gate's entry of the timeline, once it has decided."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        release = status(rid)
        gate = [
            t for t in release["timeline"] if t["step"] == "gate-production" and (t.get("evidence") or {}).get("checks")
        ]
        if gate:
            return gate[-1]
        if release["state"] in ("rejected", "rolled_back", "aborted", "rollback_failed"):
            pytest.fail(f"{rid} ended {release['state']} before its production gate: {release['timeline'][-3:]}")
        time.sleep(1)
    pytest.fail(f"no production gate decision for {rid} within {timeout:.0f}s")


def _parity_check(gate: dict) -> dict:
    return next(c for c in gate["evidence"]["checks"] if c["name"] == "parity")


class TestParityGate:
    async def test_with_only_documented_differences_the_production_gate_passes(self, services, stable_v1):
        report = cli("parity", "shop", "--json")
        assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]
        assert {d["key"] for d in json.loads(report.stdout)["documented"]} >= {"security.control.waf"}
        rid = submit("v2")
        check = _parity_check(_production_gate(rid))
        assert check["passed"], check
        stopped = operate("abort", rid, "parity e2e: the gate passing is what this test shows")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert cli("watch", rid, "--timeout", "60", timeout=80).returncode == 1

    async def test_undocumented_drift_blocks_the_production_gate_naming_it(self, settings, pool, services, stable_v1):
        async with staging_work_mem(settings, "7MB"):
            report = cli("parity", "shop")
            assert report.returncode == 1 and "DRIFT database.work_mem: staging 7MB" in report.stdout, report.stdout
            rid = submit("v2")
            watched = cli("watch", rid, "--timeout", "80", timeout=100)
        assert watched.returncode == 1, watched.stdout[-2000:]
        release = status(rid)
        assert release["state"] == "rejected"
        check = _parity_check(
            next(t for t in release["timeline"] if t["step"] == "gate-production" and "checks" in (t["evidence"] or {}))
        )
        assert not check["passed"] and "database.work_mem: staging 7MB" in check["reason"]
        explained = cli("explain", rid).stdout
        assert "Blocked by parity" in explained and "database.work_mem" in explained
        assert not any((t["step"] or "").startswith(("canary", "deploy-production")) for t in release["timeline"])
        assert await served(pool, "v2", rid) == 0
        assert cli("parity", "shop").returncode == 0
