"""Two coordinator instances share the releases (one consumer group, the release topics' partitions split between
them); one is SIGKILLed while its releases wait for step results: its partitions, and with them its releases,
move to the other instance, which finishes every one of them, issuing no step twice.

The workload is the scale benchmark's (bench/scale.py): a responder answering every command of the benchmark's
catalog entry at once, as the real services' principals, so the test is about the coordinators alone."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from bench import scale
from contracts import topics
from tests.conftest import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.integration]
RELEASES = 36
COMMAND_TOPICS = [
    topics.GATE_COMMANDS,
    topics.DR_COMMANDS,
    topics.DEPLOY_COMMANDS,
    topics.VERIFY_COMMANDS,
    topics.ROLLBACK_COMMANDS,
]


def started_by(log: Path, release_ids: set[str]) -> set[str]:
    """The releases whose candidate this coordinator instance took (its log's `release started` lines)."""
    found = set()
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "release started" and entry.get("release_id") in release_ids:
            found.add(entry["release_id"])
    return found


async def sagas(pool, release_ids: list[str]) -> dict[str, tuple[str, int]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT release_id, state, revision FROM sagas WHERE release_id = ANY($1::text[])", release_ids
        )
    return {r["release_id"]: (r["state"], r["revision"]) for r in rows}


async def test_a_killed_coordinators_releases_are_finished_by_the_other(settings, pool, tmp_path):
    catalog = scale.bench_catalog(tmp_path)
    env = {"RG_CATALOG_DIR": str(catalog), "RG_ENV": "local"}
    for log in scale.LOGS.glob("bench-scale-coordinator-*.log"):
        log.unlink()
    responder = scale.Process(
        "responder",
        [sys.executable, "-m", "bench.scale_responder", "--prefix", f"{scale.SERVICE}-", "--catalog-dir", str(catalog)],
        env,
    )
    coordinators: list[scale.Process] = []
    release_ids = [f"{scale.SERVICE}-{uuid.uuid4().hex[:12]}" for _ in range(RELEASES)]
    try:
        assert responder.proc.stdout is not None
        ready = await asyncio.wait_for(asyncio.to_thread(responder.proc.stdout.readline), 60)
        assert ready.strip() == b"ready", f"the responder did not start: {responder.log}"
        coordinators = await scale.start_coordinators(settings, 2, env)
        doomed, survivor = coordinators
        os.kill(responder.pid, signal.SIGSTOP)  # no step result until the kill: every release waits mid-way
        await scale.submit(settings, release_ids)

        async def all_registered():
            return len(await sagas(pool, release_ids)) == RELEASES

        await wait_until(all_registered, 60, "both coordinators to register every release")
        theirs = started_by(doomed.log, set(release_ids))
        assert theirs and theirs != set(release_ids), "the two instances share the releases"
        assert not {rid for rid, (state, _) in (await sagas(pool, release_ids)).items() if state in scale.TERMINAL}

        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.proc.wait()
        os.kill(responder.pid, signal.SIGCONT)

        async def all_ended():
            states = await sagas(pool, release_ids)
            return all(state in scale.TERMINAL for state, _ in states.values()) and states

        ended = await wait_until(all_ended, 240, "the surviving coordinator to finish every release")
        assert {rid: state for rid, (state, _) in ended.items() if state != "promoted"} == {}
        assert survivor.proc.poll() is None
        assert started_by(survivor.log, set(release_ids)) == set(release_ids) - theirs

        # no step issued twice: one outbox row per (release, command topic, step), whoever staged it
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT key, topic, payload FROM outbox WHERE producer = 'coordinator' AND key = ANY($1::text[])"
                " AND topic = ANY($2::text[])",
                release_ids,
                COMMAND_TOPICS,
            )
        issued = Counter((r["key"], r["topic"], json.loads(r["payload"])["step_id"]) for r in rows)
        assert issued and {k: n for k, n in issued.items() if n > 1} == {}
    finally:
        if responder.proc.poll() is None:
            os.kill(responder.pid, signal.SIGCONT)
        for c in coordinators:
            c.stop()
        unfinished = [
            rid for rid, (state, _) in (await sagas(pool, release_ids)).items() if state not in scale.TERMINAL
        ]
        if unfinished and responder.proc.poll() is None:
            survivors = await scale.start_coordinators(settings, 1, env)
            try:
                await scale.end_unfinished(settings, pool, unfinished)
            finally:
                for c in survivors:
                    c.stop()
        responder.stop()
