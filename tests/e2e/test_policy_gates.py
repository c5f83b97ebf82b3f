"""End to end, policy gates and supply chain: an unsigned artifact is rejected at the gate, a deploy command without
the coordinator's step grant (or with a spent one) is refused and dead-lettered with an alert, even a granted command
for an unsigned or tampered artifact is refused by the deployer itself, and a destructive migration is blocked
while production still uses what it drops."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import AlertRaised, DeadLetter, DeployAction, DeployFinished, DeployRequested
from releasegate_cli.probes import TopicTail
from releasegate_platform import supply_chain
from releasegate_runtime import grants
from releasegate_runtime.kafka import Producer
from shop import build_bundles
from tests.conftest import as_principal
from tests.e2e.conftest import CANDIDATES, cli, status

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _submit_file(tmp_path, candidate: dict) -> str:
    path = tmp_path / f"{candidate['version']}-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(candidate))
    out = cli("submit", str(path))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _watch(rid: str) -> dict:
    watched = cli("watch", rid, "--timeout", "240", timeout=260)
    assert watched.returncode == 1, watched.stdout[-2000:]
    return status(rid)


def _command(digest: str, attestation: dict | None, settings=None) -> DeployRequested:
    """A deploy command that bypassed the gatekeeper; with `settings`, also granted with the coordinator's own key
    (an insider who has it)."""
    rid = f"forged-{uuid.uuid4().hex[:8]}"
    command = DeployRequested(
        release_id=rid,
        step_id="canary-10",
        service="shop",
        version="vx",
        digest=digest,
        environment="production",
        action=DeployAction.START,
        weight=10,
        attestation=attestation,
    )
    if settings is None:
        return command
    signer = grants.load_grant_signer(settings.signing_key_file or settings.secrets_dir / "keys" / "coordinator.key")
    return grants.with_grant(signer, command, issued_at=datetime.now(UTC), lifetime=timedelta(minutes=5))


async def _send(settings, command: DeployRequested, *topics_read: str, times: int = 1) -> TopicTail:
    """Publish `command` (each time as a new CloudEvent) with the coordinator's Kafka credentials, straight to the
    deployer's topic; returns a tail of `topics_read` started before."""
    tail = await TopicTail(as_principal(settings, "ops"), *topics_read).start()
    producer = Producer(as_principal(settings, "coordinator"), "e2e-forger")
    await producer.start()
    try:
        for _ in range(times):
            await producer.send_envelope(
                topics.DEPLOY_COMMANDS, Envelope.new(command, "e2e/forger", command.release_id)
            )
    finally:
        await producer.stop()
    return tail


async def _forge_deploy(settings, digest: str, attestation: dict | None) -> DeployFinished:
    """A granted deploy command for `digest`, and the deployer's answer to it."""
    command = _command(digest, attestation, settings)
    results = await TopicTail(as_principal(settings, "coordinator"), topics.results_for("deployer")).start()
    tail = await _send(settings, command)
    try:
        reply = await results.wait_for(lambda e: e.subject == command.release_id, timeout=60)
    finally:
        await results.stop()
        await tail.stop()
    assert reply is not None and isinstance(reply.data, DeployFinished)
    return reply.data


async def _refusals(tail: TopicTail, rid: str, count: int) -> tuple[list[DeadLetter], list[AlertRaised]]:
    """The dead letters and alerts of release `rid` once `count` of each arrived (or after 60 s)."""

    def of(kind):  # the deployer's refusals (the coordinator also dead-letters results of a release it never ran)
        return [
            e.data
            for e in tail.seen
            if e.subject == rid
            and isinstance(e.data, kind)
            and getattr(e.data, "consumer", "releasegate-deployer") == "releasegate-deployer"
        ]

    try:
        await tail.wait_for(lambda _: len(of(DeadLetter)) >= count and len(of(AlertRaised)) >= count, timeout=60)
    finally:
        await tail.stop()
    return of(DeadLetter), of(AlertRaised)


async def _instances_of(pool, digest: str) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM instances WHERE digest = $1", digest)


class TestSupplyChain:
    async def test_unsigned_artifact_is_rejected_at_the_first_gate(self, tmp_path, services, stable_v1):
        candidate = json.loads((CANDIDATES / "shop-v2.json").read_text())
        candidate.pop("attestation")
        release = _watch(_submit_file(tmp_path, candidate))
        assert release["state"] == "rejected"
        gate = next(t for t in release["timeline"] if t["step"] == "gate-staging" and "failed" in t["reason"])
        check = next(c for c in gate["evidence"]["checks"] if c["name"] == "signed_provenance")
        assert not check["passed"] and "unsigned" in check["reason"]
        assert not any(t["step"] == "deploy-staging" for t in release["timeline"])

    async def test_signature_by_a_key_outside_the_trust_root_is_rejected(self, tmp_path, services, stable_v1):
        key, _ = supply_chain.keygen(tmp_path, "mallory")
        candidate = json.loads((CANDIDATES / "shop-v2.json").read_text())
        statement = json.loads(base64.b64decode(candidate["attestation"]["payload"]))
        candidate["attestation"] = supply_chain.sign(statement, [key])
        release = _watch(_submit_file(tmp_path, candidate))
        explained = cli("explain", release["release_id"]).stdout
        assert release["state"] == "rejected" and "Blocked by signed_provenance" in explained

    async def test_deployer_refuses_a_command_without_the_coordinators_step_grant(
        self, settings, pool, services, stable_v1
    ):
        candidate = json.loads((CANDIDATES / "shop-v2.json").read_text())
        digest = candidate["artifact"]["digest"]
        before = await _instances_of(pool, digest)
        command = _command(digest, candidate["attestation"])
        tail = await _send(settings, command, topics.DEADLETTER, topics.ALERTS)
        (letter,), (alert,) = await _refusals(tail, command.release_id, 1)
        assert letter.error_type == "CommandRefused" and "no step grant" in letter.reason
        assert alert.severity.value == "critical" and "no step grant" in alert.detail
        assert await _instances_of(pool, digest) == before
        async with pool.acquire() as conn:
            refused = await conn.fetch(
                "SELECT consumer, step_id, reason FROM refused_commands WHERE release_id = $1", command.release_id
            )
        assert [(r["consumer"], r["step_id"]) for r in refused] == [("deployer", "canary-10")]

    async def test_a_step_grant_is_spent_by_the_first_record_that_uses_it(self, settings, pool, services, stable_v1):
        command = _command("sha256:" + "0" * 64, None, settings)
        tail = await _send(settings, command, topics.DEADLETTER, topics.ALERTS, times=2)
        (letter,), (alert,) = await _refusals(tail, command.release_id, 1)
        assert "already used by event" in letter.reason and "already used by event" in alert.detail

    async def test_deployer_refuses_a_forged_command_for_an_unsigned_artifact(
        self, settings, pool, services, stable_v1
    ):
        digest = json.loads((CANDIDATES / "shop-v2.json").read_text())["artifact"]["digest"]
        before = await _instances_of(pool, digest)
        result = await _forge_deploy(settings, digest, attestation=None)
        assert not result.succeeded and "unsigned" in result.reason
        assert await _instances_of(pool, digest) == before

    async def test_deployer_refuses_a_tampered_bundle_even_with_valid_provenance(
        self, settings, pool, services, stable_v1
    ):
        files = build_bundles.bundle_files("v2")
        files["storefront/extra.py"] = f"# build {uuid.uuid4()}\n".encode()
        digest = build_bundles.store_blob(settings.artifact_store, build_bundles.tarball(files))
        attestation = build_bundles.attestation("v2", digest)
        stored = settings.artifact_store / "sha256" / f"{digest.removeprefix('sha256:')}.tar.gz"
        tampered = files | {"storefront/payments.py": b"def authorize(*a, **k):\n    return 'stolen'\n"}
        stored.write_bytes(build_bundles.tarball(tampered))
        result = await _forge_deploy(settings, digest, attestation=copy.deepcopy(attestation))
        assert not result.succeeded and "tampered" in result.reason
        assert await _instances_of(pool, digest) == 0


class TestExpandContract:
    async def test_contract_migration_is_blocked_while_production_still_uses_the_column(self, services, stable_v1):
        rid = cli("submit", str(CANDIDATES / "shop-v7.json")).stdout.strip()
        release = _watch(rid)
        assert release["state"] == "rejected"
        explained = cli("explain", rid).stdout
        assert "Blocked by expand_contract" in explained
        assert "drops carts.status, which v1 (promoted in production) still uses" in explained
