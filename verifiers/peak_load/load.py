"""Running the load and watching what it saturates: Locust headless in a process of its own (`locustfile.py`)
against one instance, the staging database and the storefront's outbox sampled meanwhile, and where each
version's instances serve (the deployer's read model, `release.environments`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from contracts import topics
from contracts.cloudevents import ContractError, decode
from contracts.events import EnvironmentState
from contracts.peak import RUN_OVERHEAD_SECONDS, PeakReadiness
from releasegate_runtime import db
from releasegate_runtime.kafka import assigned_partitions, client_options
from releasegate_runtime.settings import ServiceSettings
from releasegate_sdk import TransientError
from releasegate_sdk.types import describe
from verifiers.peak_load.judge import Sample, Saturation, VersionLoad, step_stats

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
SAMPLE_EVERY_SECONDS = 0.5
PER_USER_RPS = 2.0  # journeys per second one Locust user starts at most; more users would only add greenlets
SATURATION_SQL = """
SELECT count(*) FILTER (WHERE state = 'active') AS active,
       count(*) FILTER (WHERE wait_event_type = 'Lock') AS lock_waits,
       count(*) AS connections
FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
"""
COMMITS_SQL = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
BACKLOG_SQL = (
    "SELECT CASE WHEN to_regclass('event_outbox') IS NULL THEN 0 ELSE"
    " (SELECT count(*) FROM event_outbox WHERE sent_at IS NULL AND refused IS NULL) END"
)


class LoadToolError(Exception):
    """Locust did not run the profile (not installed, crashed, wrote no results): nothing was measured."""


async def environment_state(settings: ServiceSettings, service: str, environment: str) -> EnvironmentState | None:
    """The newest state the deployer published for the service's environment: read from the start of the
    compacted topic up to its end at the time of asking, without a consumer group."""
    consumer = AIOKafkaConsumer(topics.ENVIRONMENTS, **client_options(settings), enable_auto_commit=False)
    newest: EnvironmentState | None = None
    try:
        await consumer.start()
        if not (partitions := await assigned_partitions(consumer)):
            raise TransientError(f"no partitions of {topics.ENVIRONMENTS} assigned")
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        todo = {tp: end for tp, end in ends.items() if end > 0}
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=500)
            for record in (r for batch in batches.values() for r in batch):
                try:
                    state = decode(record.headers, record.value).data
                except ContractError:
                    continue  # the deployer is its only writer; a record it did not write is no state
                if (
                    isinstance(state, EnvironmentState)
                    and (state.service, state.environment) == (service, environment)
                    and (newest is None or state.sequence > newest.sequence)
                ):
                    newest = state
            todo = {tp: end for tp, end in todo.items() if await consumer.position(tp) < end}
        return newest
    except KafkaError as exc:
        raise TransientError(f"{topics.ENVIRONMENTS}: {describe(exc)}") from None
    finally:
        await consumer.stop()


async def _sample(database: str, until: asyncio.Event) -> Saturation:
    """The staging database's sessions and the outbox backlog, every SAMPLE_EVERY_SECONDS until `until` is set.
    Needs pg_read_all_stats to see other roles' sessions' state (deploy/postgres/roles.sql)."""
    active = waits = connections = backlog = 0
    try:
        conn = await asyncpg.connect(database, timeout=5)
    except db.UNAVAILABLE as exc:
        raise TransientError(f"staging database: {describe(exc)}") from None
    loop = asyncio.get_running_loop()
    try:
        first, began = await conn.fetchval(COMMITS_SQL), loop.time()
        while not until.is_set():
            row = await conn.fetchrow(SATURATION_SQL)
            active, waits = max(active, row["active"]), max(waits, row["lock_waits"])
            connections = max(connections, row["connections"])
            backlog = max(backlog, await conn.fetchval(BACKLOG_SQL))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), SAMPLE_EVERY_SECONDS)
        commits = (await conn.fetchval(COMMITS_SQL) - first) / max(loop.time() - began, 1e-3)
    finally:
        await conn.close()
    return Saturation(active, waits, connections, round(commits, 1), backlog)


def locust_command(base_url: str, peak: PeakReadiness, users: int) -> list[str]:
    # a second past the profile, so the last step's requests are answered before Locust stops its users (what
    # starts after the profile is not judged)
    seconds = max(1, math.ceil(peak.profile.duration_seconds)) + 1
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", base_url,
        "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{seconds}s",
        "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0", "--stop-timeout", "1",
    ]  # fmt: skip


def users_for(rps: float, peak: PeakReadiness) -> int:
    """Locust users of a journey of `rps` journeys per second at the profile: enough for its highest step."""
    return math.ceil(rps * max(peak.profile.steps) / PER_USER_RPS) if rps > 0 else 0


async def run_profile(base_url: str, version: str, peak: PeakReadiness, database: str) -> VersionLoad:
    """The profile against one instance (`base_url`), every step; the staging database sampled meanwhile."""
    with tempfile.TemporaryDirectory(prefix="peak-load-") as work:
        results = Path(work) / "results.json"
        env = {
            **os.environ,
            "PEAK_LOAD_RESULTS": str(results),
            "PEAK_LOAD_PROFILE": json.dumps(
                {
                    "journeys": peak.profile.journeys,
                    "tenants": peak.profile.tenants,
                    "steps": peak.profile.steps,
                    "step_seconds": peak.profile.step_seconds,
                    "users": {j: users_for(rps, peak) for j, rps in peak.profile.journeys.items()},
                }
            ),
        }
        done = asyncio.Event()
        sampler = asyncio.create_task(_sample(database, done))
        try:
            proc = await asyncio.create_subprocess_exec(
                *locust_command(base_url, peak, sum(users_for(rps, peak) for rps in peak.profile.journeys.values())),
                env=env,
                cwd=work,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            done.set()
            await asyncio.gather(sampler, return_exceptions=True)
            raise LoadToolError(f"cannot start locust: {describe(exc)}") from None
        try:
            _, err = await asyncio.wait_for(
                proc.communicate(), peak.profile.duration_seconds + RUN_OVERHEAD_SECONDS + 10
            )
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            done.set()
            await asyncio.gather(sampler, return_exceptions=True)
            raise
        done.set()
        saturation = await sampler
        if proc.returncode != 0 or not results.is_file():
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            raise LoadToolError(f"locust exited {proc.returncode} with no results: {' | '.join(tail)[:600]}")
        raw = json.loads(results.read_text())
    samples = [Sample(float(at), str(kind), float(ms), bool(ok)) for at, kind, ms, ok in raw["samples"]]
    return VersionLoad(version, step_stats(samples, peak), saturation)
