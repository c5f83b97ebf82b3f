"""The worker services SIGKILLed in the middle of their work on a real release, and started again: the deployer
while it starts the production canary, the rollback service while it carries out a compensation, the verifier
during a canary window. Each release ends as its verdicts call for, with the workload exactly the stable version's
(no orphan candidate process, no stray HAProxy weight, no tenant left routed), no step done twice, and every
service process alive and healthy."""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable

import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import cli, status, submit
from tests.support.faults.oracles import repeated_effects, served_to_every_tenant, timed_out, workload_drift

pytestmark = [pytest.mark.slow, pytest.mark.integration]


async def _saga(pool, rid: str) -> tuple[str, str]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT state, body FROM sagas WHERE release_id = $1", rid)
    return (row["state"], row["body"].get("waiting_for") or "") if row else ("", "")


async def _frozen_when(watched, name: str, moment: Callable[[], Awaitable[object]], timeout: float = 300) -> object:
    """SIGSTOP service `name` as soon as `moment()` is truthy (checked every 10 ms, as a step may take only a
    fraction of a second): whatever it was doing is held exactly there, for the test to check and then kill."""
    found = await wait_until(moment, timeout, f"the moment to stop {name}", every=0.01)
    os.killpg(watched.services[name].proc.pid, signal.SIGSTOP)
    return found


def _killed_and_restarted(watched, name: str) -> None:
    watched.services[name].kill()  # SIGKILL reaches a stopped process too
    watched.restart(name)


async def _ended(settings, pool, watched, rid: str, version: str, state: str) -> list[dict]:
    watch = cli("watch", rid, "--timeout", "300", timeout=320)
    release = status(rid)
    timeline = release["timeline"]
    assert release["state"] == state, f"{release['state']}: {watch.stdout[-1500:]}"
    assert not watched.crashed(), f"service processes exited: {watched.crashed()}"

    async def healthy() -> bool:
        return not watched.crashed() and not await watched.unhealthy()

    await wait_until(healthy, 90, "every service healthy again")
    assert await served_to_every_tenant(version) == {}, f"HAProxy does not serve {version} to every tenant"
    assert await workload_drift(settings, pool, rid) == []
    assert repeated_effects(timeline) == {}, "a step was requested or done twice"
    assert timed_out(timeline) == [], "a step was failed by its deadline"
    return timeline


class TestWorkerKills:
    async def test_the_deployer_killed_while_starting_the_canary_starts_it_once_after_its_restart(
        self, settings, pool, watched, from_v1
    ):
        rid = submit("v2")

        async def canary_starting() -> int | None:
            async with pool.acquire() as conn:
                return await conn.fetchval(
                    "SELECT id FROM instances WHERE release_id = $1 AND environment = 'production'"
                    " AND state = 'starting'",
                    rid,
                )

        half_started = await _frozen_when(watched, "deployer", canary_starting)
        assert await canary_starting() == half_started, "the deployer was not stopped mid-start"
        _killed_and_restarted(watched, "deployer")
        await _ended(settings, pool, watched, rid, "v2", "promoted")
        async with pool.acquire() as conn:
            killed_in = await conn.fetchval("SELECT state FROM instances WHERE id = $1", half_started)
        assert killed_in == "stopped", "the instance the killed deployer was starting was left behind"

    async def test_the_rollback_service_killed_during_a_compensation_finishes_it_after_its_restart(
        self, settings, pool, watched, from_v1
    ):
        rid = submit("v3", approvers=("alice", "bob"))  # a payment change: two approvals at the production gate

        async def compensating() -> bool:
            async with pool.acquire() as conn:
                return bool(
                    await conn.fetchval("SELECT 1 FROM rollback_steps WHERE release_id = $1 AND result IS NULL", rid)
                )

        # the ledger records a compensation's start before it changes anything, and its outcome at the end
        await _frozen_when(watched, "rollback", compensating)
        assert await compensating(), "the rollback service was not stopped mid-compensation"
        _killed_and_restarted(watched, "rollback")
        await _ended(settings, pool, watched, rid, "v1", "rolled_back")
        async with pool.acquire() as conn:
            steps = await conn.fetch(
                "SELECT step_id, attempts, result->>'succeeded' AS ok FROM rollback_steps WHERE release_id = $1", rid
            )
        assert steps and all(s["ok"] == "true" for s in steps), [dict(s) for s in steps]
        assert max(s["attempts"] for s in steps) == 2, "the interrupted compensation was not carried out again"

    async def test_the_verifier_killed_during_a_canary_window_resumes_it_and_the_release_is_promoted(
        self, settings, pool, watched, from_v1
    ):
        rid = submit("v2")

        async def in_production_window() -> bool:
            state, waiting = await _saga(pool, rid)
            return state == "running" and waiting.startswith("verify-canary")

        await wait_until(in_production_window, 300, "a production canary window")
        _killed_and_restarted(watched, "verifier")
        await _ended(settings, pool, watched, rid, "v2", "promoted")
