"""End to end: every service as its own OS process, the shop behind the real HAProxy, synthetic shoppers as
traffic, driven only through the `releasegate` CLI and Kafka topics."""
from __future__ import annotations

import json

import httpx
import pytest

from contracts import topics
from releasegate_cli.probes import TopicTail, versions_served
from tests.conftest import Service, as_principal, wait_until
from tests.e2e.conftest import CANDIDATES, PRODUCTION, STAGING, cli, operate, status, submit

pytestmark = [pytest.mark.slow, pytest.mark.integration]

class TestWalkingSkeleton:
    async def test_bad_version_is_rolled_back_by_itself_with_traffic_on_stable(self, settings, services,
                                                                                 stable_v1):
        alerts = await TopicTail(as_principal(settings, "ops"), topics.ALERTS).start()
        try:
            rid = submit("v3", approvers=("alice", "bob"))
            watched = cli("watch", rid, "--timeout", "300", timeout=320)
            alert = await alerts.wait_for(lambda e: e.subject == rid, timeout=30)
        finally:
            await alerts.stop()
        assert watched.returncode == 1, watched.stdout[-2000:]
        release = status(rid)
        assert release["state"] == "rolled_back"
        timeline = release["timeline"]
        failed = next(t for t in timeline if t["step"] and t["step"].startswith("verify-canary")
                      and "failed" in t["reason"])
        # v3 breaks payments for non-Visa cards: payment authorization and checkout success both drop, and the step
        # fails on whichever of them is clearly out of bounds first
        kpis = [k for k in failed["evidence"]["kpis"] if k["verdict"] == "fail"]
        assert kpis and {k["name"] for k in kpis} <= {"payment_authorization_rate", "checkout_success_rate"}
        assert all(k["candidate"] < k["baseline"] for k in kpis)
        compensations = [t["reason"] for t in timeline if t["actor"] == "rollback"]
        assert [c.split(" done")[0] for c in compensations] == [
            "compensation compensate:production", "compensation compensate:staging"]
        assert alert is not None and alert.data.severity.value == "warning"
        served = await versions_served(PRODUCTION, 60)
        assert set(served) == {"v1"}, f"after rollback production answered with {dict(served)}"

    async def test_good_version_is_promoted_with_all_traffic_on_it(self, services, stable_v1):
        rid = submit("v2")
        watched = cli("watch", rid, "--timeout", "300", timeout=320)
        assert watched.returncode == 0, watched.stdout[-2000:]
        release = status(rid)
        assert release["state"] == "promoted"
        steps = [t["step"] for t in release["timeline"] if t["reason"].endswith("passed") or " passed:" in t["reason"]]
        assert {"gate-staging", "dr-check", "verify-staging", "gate-production", "verify-canary-internal",
                "verify-canary-10",
                "verify-canary-50", "verify-canary-100"} <= set(steps)
        assert set(await versions_served(PRODUCTION, 60)) == {"v2"}
        assert set(await versions_served(STAGING, 30)) == {"v2"}

    async def test_killed_coordinator_resumes_the_release_after_restart(self, pool, services, stable_v1):
        rid = submit("v2")

        async def at_canary() -> bool:
            async with pool.acquire() as conn:
                body = await conn.fetchval("SELECT body FROM sagas WHERE release_id = $1", rid)
            return bool(body) and (body.get("waiting_for") or "").startswith("verify-canary")

        await wait_until(at_canary, 200, "the release to reach the production canary")
        services["coordinator"].kill()
        services["coordinator"] = Service("coordinator").start()
        watched = cli("watch", rid, "--timeout", "300", timeout=320)
        assert watched.returncode == 0, watched.stdout[-2000:]
        assert set(await versions_served(PRODUCTION, 40)) == {"v2"}

    async def test_ops_pause_resume_and_promote_in_full_recorded_with_actor_and_reason(self, pool, stable_v1):
        rid = submit("v2")

        async def waiting_for(prefix: str):
            async with pool.acquire() as conn:
                row = await conn.fetchrow("SELECT state, body FROM sagas WHERE release_id = $1", rid)
            return row and row["state"] == "running" and (row["body"]["waiting_for"] or "").startswith(prefix)

        await wait_until(lambda: waiting_for("verify-canary-10"), 200, "the first canary verification")
        async with httpx.AsyncClient(timeout=5, cookies={"rg_canary": "1"}) as client:
            cookie = [(await client.get(f"{PRODUCTION}/products")).headers.get("X-Shop-Version") for _ in range(20)]
        assert set(cookie) == {"v2"}, "internal users with the rg_canary cookie get the candidate"
        assert operate("pause", rid, "flash sale starts", who="dave").returncode == 0
        await wait_until(lambda: _state_is(pool, rid, "paused"), 60, "the pause")
        assert operate("resume", rid, "sale traffic is stable", who="alice").returncode == 0
        await wait_until(lambda: waiting_for("verify-canary"), 60, "the resumed verification")
        assert operate("promote", rid, "urgent fix", "--full", who="carol").returncode == 0
        watched = cli("watch", rid, "--timeout", "300", timeout=320)
        assert watched.returncode == 0, watched.stdout[-2000:]
        timeline = status(rid)["timeline"]
        said = {(t["actor"], t["reason"]) for t in timeline}
        assert ("dave", "paused by dave: flash sale starts") in said
        assert ("alice", "resumed by alice: sale traffic is stable") in said
        assert any(a == "carol" and r.startswith("promote --full by carol: urgent fix") for a, r in said)
        assert set(await versions_served(PRODUCTION, 40)) == {"v2"}

    async def test_candidate_for_an_unknown_service_is_rejected(self, services, tmp_path):
        bad = json.loads((CANDIDATES / "shop-v2.json").read_text()) | {"service": "warehouse"}
        (tmp_path / "c.json").write_text(json.dumps(bad))
        rid = cli("submit", str(tmp_path / "c.json")).stdout.strip()
        watched = cli("watch", rid, "--timeout", "120", timeout=140)
        assert watched.returncode == 1
        assert "unknown service 'warehouse'" in watched.stdout


async def _state_is(pool, rid: str, state: str) -> bool:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT state FROM sagas WHERE release_id = $1", rid) == state
