"""Faults under a release in flight, on the live stack: Kafka stopped for a minute, PostgreSQL restarted, the
coordinator down longer than every step timeout while results wait for it in Kafka. Each ends with the release
in the state its verdicts call for, HAProxy serving that to every tenant, no step done twice, and every
service process alive and healthy."""

from __future__ import annotations

import asyncio

import pytest

from contracts import topics
from contracts.events import ReleaseState
from releasegate_cli.probes import TopicTail
from services.coordinator.model import STEP_TIMEOUTS
from tests.conftest import as_principal, wait_until
from tests.e2e.conftest import cli, operate, status, submit
from tests.support.faults.infra import start_infrastructure, stop_kafka, stop_postgres
from tests.support.faults.oracles import repeated_effects, served_to_every_tenant, timed_out, workload_drift

pytestmark = [pytest.mark.slow, pytest.mark.integration]
KAFKA_OUTAGE_SECONDS = 60
# the coordinator stays down until the gate's deadline is this far in the past (the deadline loop's tick and more)
PAST_DEADLINE_SECONDS = 10


async def _waiting_for(pool, rid: str, prefix: str) -> bool:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT state, body FROM sagas WHERE release_id = $1", rid)
    return bool(row) and row["state"] == "running" and (row["body"].get("waiting_for") or "").startswith(prefix)


def _watch(rid: str, timeout: float = 300) -> None:
    cli("watch", rid, "--timeout", str(timeout), timeout=timeout + 20)


async def _healthy_again(watched) -> None:
    async def healthy() -> bool:
        return not watched.crashed() and not await watched.unhealthy()

    await wait_until(healthy, 90, f"every service healthy again (crashed: {watched.crashed()})")


async def _ended_consistently(settings, pool, watched, rid: str, *, resumed: bool = False) -> None:
    release = status(rid)
    timeline = release["timeline"]
    assert release["state"] == "promoted", f"{release['state']}: {timeline[-1]['reason'] if timeline else ''}"
    assert not watched.crashed(), f"service processes exited: {watched.crashed()}"
    await _healthy_again(watched)
    assert await served_to_every_tenant("v2") == {}, "HAProxy does not serve the promoted version to every tenant"
    assert await workload_drift(settings, pool, rid) == []
    assert repeated_effects(timeline) == {}, "a step was requested or done twice"
    if not resumed:
        assert timed_out(timeline) == []


class TestInfrastructureOutages:
    async def test_kafka_stopped_for_a_minute_mid_release_and_restarted(self, settings, pool, watched, from_v1):
        rid = submit("v2")
        await wait_until(lambda: _waiting_for(pool, rid, "verify-canary"), 240, "the production canary")
        stop_kafka()
        try:
            await asyncio.sleep(KAFKA_OUTAGE_SECONDS)  # the outage itself: what is under test is riding it out
            assert not watched.crashed(), f"service processes exited during the broker outage: {watched.crashed()}"
        finally:
            start_infrastructure()

        async def ended_or_paused() -> str | None:
            async with pool.acquire() as conn:
                state = await conn.fetchval("SELECT state FROM sagas WHERE release_id = $1", rid)
            return state if state == "paused" or ReleaseState(state).terminal else None

        state = await wait_until(ended_or_paused, 300, "the release to end, or to pause for want of a verdict")
        resumed = state == "paused"
        if resumed:
            # a canary verdict that could not arrive within window + grace is inconclusive: the catalog's policy
            # pauses the release for an operator rather than guessing (it never rolls back for an outage)
            reason = status(rid)["timeline"][-1]["reason"]
            assert "no verdict" in reason, f"paused for another reason: {reason}"
            assert operate("resume", rid, "broker back after the outage", who="alice").returncode == 0
        _watch(rid)
        await _ended_consistently(settings, pool, watched, rid, resumed=resumed)

    async def test_postgresql_restarted_mid_release(self, settings, pool, watched, from_v1):
        rid = submit("v2")
        await wait_until(lambda: _waiting_for(pool, rid, ""), 60, "the release to start")
        stop_postgres()
        try:
            assert not watched.crashed(), f"service processes exited while PostgreSQL was down: {watched.crashed()}"
        finally:
            start_infrastructure()
        _watch(rid)
        await _ended_consistently(settings, pool, watched, rid)


class TestCoordinatorOutage:
    async def test_results_waiting_in_kafka_are_read_before_deadlines_fire(self, settings, pool, watched, from_v1):
        """The gate's result is produced while the coordinator is down and stays there for longer than every
        step timeout: the restarted coordinator must read it before it fires the gate's (long past) deadline."""
        admin = as_principal(settings, "admin")
        commands = await TopicTail(admin, topics.GATE_COMMANDS).start()
        results = await TopicTail(admin, topics.results_for("gatekeeper")).start()
        try:
            watched.services["gatekeeper"].stop()  # holds the gate's answer until the coordinator is gone
            rid = submit("v2")
            command = await commands.wait_for(lambda e: getattr(e.data, "release_id", None) == rid, 60)
            assert command is not None, "the coordinator never issued the staging gate"
            watched.services["coordinator"].kill()
            watched.restart("gatekeeper")
            result = await results.wait_for(lambda e: getattr(e.data, "release_id", None) == rid, 120)
            assert result is not None and result.data.passed, "the gatekeeper did not answer the staging gate"
        finally:
            await commands.stop()
            await results.stop()
        async with pool.acquire() as conn:
            due_in = await conn.fetchval(
                "SELECT extract(epoch FROM due_at - now()) FROM saga_deadlines WHERE release_id = $1 AND step_id = $2",
                rid,
                "gate-staging",
            )
        assert due_in is not None, "the gate's deadline is not in the saga: the coordinator would have nothing to fire"
        assert due_in <= STEP_TIMEOUTS["gate"], due_in
        # the outage itself: the coordinator stays down until the gate's deadline is long past

        async def deadline_long_past() -> bool:
            async with pool.acquire() as conn:
                return await conn.fetchval(
                    "SELECT now() > due_at + make_interval(secs => $3) FROM saga_deadlines"
                    " WHERE release_id = $1 AND step_id = $2",
                    rid,
                    "gate-staging",
                    float(PAST_DEADLINE_SECONDS),
                )

        await wait_until(deadline_long_past, float(due_in) + PAST_DEADLINE_SECONDS + 60, "the gate's deadline to pass")
        watched.restart("coordinator")
        _watch(rid)
        timeline = status(rid)["timeline"]
        assert timed_out(timeline) == [], "a step whose result waited in Kafka was failed by its deadline"
        assert sum(1 for e in timeline if e["reason"].startswith("gate-staging passed")) == 1
        await _ended_consistently(settings, pool, watched, rid)
