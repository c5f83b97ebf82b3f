"""End to end through the API, as ops and a CI pipeline use it: a CI job's OIDC token submits a payment change
(a fork's token submits nothing), the release is followed live over server-sent events, the author's approval is
refused by the API with nothing published, approvers approve through the API and through the CLI with `--api`
(no database or Kafka credentials at all), the coordinator records attested approvals and refuses a forged
attestation, and the rollback of v3 arrives on the live stream."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid

import httpx
import pytest

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import ApprovalGiven, Attestation
from releasegate_platform import identity
from releasegate_runtime.kafka import Producer
from tests.conftest import REPO, as_principal, wait_until
from tests.e2e.conftest import CANDIDATES
from tests.support.oidc import ci_token, person_token

pytestmark = [pytest.mark.slow, pytest.mark.integration]
API = "http://127.0.0.1:18800"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def audit(pool, rid: str) -> list[dict]:
    async with pool.acquire() as conn:
        return [
            dict(r)
            for r in await conn.fetch(
                "SELECT actor, state, reason FROM audit_log WHERE release_id = $1 ORDER BY id", rid
            )
        ]


async def follow(rid: str, token: str, seen: list[dict], ready: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=None) as http:
        async with http.stream("GET", f"{API}/v1/releases/{rid}/events", headers=bearer(token)) as stream:
            assert stream.status_code == 200
            async for line in stream.aiter_lines():
                if line.startswith(": live"):
                    ready.set()
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if seen[-1]["state"] in ("rolled_back", "promoted", "rollback_failed", "aborted", "rejected"):
                        return


class TestThroughTheApi:
    async def test_ci_submits_ops_follow_live_approve_and_see_the_rollback(self, pool, settings, api, stable_v1):
        async with httpx.AsyncClient(base_url=API, timeout=30) as http:
            candidate = json.loads((CANDIDATES / "shop-v3.json").read_text())

            # a fork's CI job submits nothing
            async with pool.acquire() as conn:
                before = await conn.fetchval("SELECT count(*) FROM sagas")
            fork = await http.post("/v1/candidates", json=candidate, headers=bearer(await ci_token("ci-github-fork")))
            assert fork.status_code == 403 and "mallory/sample-shop" in fork.json()["detail"]

            # the trusted pipeline submits and gets the release's id and page
            answer = await http.post("/v1/candidates", json=candidate, headers=bearer(await ci_token("ci-github-shop")))
            assert answer.status_code == 202, answer.text
            rid = answer.json()["release_id"]
            assert answer.json()["url"] == f"{API}/releases/{rid}"

            alice, dev = await person_token("alice"), await person_token("dev")
            seen: list[dict] = []
            ready = asyncio.Event()
            live = asyncio.create_task(follow(rid, alice, seen, ready))
            await asyncio.wait_for(ready.wait(), 30)

            async def waiting() -> bool:
                r = await http.get(f"/v1/releases/{rid}", headers=bearer(alice))
                return r.status_code == 200 and r.json()["release"]["state"] == "awaiting_approval"

            await wait_until(waiting, 240, f"{rid} to wait for approvals at the production gate")
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT count(*) FROM sagas") == before + 1  # the fork's made none

            # the author cannot approve: refused by the API, nothing reaches the coordinator
            logged = await audit(pool, rid)
            mine = await http.post(f"/v1/releases/{rid}/actions/approve", json={"reason": "mine"}, headers=bearer(dev))
            assert mine.status_code == 403 and "author" in mine.json()["detail"]
            page = (await http.get(f"/v1/releases/{rid}", headers=bearer(dev))).json()
            assert "approve" not in page["actions"] and "abort" in page["actions"]

            # a forged attestation (mallory's own key posing as the API, claiming the approver group) is refused
            await forged_approval(settings, rid)

            async def refused() -> bool:
                return any("by mallory refused" in r["reason"] for r in await audit(pool, rid))

            await wait_until(refused, 30, "the coordinator to refuse the forged attestation")
            async with pool.acquire() as conn:
                body = await conn.fetchval("SELECT body FROM sagas WHERE release_id = $1", rid)
            assert all(a["actor"] != "mallory" for a in body.get("approvals", []))

            # alice approves through the API; bob through the CLI with --api and nothing but his token
            ok = await http.post(
                f"/v1/releases/{rid}/actions/approve", json={"reason": "reviewed"}, headers=bearer(alice)
            )
            assert ok.status_code == 202, ok.text
            bob = await person_token("bob")
            out = await cli_over_api(bob, "approve", rid, "--reason", "payments change reviewed")
            assert out.returncode == 0, out.stdout + out.stderr

            await asyncio.wait_for(live, 400)
            entries = await audit(pool, rid)
            assert [e for e in logged if "by dev" in e["reason"]] == [e for e in entries if "by dev" in e["reason"]]
            assert any(e["actor"] == "alice" and "approval by alice recorded" in e["reason"] for e in entries)
            assert any(e["actor"] == "bob" and "approval by bob recorded" in e["reason"] for e in entries)
            states = [e["state"] for e in seen]
            assert states[-1] == "rolled_back" and "rolling_back" in states, states

            # the CLI over the API says how it ended, again without credentials
            watched = await cli_over_api(alice, "watch", rid, "--timeout", "30")
            assert watched.returncode == 1 and "rolled_back" in watched.stdout


async def cli_over_api(token: str, *args: str) -> subprocess.CompletedProcess:
    """`releasegate --api` as someone with only a token: no RG_* setting, no PostgreSQL or Kafka secret at all."""
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("RG_", "PG"))}
    return await asyncio.to_thread(
        subprocess.run,
        ["releasegate", "--api", API, *args],
        cwd=REPO,
        env={**bare, "RG_API_TOKEN": token, "RG_SECRETS_DIR": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def forged_approval(settings, rid: str) -> None:
    """What someone with the `ops` Kafka credentials (not the API's key) might try: an approval attested 'by api'
    for a person with the approver group, signed with a key the coordinator does not trust as the API's."""
    key = REPO / "examples" / "keys" / "dev.key"
    attestation = Attestation(by="api", issuer="http://127.0.0.1:19400", subject="mallory", groups=["shop-approvers"])
    command = identity.attest_command(
        key, ApprovalGiven(release_id=rid, actor="mallory", reason="looks fine"), attestation
    )
    producer = Producer(as_principal(settings, "ops"), f"forger-{uuid.uuid4().hex[:6]}")
    await producer.start()
    try:
        await producer.send_envelope(topics.CONTROL, Envelope.new(command, "forger", rid))
    finally:
        await producer.stop()
