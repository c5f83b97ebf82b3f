"""Benchmark on the running local stack (`make bench`):
1. time from the first degraded KPI sample (the first v3 payment declined for `invalid_card` in production) to
   the canary's HAProxy weight reaching 0, over several v3 releases;
2. the coordinator's per hop latency (a step result's record → the next command's record, both on Kafka),
   next to a bare aiokafka produce→consume round trip measured in the same run.
Prints figures and ratios; asserts nothing."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Collection
from itertools import pairwise
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import breakdown, decision_action
from bench.kafka_since import read_since
from contracts import topics
from contracts.cloudevents import decode
from releasegate_cli import client
from releasegate_platform.haproxy import HAProxy
from releasegate_runtime import bus_admin, db
from releasegate_runtime.bus import BusPolicy, Principal
from releasegate_runtime.kafka import client_options
from releasegate_runtime.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
COORDINATOR_HEALTH_PORT = 18501  # deploy/services.sh: the coordinator's /health and /metrics
ROLLBACK_HEALTH_PORT = 18506  # the rollback service's
CANDIDATES = ROOT / "examples" / "candidates"
COMMANDS = [
    topics.GATE_COMMANDS,
    topics.DR_COMMANDS,
    topics.DEPLOY_COMMANDS,
    topics.VERIFY_COMMANDS,
    topics.ROLLBACK_COMMANDS,
]


def q(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def bare_round_trips(settings: ServiceSettings, n: int) -> list[float]:
    """Produce → consume on a topic of the benchmark's own, over the same authenticated (SASL/SCRAM) connections
    the services use, as a principal provisioned for it."""
    topic, name = f"bench-rtt-{uuid.uuid4().hex[:8]}", "bench-rtt"
    admin = bus_admin.admin_client(settings.kafka_bootstrap, settings.secrets_dir, settings.kafka_ca_file)
    await asyncio.to_thread(
        bus_admin.register, Principal(name, "benchmark", (topic,), (topic,), (), None), admin, settings.secrets_dir
    )
    options = client_options(settings.model_copy(update={"principal": name}))
    producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=True, linger_ms=0)
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False, fetch_max_wait_ms=500)
    await producer.start()
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_end(tp)
    samples = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            await producer.send_and_wait(topic, b"ping", partition=0)
            while not (await consumer.getmany(tp, timeout_ms=1000)).get(tp):
                pass
            samples.append((time.perf_counter() - t0) * 1000)
    finally:
        await producer.stop()
        await consumer.stop()
        await asyncio.to_thread(lambda: admin.delete_topics([topic])[topic].result(30))
    return samples


async def canary_weight_zero_at(haproxy: HAProxy, version_slot: dict, stop: asyncio.Event) -> float | None:
    """Polls HAProxy every 20 ms; wall time when the candidate's slot, once seen taking traffic (by weight or by
    tenant/cookie routing to the wave backend), takes none any more."""
    seen = False
    while not stop.is_set():
        slot = version_slot.get("slot")
        if slot:
            main = {s.name: s for s in await haproxy.servers("shop_production")}.get(slot)
            wave = {s.name: s for s in await haproxy.servers("shop_production_wave")}.get(slot)
            serving = bool(
                (main and main.weight > 0 and not main.maintenance)
                or (wave and wave.operational and not wave.maintenance)
            )
            if serving:
                seen = True
            elif seen:
                return time.time()
        await asyncio.sleep(0.02)
    return None


async def _cli(*args: str) -> str:
    """`releasegate ARGS`; its standard output, or the benchmark stops with what it printed."""
    out = await asyncio.to_thread(
        subprocess.run, ["releasegate", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        raise SystemExit(f"benchmark broken: releasegate {args[0]} exited {out.returncode}: {out.stdout}{out.stderr}")
    return out.stdout


async def one_bad_release(settings: ServiceSettings, pool, haproxy: HAProxy) -> dict:
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.deployer.bootstrap", "--force", str(CANDIDATES / "shop-v1.json")],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    rid = (await _cli("submit", str(CANDIDATES / "shop-v3.json"))).strip()
    for who in ("alice", "bob"):  # v3 changes payments: high risk, two approvals from shop-approvers
        await _cli("approve", rid, "--reason", "benchmark", "--key", str(ROOT / "examples" / "keys" / f"{who}.key"))
    version_slot: dict = {}
    stop = asyncio.Event()
    watcher = asyncio.create_task(canary_weight_zero_at(haproxy, version_slot, stop))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        async with pool.acquire() as conn:
            if not version_slot:
                slot = await conn.fetchval(
                    "SELECT slot FROM instances WHERE release_id = $1 AND environment ="
                    " 'production' ORDER BY id LIMIT 1",
                    rid,
                )
                if slot:
                    version_slot["slot"] = slot
            state = await conn.fetchval("SELECT state FROM sagas WHERE release_id = $1", rid)
        if state in ("promoted", "rejected", "aborted", "rollback_failed", "rolled_back"):
            break
        await asyncio.sleep(0.1)
    stop.set()
    zero_at = await watcher
    async with pool.acquire() as conn:
        first_bad = await conn.fetchval(
            "SELECT min(at) FROM business_events WHERE environment = 'production' AND version = 'v3'"
            " AND type = 'shop.payment.declined.v1' AND reason = 'invalid_card' AND at >= (SELECT created_at"
            " FROM sagas WHERE release_id = $1)",
            rid,
        )
        state = await conn.fetchval("SELECT state FROM sagas WHERE release_id = $1", rid)
    return {
        "release": rid,
        "state": state,
        "seconds": (zero_at - first_bad.timestamp()) if (zero_at and first_bad) else None,
        "zero_at": zero_at,
    }


async def _end_broken(settings: ServiceSettings, release_ids: list[str]) -> str:
    """The last timeline entries of releases that did not end as measured (to tell why), after aborting the ones
    still in flight: a broken run leaves no release behind for what runs next."""
    shown = []
    for rid in release_ids:
        entries = await client.timeline(settings, rid)
        shown.append(f"{rid}, last timeline entries:")
        shown.extend(
            f"  {e['at']} {e['state']} {e['step'] or ''} {e['actor'] or ''}: {e['reason']}" for e in entries[-12:]
        )
    aborted = await client.abort_in_flight(
        settings, "carol", "benchmark broken", key=ROOT / "examples" / "keys" / "carol.key"
    )
    deadline = time.monotonic() + 120
    while aborted and not await client.all_ended(settings, aborted) and time.monotonic() < deadline:  # noqa: ASYNC110 -- polls state outside this process
        await asyncio.sleep(0.5)
    return "\n".join(shown)


async def coordinator_hops(
    settings: ServiceSettings, since_ms: int, releases: Collection[str] | None = None
) -> list[float]:
    """Result record → next command record of the same release, from Kafka record timestamps (read with the
    broker's admin credential: no service principal may read both the results and the commands), in ms. Every
    partition the topics have; `releases`: only these releases' hops (None: every release's)."""
    chosen = {*BusPolicy.load(settings.bus_policy_file).results_producers(), *COMMANDS}
    wanted = None if releases is None else set(releases)
    by_release: dict[str, list[tuple[int, str]]] = defaultdict(list)

    def note(r: Any) -> None:
        try:
            env = decode(r.headers, r.value)
        except ValueError:
            return
        if env.subject and (wanted is None or env.subject in wanted):
            by_release[env.subject].append((r.timestamp, r.topic))

    await read_since(settings, chosen.__contains__, since_ms, note)
    hops = []
    for records in by_release.values():
        records.sort()
        for (ts, topic), (next_ts, next_topic) in pairwise(records):
            if topic.startswith(topics.RESULTS_PREFIX) and next_topic in COMMANDS:
                hops.append(float(next_ts - ts))
    return hops


async def main(releases: int, round_trips: int) -> None:
    settings = ServiceSettings()
    leftovers = await client.abort_in_flight(
        settings, "carol", "clean start for the benchmark", key=ROOT / "examples" / "keys" / "carol.key"
    )
    while not await client.all_ended(settings, leftovers):  # noqa: ASYNC110 -- polls state outside this process; no event to await
        await asyncio.sleep(0.5)
    pool = await db.create_pool(settings.database_url)
    haproxy = HAProxy(settings.haproxy_admin)
    # v3 is tier 1 and high risk: the DR check needs a fresh backup and a passing restore drill, the gate two
    # signed approvals (given in one_bad_release)
    for job in ("services.dr_checker.backup", "services.dr_checker.drill"):
        await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", job, "shop"], cwd=ROOT, check=True, capture_output=True
        )
    since = int(time.time() * 1000)
    coordinator_metrics = [COORDINATOR_HEALTH_PORT]
    metrics_before = await breakdown.scrape(coordinator_metrics)
    rollback_before = await breakdown.scrape([ROLLBACK_HEALTH_PORT])
    runs = [await one_bad_release(settings, pool, haproxy) for _ in range(releases)]
    stages = breakdown.table((await breakdown.scrape(coordinator_metrics)).minus(metrics_before))
    rollback_stages = breakdown.table(
        (await breakdown.scrape([ROLLBACK_HEALTH_PORT])).minus(rollback_before),
        breakdown.ROLLBACK_STAGES,
        "The rollback service's part (its metrics over the run; the handler goes on after the weight is 0",
    )
    paths = await decision_action.paths(
        settings, pool, {r["release"]: r["zero_at"] for r in runs if r.get("zero_at")}, since
    )
    await pool.close()
    wrong = [r for r in runs if r["state"] != "rolled_back" or r["seconds"] is None]
    if wrong:
        raise SystemExit(
            f"benchmark broken: every v3 release must be rolled back from the canary, got {wrong}\n"
            + await _end_broken(settings, [r["release"] for r in wrong])
        )
    hops = await coordinator_hops(settings, since)
    bare = await bare_round_trips(settings, round_trips)
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.deployer.bootstrap", str(CANDIDATES / "shop-v1.json")],
        cwd=ROOT,
        capture_output=True,
    )

    print(
        "\n1. First degraded KPI sample -> canary takes no traffic in HAProxy (v3 payment regression; internal"
        " tenant first, then 10%)"
    )
    for r in runs:
        secs = f"{r['seconds']:.2f} s" if r["seconds"] is not None else "n/a"
        print(f"   {r['release']:<24} {r['state']:<13} {secs}")
    ok = [r["seconds"] for r in runs if r["seconds"] is not None]
    if ok:
        print(f"   median {statistics.median(ok):.2f} s   max {max(ok):.2f} s   (n={len(ok)})")
    print("\n2. Coordinator hop (result on Kafka -> next command on Kafka) vs bare aiokafka produce->consume")
    print(f"   {'':<34}{'n':>6}{'median ms':>12}{'p95 ms':>10}")
    if hops:
        print(f"   {'coordinator hop':<34}{len(hops):>6}{statistics.median(hops):>12.1f}{q(hops, 0.95):>10.1f}")
    print(f"   {'bare aiokafka round trip':<34}{len(bare):>6}{statistics.median(bare):>12.1f}{q(bare, 0.95):>10.1f}")
    if hops:
        print(
            f"   ratio (median hop / median bare round trip): {statistics.median(hops) / statistics.median(bare):.1f}x"
        )
    print("\n".join(stages))
    print(
        "\n3. Decision to action: the business event after which the verifier's judge (replayed event by event)"
        " fails the canary -> the canary's weight 0 in HAProxy"
    )
    print("\n".join(decision_action.table(paths)))
    print("\n".join(rollback_stages))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--releases", type=int, default=3)
    parser.add_argument("--round-trips", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.releases, args.round_trips))
