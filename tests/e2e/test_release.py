"""End to end: every service as its own OS process, the shop behind the real HAProxy, synthetic shoppers as
traffic, driven only through the `releasegate` CLI and Kafka topics."""

from __future__ import annotations

import asyncio
import json

import pytest

from contracts import topics
from releasegate_cli.probes import TopicTail, versions_served
from tests.conftest import Service, as_principal, wait_until
from tests.e2e.conftest import (
    CANDIDATES,
    INTERNAL_USER,
    PRODUCTION,
    PRODUCTION_TENANTS,
    STAGING,
    Client,
    TrafficSampler,
    answers,
    assert_back_on_stable,
    assert_only,
    cli,
    operate,
    status,
    submit,
    tenants_and_insider,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]


class TestWalkingSkeleton:
    async def test_bad_version_is_rolled_back_by_itself_with_traffic_on_stable(
        self, settings, services, stable_v1, canary
    ):
        alerts = await TopicTail(as_principal(settings, "ops"), topics.ALERTS).start()
        # initech is the catalog's internal tenant: it and the insiders' cookie reach the candidate first
        sampled_clients = [Client("initech", tenant="initech"), Client("canary-cookie", cookie=canary)]
        try:
            async with TrafficSampler(sampled_clients) as sampled:
                rid = submit("v3", approvers=("alice", "bob"))
                watched = await asyncio.to_thread(cli, "watch", rid, "--timeout", "300", timeout=320)
            # the rollback's warning (other alerts of the release, e.g. that it waits for approvals, may come first)
            alert = await alerts.wait_for(
                lambda e: (
                    e.subject == rid
                    and e.data.severity.value == "warning"
                    and e.data.title.endswith("release rolled_back")
                ),
                timeout=30,
            )
        finally:
            await alerts.stop()
        assert watched.returncode == 1, watched.stdout[-2000:]
        release = status(rid)
        assert release["state"] == "rolled_back"
        timeline = release["timeline"]
        failed = next(
            t for t in timeline if t["step"] and t["step"].startswith("verify-canary") and "failed" in t["reason"]
        )
        # v3 breaks payments for non-Visa cards: payment authorization and checkout success both drop, and the step
        # fails on whichever of them is clearly out of bounds first
        kpis = [k for k in failed["evidence"]["kpis"] if k["verdict"] == "fail"]
        assert kpis and {k["name"] for k in kpis} <= {"payment_authorization_rate", "checkout_success_rate"}
        assert all(k["candidate"] < k["baseline"] for k in kpis)
        compensations = [t["reason"] for t in timeline if t["actor"] == "rollback"]
        assert [c.split(" done")[0] for c in compensations] == [
            "compensation compensate:production",
            "compensation compensate:staging",
        ]
        assert alert is not None and alert.data.severity.value == "warning"
        # positive controls: during the canary these very probes were answered by v3 ...
        assert all(sampled.seen[who.name]["v3"] > 0 for who in sampled_clients), sampled.seen
        # ... and after the rollback they, every other tenant and the moved ones are answered by v1 alone
        await assert_back_on_stable("v1", timeline, canary)

    async def test_good_version_is_promoted_with_all_traffic_on_it(self, services, stable_v1, canary):
        rid = submit("v2")
        watched = cli("watch", rid, "--timeout", "300", timeout=320)
        assert watched.returncode == 0, watched.stdout[-2000:]
        release = status(rid)
        assert release["state"] == "promoted"
        steps = [t["step"] for t in release["timeline"] if t["reason"].endswith("passed") or " passed:" in t["reason"]]
        assert {
            "gate-staging",
            "dr-check",
            "verify-staging",
            "gate-production",
            "verify-canary-internal",
            "verify-canary-10",
            "verify-canary-50",
            "verify-canary-100",
        } <= set(steps)
        await assert_only("v2", tenants_and_insider(PRODUCTION_TENANTS, canary))
        assert set(await versions_served(STAGING, 30)) == {"v2"}

    async def test_killed_coordinator_resumes_the_release_after_restart(self, pool, services, stable_v1, canary):
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
        await assert_only("v2", tenants_and_insider(PRODUCTION_TENANTS, canary))

    async def test_ops_pause_resume_and_promote_in_full_recorded_with_actor_and_reason(self, pool, stable_v1, canary):
        rid = submit("v2")

        async def waiting_for(prefix: str):
            async with pool.acquire() as conn:
                row = await conn.fetchrow("SELECT state, body FROM sagas WHERE release_id = $1", rid)
            return row and row["state"] == "running" and (row["body"]["waiting_for"] or "").startswith(prefix)

        await wait_until(lambda: waiting_for("verify-canary-internal"), 200, "the internal canary verification")
        # while only insiders reach the candidate: the signed cookie does (the positive control) ...
        assert set(await answers(PRODUCTION, Client("insider", cookie=canary), 20)) == {"v2"}, (
            "an internal user with the signed canary cookie gets the candidate"
        )
        # ... and in the same window a cookie nobody signed does not: the old `1`, a made-up mac, another user's name
        for forged in ("1", f"{INTERNAL_USER}.{'0' * 32}", "alice." + canary.split(".", 1)[1]):
            assert set(await answers(PRODUCTION, Client("forged", cookie=forged), 20)) == {"v1"}, forged
        await wait_until(lambda: waiting_for("verify-canary-10"), 200, "the first canary verification")
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
        await assert_only("v2", tenants_and_insider(PRODUCTION_TENANTS, canary))

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
