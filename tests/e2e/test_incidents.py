"""End to end: v3, rolled back by itself, opens an incident naming the failing KPI and the verifier that caught it;
a high follow-up added with a signed command blocks the shop's next production release (explain names it); a
forged and an unsigned close change nothing; closed with a signed command, the next release passes the gate.
Driven through the `releasegate` CLI, as ops would (catalog/shop.yaml: `incidents.block_production_on_open`)."""

from __future__ import annotations

import asyncio
import json

import pytest

from contracts.events import FollowupClosed
from releasegate_cli import client
from tests.conftest import as_principal, wait_until
from tests.e2e.conftest import KEYS, cli, operate, status, submit

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def incident(rid: str) -> dict | None:
    out = cli("incident", rid, "--json")
    return json.loads(out.stdout) if out.returncode == 0 else None


def close(rid: str, number: int, who: str = "carol", *, key: str | None = None) -> None:
    out = cli(
        "followup", "close", rid, str(number), "--reason", "card-mix verifier now runs in staging",
        "--key", str(KEYS / f"{key or who}.key"), "--actor", who,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


async def _close_leftovers(pool) -> None:
    """A run that stopped half-way may have left a follow-up open, which would block every shop release after it."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT release_id, followup_id FROM incident_followups WHERE service = 'shop' AND status = 'open'"
        )
    for row in rows:
        await asyncio.to_thread(close, row["release_id"], row["followup_id"])
    for row in rows:
        await wait_until(lambda r=row: _closed(r["release_id"], r["followup_id"]), 30, "a leftover follow-up to close")


async def _closed(rid: str, number: int) -> bool:
    found = await asyncio.to_thread(incident, rid)
    return bool(found) and any(f["followup_id"] == number and f["status"] == "closed" for f in found["followups"])


def _gate_passed(rid: str) -> bool:
    return any(t["step"] == "gate-production" and "passed" in t["reason"] for t in status(rid)["timeline"])


async def test_a_rollback_opens_an_incident_whose_high_follow_up_blocks_production_until_closed(
    pool, settings, services, stable_v1
):
    await _close_leftovers(pool)
    v3 = submit("v3", approvers=("alice", "bob"))
    watched = await asyncio.to_thread(cli, "watch", v3, "--timeout", "200", timeout=220)
    assert watched.returncode == 1 and status(v3)["state"] == "rolled_back", watched.stdout[-2000:]

    # the incident, opened with the terminal state, says what failed, where and who caught it
    found = incident(v3)
    assert found is not None and found["outcome"] == "rolled_back"
    findings = found["findings"]
    assert findings["verifier"] == "business-kpis" and findings["environment"] == "production"
    assert findings["step"].startswith("verify-canary")
    kpis = {k["name"]: k for k in findings["kpis"]}
    assert kpis and set(kpis) <= {"payment_authorization_rate", "checkout_success_rate"}
    assert all(k["candidate"] < k["baseline"] for k in kpis.values()), kpis

    added = cli(
        "followup", "add", v3, "--kind", "verifier", "--severity", "high", "--owner", "shop-approvers",
        "--title", "staging smoke with the production card mix", "--key", str(KEYS / "alice.key"),
    )  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    try:
        await wait_until(
            lambda: asyncio.to_thread(lambda: bool((incident(v3) or {}).get("followups"))), 30, "the follow-up"
        )
        (followup,) = incident(v3)["followups"]
        assert (followup["followup_id"], followup["status"], followup["added_by"]) == (1, "open", "alice")

        # attacks: a close signed with another person's key, and one not signed at all, change nothing
        close(v3, 1, "carol", key="dev")
        unsigned = FollowupClosed(release_id=v3, actor="carol", reason="trust me", followup=1)
        await client.control(as_principal(settings, "ops"), unsigned)

        def refusals() -> list[str]:
            return [
                t["reason"] for t in status(v3)["timeline"] if "close of follow-up 1 by carol refused" in t["reason"]
            ]

        await wait_until(lambda: asyncio.to_thread(lambda: len(refusals()) == 2), 30, "both closes to be refused")
        assert any("signature does not verify" in r for r in refusals())
        assert any("no signature" in r for r in refusals())
        assert incident(v3)["followups"][0]["status"] == "open"

        # the shop's next production release is blocked, the follow-up named
        blocked = submit("v2")
        watched = await asyncio.to_thread(cli, "watch", blocked, "--timeout", "120", timeout=140)
        assert watched.returncode == 1 and status(blocked)["state"] == "rejected", watched.stdout[-2000:]
        explained = cli("explain", blocked).stdout
        assert "Blocked by open_followups" in explained and f"{v3}#1" in explained, explained
        assert "staging smoke with the production card mix" in explained

        close(v3, 1, "carol")
        await wait_until(lambda: _closed(v3, 1), 30, "the follow-up to close")
    finally:
        await _close_leftovers(pool)

    # closed: the next release passes the production gate (then it is aborted: its canary is not the story here)
    again = submit("v2")
    await wait_until(lambda: asyncio.to_thread(_gate_passed, again), 120, "the production gate to pass")
    assert operate("abort", again, "incident test done").returncode == 0
    watched = await asyncio.to_thread(cli, "watch", again, "--timeout", "60", timeout=80)
    assert status(again)["state"] == "aborted", watched.stdout[-2000:]
