"""Attacks on the control plane, each against a release in flight on the live stack (v3, waiting at the production
gate for approvals): a forged verdict, a forged gate pass, a verdict laundered through a forged request, forged
heartbeats, unsigned and replayed operator commands, a forged deploy command replaying an old signed artifact, a
forged restore to an old backup, a principal writing where it may not, and candidate code reaching for the
control database, Kafka and HAProxy. Each asserts that nothing changed (release state, HAProxy servers, weights
and routes, production database and backups) and that the refusal is on record."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import (
    AbortRequested,
    DeadLetter,
    DeployAction,
    DeployRequested,
    GateCheckFinished,
    ResumeRequested,
    RollbackRequested,
    Verdict,
    VerificationFinished,
    VerificationRequested,
    VerifierHeartbeat,
)
from releasegate_cli.probes import TopicTail
from releasegate_platform import identity
from releasegate_platform.haproxy import HAProxy
from releasegate_runtime import grants
from releasegate_runtime.kafka import Producer, client_options
from tests.conftest import REPO, as_principal, wait_until
from tests.e2e.conftest import CANDIDATES, KEYS, cli, submit

pytestmark = [pytest.mark.slow, pytest.mark.integration]
BACKENDS = ["shop_production", "shop_production_wave", "shop_staging"]
MAPS = ["tenants-production.map", "maintenance-production.map"]


@pytest.fixture(scope="module")
async def target(settings, services):
    """v3 (high risk: two approvals needed) submitted without approvals, from v1 as the stable version: it passes
    staging and waits at the production gate. Aborted (signed) at the end."""
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.deployer.bootstrap", "--force", str(CANDIDATES / "shop-v1.json")],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    rid = submit("v3")

    async def waiting():
        out = cli("status", rid, "--json")
        return out.returncode == 0 and '"state": "awaiting_approval"' in out.stdout

    await wait_until(waiting, 300, f"{rid} to wait for approvals at the production gate")
    yield rid
    cli("abort", rid, "--reason", "end of the attack tests", "--key", str(KEYS / "carol.key"))


async def snapshot(settings, pool, rid: str) -> dict:
    """What an attack must not change: the saga (its revision counts every update), the instances, HAProxy's
    servers, weights and routes, the production database's schema, migrations and backups."""
    haproxy = HAProxy(settings.haproxy_admin)
    run = settings.run_dir / "haproxy"
    async with pool.acquire() as conn:
        saga = dict(await conn.fetchrow("SELECT state, revision, body FROM sagas WHERE release_id = $1", rid))
        instances = [
            dict(r)
            for r in await conn.fetch(
                "SELECT id, environment, version, slot, state FROM instances WHERE state <> 'stopped' ORDER BY id"
            )
        ]
        backups = await conn.fetchval("SELECT count(*) FROM backups")
    shop = await asyncpg.connect(settings.role_dsn("releasegate", "shop"))
    try:
        schema = [
            tuple(r)
            for r in await shop.fetch(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'public' ORDER BY 1, 2"
            )
        ]
        migrations = (
            await shop.fetchval("SELECT count(*) FROM releasegate_migrations")
            if await shop.fetchval("SELECT to_regclass('releasegate_migrations') IS NOT NULL")
            else 0
        )
        orders = await shop.fetchval("SELECT count(*) FROM orders")
    finally:
        await shop.close()
    servers = {
        b: sorted((s.name, s.addr, s.port, s.weight, s.maintenance) for s in await haproxy.servers(b)) for b in BACKENDS
    }
    routes = {m: await haproxy.map_entries(str(run / m)) for m in MAPS}
    return {
        "saga": saga,
        "instances": instances,
        "servers": servers,
        "routes": routes,
        "backups": backups,
        "schema": schema,
        "migrations": migrations,
        "orders": orders,
    }


def assert_unchanged(before: dict, after: dict) -> None:
    # shoppers keep placing orders: the order count may only grow (no restore took data back)
    assert after.pop("orders") >= before.pop("orders"), "orders disappeared from production"
    assert after == before


async def audit_after(pool, rid: str, after_id: int) -> list[dict]:
    async with pool.acquire() as conn:
        return [
            dict(r)
            for r in await conn.fetch(
                "SELECT id, actor, state, reason FROM audit_log WHERE release_id = $1 AND id > $2 ORDER BY id",
                rid,
                after_id,
            )
        ]


async def last_audit_id(pool, rid: str) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT coalesce(max(id), 0) FROM audit_log WHERE release_id = $1", rid)


async def publish(settings, principal: str, topic: str, event, subject: str | None) -> Envelope:
    envelope = Envelope.new(event, f"attacker/{principal}", subject)
    producer = Producer(as_principal(settings, principal), f"attacker-{principal}")
    await producer.start()
    try:
        await producer.send_envelope(topic, envelope)
    finally:
        await producer.stop()
    return envelope


async def refused_in_audit(pool, rid: str, since: int, words: str) -> list[dict]:
    async def found():
        return [r for r in await audit_after(pool, rid, since) if words in r["reason"]]

    return await wait_until(found, 60, f"the refusal ({words!r}) in {rid}'s audit log")


async def dead_letter(tail: TopicTail, event_id: str, words: str) -> DeadLetter:
    letter = await tail.wait_for(
        lambda e: isinstance(e.data, DeadLetter) and e.data.headers.get("ce_id") == event_id, timeout=60
    )
    assert letter is not None, f"no dead letter for {event_id}"
    assert words in letter.data.reason, letter.data.reason
    return letter.data


def saga_step(before: dict) -> str:
    return before["saga"]["body"]["waiting_for"]


class TestForgedResults:
    async def test_a_pass_verdict_forged_by_another_verifier_is_refused(self, settings, pool, target):
        before, since = await snapshot(settings, pool, target), await last_audit_id(pool, target)
        now = datetime.now(UTC)
        forged = VerificationFinished(
            release_id=target,
            step_id=saga_step(before),
            environment="production",
            verdict=Verdict.PASS,
            reason="all good",
            kpis=[],
            window_start=now,
            window_end=now,
            verifier="business-kpis",
        )
        # the tax team's credential can only write its own result topic: the coordinator knows who sent it
        await publish(settings, "verifier-tax", topics.results_for("verifier-tax"), forged, target)
        refusal = await refused_in_audit(pool, target, since, "only verifier-business-kpis")
        assert refusal[0]["actor"] == "principal:verifier-tax"
        assert_unchanged(before, await snapshot(settings, pool, target))

    async def test_nobody_else_can_write_a_verifiers_result_topic(self, settings, pool, target):
        before = await snapshot(settings, pool, target)
        now = datetime.now(UTC)
        forged = VerificationFinished(
            release_id=target,
            step_id=saga_step(before),
            environment="production",
            verdict=Verdict.PASS,
            reason="all good",
            kpis=[],
            window_start=now,
            window_end=now,
            verifier="business-kpis",
        )
        for principal in ("ops", "ci", "shop", "verifier-tax"):
            with pytest.raises(TopicAuthorizationFailedError):
                await publish(settings, principal, topics.results_for("verifier-business-kpis"), forged, target)
        assert_unchanged(before, await snapshot(settings, pool, target))

    async def test_a_gate_pass_forged_by_another_service_is_refused(self, settings, pool, target):
        before, since = await snapshot(settings, pool, target), await last_audit_id(pool, target)
        forged = GateCheckFinished(
            release_id=target,
            step_id=saga_step(before),
            environment="production",
            passed=True,
            checks=[],
            decision="pass",
        )
        await publish(settings, "deployer", topics.results_for("deployer"), forged, target)
        await refused_in_audit(pool, target, since, "only gatekeeper reports it")
        with pytest.raises(TopicAuthorizationFailedError):
            await publish(settings, "ops", topics.results_for("gatekeeper"), forged, target)
        assert_unchanged(before, await snapshot(settings, pool, target))

    async def test_a_verdict_cannot_be_laundered_through_a_forged_verification_request(self, settings, pool, target):
        before = await snapshot(settings, pool, target)
        request = VerificationRequested(
            release_id=target,
            step_id=saga_step(before),
            service="shop",
            environment="production",
            candidate_version="v3",
            stable_version="v1",
            window_seconds=1,
            min_samples=1,
            thresholds={},
        )
        for principal in ("ops", "ci", "shop", "verifier-business-kpis", "deployer"):
            with pytest.raises(TopicAuthorizationFailedError):
                await publish(settings, principal, topics.VERIFY_COMMANDS, request, target)
        assert_unchanged(before, await snapshot(settings, pool, target))


class TestForgedHeartbeats:
    async def test_a_heartbeat_for_another_verifier_or_from_the_future_is_refused(self, settings, pool, target):
        before = await snapshot(settings, pool, target)
        async with pool.acquire() as conn:
            registry_before = [dict(r) for r in await conn.fetch("SELECT * FROM verifier_registry ORDER BY 1, 2")]
        letters = await TopicTail(as_principal(settings, "ops"), topics.DEADLETTER).start()
        try:
            impostor = VerifierHeartbeat(
                name="business-kpis",
                version="6.6.6",
                instance="evil",
                services=["*"],
                environments=["*"],
                interval_seconds=5,
                sent_at=datetime.now(UTC),
            )
            sent = await publish(settings, "verifier-tax", topics.results_for("verifier-tax"), impostor, None)
            await dead_letter(letters, sent.id, "only verifier-business-kpis may announce it")
            immortal = VerifierHeartbeat(
                name="tax",
                version="6.6.6",
                instance="evil",
                services=["*"],
                environments=["*"],
                interval_seconds=5,
                sent_at=datetime.now(UTC) + timedelta(days=30),
            )
            sent = await publish(settings, "verifier-tax", topics.results_for("verifier-tax"), immortal, None)
            await dead_letter(letters, sent.id, "in the future")
        finally:
            await letters.stop()
        async with pool.acquire() as conn:
            assert not await conn.fetchval("SELECT count(*) FROM verifier_registry WHERE instance = 'evil'")
            assert not await conn.fetchval(
                "SELECT count(*) FROM verifier_registry WHERE last_heartbeat > now() + interval '1 minute'"
            )
            assert len(await conn.fetch("SELECT 1 FROM verifier_registry")) >= len(registry_before)
        assert_unchanged(before, await snapshot(settings, pool, target))


class TestOperatorCommands:
    async def test_an_unsigned_abort_is_refused_and_recorded(self, settings, pool, target):
        before, since = await snapshot(settings, pool, target), await last_audit_id(pool, target)
        await publish(
            settings, "ops", topics.CONTROL, AbortRequested(release_id=target, actor="carol", reason="trust me"), target
        )
        refusal = await refused_in_audit(pool, target, since, "refused")
        assert "sign" in refusal[0]["reason"] and refusal[0]["actor"] == "carol"
        after = await snapshot(settings, pool, target)
        assert after["saga"]["state"] == "awaiting_approval"
        # the refusal is recorded in the saga's history; nothing else about the release moved
        for snap in (before, after):
            snap["saga"] = {k: v for k, v in snap["saga"].items() if k == "state"}
        assert_unchanged(before, after)

    async def test_a_replayed_signed_command_is_refused(self, settings, pool, target):
        since = await last_audit_id(pool, target)
        signed = identity.sign_command(
            KEYS / "alice.key", ResumeRequested(release_id=target, actor="alice", reason="resume if paused")
        )
        await publish(settings, "ops", topics.CONTROL, signed, target)  # acted on (ignored: not paused)
        await wait_until(lambda: refused_or_noted(pool, target, since, "resume by alice"), 60, "the resume")
        before, since = await snapshot(settings, pool, target), await last_audit_id(pool, target)
        await publish(settings, "ops", topics.CONTROL, signed, target)  # the same signed bytes, a new CloudEvent
        await refused_in_audit(pool, target, since, "replayed")
        after = await snapshot(settings, pool, target)
        assert after["saga"]["state"] == before["saga"]["state"] == "awaiting_approval"
        for snap in (before, after):
            snap["saga"] = snap["saga"]["state"]
        assert_unchanged(before, after)

    async def test_a_signature_by_someone_outside_the_identities_is_refused(self, settings, pool, target, tmp_path):
        from releasegate_platform import supply_chain

        key, _ = supply_chain.keygen(tmp_path, "mallory")
        before, since = await snapshot(settings, pool, target), await last_audit_id(pool, target)
        forged = identity.sign_command(key, AbortRequested(release_id=target, actor="carol", reason="signed by me"))
        await publish(settings, "ops", topics.CONTROL, forged, target)
        await refused_in_audit(pool, target, since, "does not verify")
        after = await snapshot(settings, pool, target)
        for snap in (before, after):
            snap["saga"] = snap["saga"]["state"]
        assert_unchanged(before, after)


async def refused_or_noted(pool, rid: str, since: int, words: str) -> bool:
    return any(words in r["reason"] for r in await audit_after(pool, rid, since))


class TestForgedWorkerCommands:
    async def test_a_deploy_command_replaying_an_old_signed_artifact_is_refused(self, settings, pool, target):
        """With the coordinator's Kafka credential but not its signing key: v1's real, signed artifact pushed to all
        of production."""
        before = await snapshot(settings, pool, target)
        old = _candidate("v1")
        command = DeployRequested(
            release_id=target,
            step_id="canary-100",
            service="shop",
            version="v1",
            digest=old["artifact"]["digest"],
            environment="production",
            action=DeployAction.START,
            weight=100,
            attestation=old["attestation"],
        )
        letters = await TopicTail(as_principal(settings, "ops"), topics.DEADLETTER, topics.ALERTS).start()
        try:
            sent = await publish(settings, "coordinator", topics.DEPLOY_COMMANDS, command, target)
            await dead_letter(letters, sent.id, "no step grant")
            alert = await letters.wait_for(
                lambda e: (
                    e.subject == target and "refused" in getattr(e.data, "title", "") + getattr(e.data, "detail", "")
                ),
                timeout=60,
            )
            assert alert is not None, "no alert about the refused command"
        finally:
            await letters.stop()
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM refused_commands WHERE event_id = $1", sent.id) == 1
        assert_unchanged(before, await snapshot(settings, pool, target))

    async def test_a_real_grant_copied_into_a_new_command_is_refused(self, settings, pool, target):
        """A deploy command the coordinator really issued for this release, re-sent as a new CloudEvent."""
        async with pool.acquire() as conn:
            payload = await conn.fetchval(
                "SELECT payload FROM outbox WHERE producer = 'coordinator' AND key = $1 AND topic = $2"
                " ORDER BY id LIMIT 1",
                target,
                topics.DEPLOY_COMMANDS,
            )
        issued = DeployRequested.model_validate_json(payload)
        assert issued.grant is not None
        before = await snapshot(settings, pool, target)
        letters = await TopicTail(as_principal(settings, "ops"), topics.DEADLETTER).start()
        try:
            sent = await publish(settings, "coordinator", topics.DEPLOY_COMMANDS, issued, target)
            letter = await dead_letter(letters, sent.id, "refused")
            assert "used" in letter.reason or "expired" in letter.reason
        finally:
            await letters.stop()
        assert_unchanged(before, await snapshot(settings, pool, target))

    async def test_a_restore_to_an_old_backup_is_refused_even_with_the_coordinators_key(self, settings, pool, target):
        """Production back to an old dump: refused without a grant, and refused with one signed by the stolen
        coordinator key, because the backup is not this release's backup point."""
        async with pool.acquire() as conn:
            old = await conn.fetchval("SELECT min(id) FROM backups WHERE database = 'shop'")
        assert old is not None
        before = await snapshot(settings, pool, target)
        restore = RollbackRequested(
            release_id=target,
            step_id="compensate:production",
            compensation="restore_data",
            service="shop",
            environment="production",
            candidate_version="v3",
            backup_id=old,
            since=datetime.now(UTC) - timedelta(days=1),
        )
        signer = grants.load_grant_signer(settings.secrets_dir / "keys" / "coordinator.key")
        granted = grants.with_grant(signer, restore, issued_at=datetime.now(UTC), lifetime=timedelta(minutes=5))
        letters = await TopicTail(as_principal(settings, "ops"), topics.DEADLETTER).start()
        try:
            sent = await publish(settings, "coordinator", topics.ROLLBACK_COMMANDS, restore, target)
            await dead_letter(letters, sent.id, "no step grant")
            sent = await publish(settings, "coordinator", topics.ROLLBACK_COMMANDS, granted, target)
            await dead_letter(letters, sent.id, "backup")
        finally:
            await letters.stop()
        assert_unchanged(before, await snapshot(settings, pool, target))

    async def test_ci_cannot_write_any_command_or_control_topic(self, settings, pool, target):
        before = await snapshot(settings, pool, target)
        command = DeployRequested(
            release_id=target,
            step_id="canary-100",
            service="shop",
            version="v3",
            digest="sha256:" + "0" * 64,
            environment="production",
            action=DeployAction.SHIFT,
            weight=100,
        )
        for topic in (
            topics.DEPLOY_COMMANDS,
            topics.ROLLBACK_COMMANDS,
            topics.GATE_COMMANDS,
            topics.CONTROL,
            topics.STATUS,
            topics.results_for("deployer"),
        ):
            with pytest.raises(TopicAuthorizationFailedError):
                await publish(settings, "ci", topic, command, target)
        assert_unchanged(before, await snapshot(settings, pool, target))


def _candidate(version: str) -> dict:
    return json.loads((CANDIDATES / f"shop-{version}.json").read_text())


class TestCandidateConfinement:
    async def test_candidate_code_reaches_neither_the_control_plane_nor_other_secrets(self, settings, pool, target):
        async with pool.acquire() as conn:
            pid = await conn.fetchval(
                "SELECT pid FROM instances WHERE environment = 'production' AND state ="
                " 'serving' ORDER BY id DESC LIMIT 1"
            )
        assert pid, "no production instance serving"
        status = await asyncio.to_thread(Path(f"/proc/{pid}/status").read_text)
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if os.geteuid() == 0:
            assert pwd.getpwuid(uid).pw_name == "rg-candidate"
        environ = dict(
            item.split("=", 1)
            for item in (await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes))
            .decode(errors="replace")
            .split("\0")
            if "=" in item
        )
        assert not [k for k in environ if k.startswith("RG_")], "the deployer's settings leaked to the candidate"
        assert all(not k.startswith("SHOP_") or k in ALLOWED_SHOP for k in environ), environ.keys()
        secrets = settings.secrets_dir
        leaked = [
            p.name
            for p in (secrets / "kafka").glob("*.password")
            if p.name != "shop.password" and p.read_text().strip() in environ.values()
        ]
        assert not leaked, f"secrets of {leaked} in the candidate's environment"

        # its own database role cannot even connect to the control database
        control = environ["SHOP_DATABASE_URL"].rsplit("/", 1)[0] + "/releasegate"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(control, timeout=5)

        # its own Kafka principal may write shop.events and nothing else, and read nothing
        options = {
            **client_options(as_principal(settings, "shop")),
            "sasl_plain_username": environ["SHOP_KAFKA_USERNAME"],
            "sasl_plain_password": environ["SHOP_KAFKA_PASSWORD"],
        }
        producer = AIOKafkaProducer(**options)
        await producer.start()
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait(topics.CONTROL, b"{}")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
        await consumer.start()
        try:  # the topics it may even see: its own (the broker hides the rest from its metadata)
            assert await consumer.topics() == {topics.SHOP_EVENTS}
        finally:
            await consumer.stop()

        # and it cannot open HAProxy's runtime API (owner-only unix socket, no TCP listener)
        sock = await asyncio.to_thread(os.stat, settings.haproxy_admin)
        assert stat.S_ISSOCK(sock.st_mode) and (sock.st_mode & 0o077) == 0 and sock.st_uid != uid


ALLOWED_SHOP = {
    "SHOP_KAFKA_BOOTSTRAP",
    "SHOP_KAFKA_USERNAME",
    "SHOP_KAFKA_PASSWORD",
    "SHOP_KAFKA_CA_FILE",
    "SHOP_DATABASE_URL",
    "SHOP_PAYMENT_URL",
    "SHOP_ERP_URL",
    "SHOP_EVENTS_TOPIC",
    "SHOP_PORT",
    "SHOP_ENVIRONMENT",
    "SHOP_INSTANCE_ID",
    "SHOP_ERP_ADOPT_AFTER_SECONDS",
}
