"""Chaos soak of the real release stack (`make bench-chaos-live`): releases of the shop, one after another, each
through every real service and team verifier as its own OS process, the real deployer starting candidate
processes and moving HAProxy weights and tenants, the real rollback service restoring traffic and data, with the
synthetic shoppers as traffic. While each release runs, a fault injector SIGKILLs the services at the moments
they are doing their part of it (each started again after a random 0.1-0.8 s):
- the deployer while a deploy step of the release is in flight (starting a candidate, shifting weight, moving
  tenants, running a migration, finalizing);
- the rollback service while one of the release's compensations is recorded as begun and not done (restoring
  traffic, or the data after a stateful release);
- the verifier and the ERP team verifier during a verification window, the gatekeeper during a gate, the
  dr-checker during the DR check or the backup point, the notifier while one of the release's notifications is
  due or being sent, and the coordinator and the notifier (which records every status event) at any moment.
The Kafka broker is restarted during a release a third of the way through, and PostgreSQL two thirds of the way.

The releases cycle through the shop's plans and outcomes: canary (v2 good, v3 bad payments, v9 an ERP contract
break only the erp-export verifier sees, v10 a failed data rewrite undone by a restore), blue-green and
tenant-phased (v2 and v3 each), each from v1 stable. After every release the soak checks, and at the end prints:
- it ended as intended (good promoted, bad rolled back), or paused for a human with its reason in the audit log
  (the soak then aborts it, and every check below applies to the rollback);
- HAProxy serves the version the saga ended with to every tenant, and the workload is exactly the stable
  version's: no orphan candidate process, no stray weight, no tenant left routed (tests/support/faults/oracles);
- no effect twice: each step requested and done once in the audit log, each compensation begun once in the
  rollback service's ledger and succeeded, no step failed by its deadline;
- the audit log records every completed step, in plan order;
- notifications (every plan routes its production events to the local Slack stand-in, deploy/local/notify_sink.py):
  each one recorded was delivered, a promoted release's among them, and the receiver got each at least once and
  no more often than it was attempted (a copy sent again after a kill mid-send is at least once, under the same
  event id the receiver dedupes on; a copy beyond the attempts would be a send twice);
- every service process alive and healthy afterwards (none exited without being killed).
Exits 1 if one does not hold. Needs the stack (`make stack`) and none of the regular services or shoppers.

    python -m bench.chaos_live [--releases 24] [--kills 100] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from bench import faults
from bench.chaos import unrecorded_steps
from bench.scale import TERMINAL
from releasegate_cli import client
from releasegate_runtime import db
from releasegate_runtime.settings import ServiceSettings
from tests.e2e.conftest import RELEASE_MANAGER_KEY, status, submit
from tests.support.faults.oracles import repeated_effects, served_to_every_tenant, timed_out, workload_drift
from tests.support.fuzz.stack import WatchedStack, stable_v1, watched_stack

os.environ.setdefault("RG_ENV", "local")  # the demo keys the stack's operators sign with are trusted only here
ROOT = Path(__file__).resolve().parents[1]
CATALOGS = {
    "canary": ROOT / "catalog" / "shop.yaml",
    "blue-green": ROOT / "examples" / "catalog-blue-green" / "shop.yaml",
    "tenant-phased": ROOT / "examples" / "catalog-tenant-phased" / "shop.yaml",
}
APPROVERS = ("alice", "bob")  # shop-approvers: payment, unclassified and schema changes need two at the gate


@dataclass(frozen=True)
class Kind:
    plan: str
    version: str
    ends: str  # the state a release of this kind must end in
    approvers: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.plan} {self.version} ({'good' if self.ends == 'promoted' else 'bad'})"


MIX = (
    Kind("canary", "v2", "promoted"),
    Kind("canary", "v3", "rolled_back", APPROVERS),
    Kind("blue-green", "v2", "promoted"),
    Kind("canary", "v10", "rolled_back", APPROVERS),  # stateful: backup point, migrations, a data restore
    Kind("tenant-phased", "v2", "promoted"),
    Kind("blue-green", "v3", "rolled_back", APPROVERS),
    Kind("canary", "v9", "rolled_back", APPROVERS),  # only the erp-export team verifier fails it
    Kind("tenant-phased", "v3", "rolled_back", APPROVERS),
)
# who is killed, and the moment that is its part of a release (a step kind in flight, or a compensation begun)
VICTIMS = {
    "coordinator": "any",
    "deployer": "deploy",
    "rollback": "compensation",
    "verifier": "verify",
    "erp_export": "verify-production",
    "gatekeeper": "gate",
    "dr_checker": "dr",
    "notifier": "notify",
}
WEIGHTS = {
    "deployer": 3,
    "rollback": 3,
    "verifier": 2,
    "erp_export": 1,
    "gatekeeper": 1,
    "dr_checker": 1,
    "notifier": 2,
}
SINK_LOG = ROOT / ".run" / "logs" / "notify-sink.jsonl"  # what the local Slack stand-in received
SETTLE_SECONDS = 120  # for a release's notifications to be sent (a killed notifier's claim lapses after 25 s)
# killed at any moment too, with this chance at each look (every 10 ms): the coordinator about once in 2.5 s; the
# notifier, which records every status event of the release and sends its notifications, about once in 7 s
ANYTIME = {"coordinator": 0.004, "notifier": 0.0015}
DOWN = db.UNAVAILABLE  # what a query raises while PostgreSQL restarts
OUTAGE_SETTLE_SECONDS = 5.0
MIN_GAP_SAME_VICTIM = 12.0  # s before the same service is killed again (it rejoins its group in a few seconds)


@dataclass
class Outcome:
    kind: Kind
    release_id: str
    state: str = ""
    seconds: float = 0.0
    kills: Counter[str] = field(default_factory=Counter)
    broken: dict[str, list[str]] = field(default_factory=dict)
    paused: str = ""  # why it paused for a human (then the soak aborted it)


@dataclass
class Chaos:
    kills: Counter[str] = field(default_factory=Counter)
    moments: Counter[str] = field(default_factory=Counter)
    infrastructure: list[str] = field(default_factory=list)
    exited: Counter[str] = field(default_factory=Counter)  # exited without being killed (restarted)
    exited_in_outage: Counter[str] = field(default_factory=Counter)  # exited while Kafka or PostgreSQL was down
    outage_until: float = 0.0  # monotonic: Kafka or PostgreSQL stopped, until a while after it answers again

    @property
    def outage(self) -> bool:
        return time.monotonic() < self.outage_until

    last_kill: dict[str, float] = field(default_factory=dict)


async def _saga(pool: asyncpg.Pool, rid: str) -> tuple[str, dict[str, Any]]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT state, body FROM sagas WHERE release_id = $1", rid)
    return (row["state"], row["body"]) if row else ("", {})


async def moment(pool: asyncpg.Pool, rid: str) -> set[str]:
    """What of `rid` is in flight right now: the kind of the step awaited, 'compensation' while one is begun and
    not done in the rollback service's ledger, 'verify-production' for a production verification, 'any'."""
    state, body = await _saga(pool, rid)
    found = {"any"} if state == "running" or state == "rolling_back" else set()
    waiting = body.get("waiting_for")
    step = next((s for s in body.get("plan", []) if s.get("id") == waiting), None)
    if step is not None:
        found.add(step["kind"])
        if step["kind"] == "verify" and step.get("environment") == "production":
            found.add("verify-production")
    async with pool.acquire() as conn:
        if await conn.fetchval("SELECT 1 FROM rollback_steps WHERE release_id = $1 AND result IS NULL", rid):
            found.add("compensation")
        if await conn.fetchval(UNSENT, rid):
            found.add("notify")
    return found


UNSENT = (
    "SELECT 1 FROM notification_deliveries d JOIN notification_events e USING (event_id)"
    " WHERE e.release_id = $1 AND d.status IN ('pending', 'sending') LIMIT 1"
)


def received() -> Counter[str]:
    """Copies of each event id the local Slack stand-in received."""
    copies: Counter[str] = Counter()
    with contextlib.suppress(FileNotFoundError):
        for line in SINK_LOG.read_text().splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                copies[json.loads(line)["headers"]["X-Releasegate-Event-Id"]] += 1
    return copies


async def notifications(pool: asyncpg.Pool, rid: str, ended: str) -> list[str]:
    """What is wrong with the release's notifications, once none is due any more (or SETTLE_SECONDS passed)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(*DOWN):
            async with pool.acquire() as conn:
                if not await conn.fetchval(UNSENT, rid):
                    break
        await asyncio.sleep(0.5)  # polling the ledger
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT d.event_id, d.route, d.status, d.attempts, e.notification->>'kind' AS kind"
            " FROM notification_deliveries d JOIN notification_events e USING (event_id) WHERE e.release_id = $1",
            rid,
        )
    copies = received()
    wrong = []
    for r in rows:
        if r["status"] != "delivered":
            wrong.append(f"{r['kind']} on {r['route']}: {r['status']} after {r['attempts']} attempt(s)")
        elif not 1 <= copies[r["event_id"]] <= r["attempts"]:
            wrong.append(f"{r['kind']}: received {copies[r['event_id']]} time(s), attempted {r['attempts']}")
    if ended == "promoted" and "promoted" not in {r["kind"] for r in rows}:
        wrong.append("no notification that it was promoted")
    return wrong


def _describe(victim: str, body_moment: set[str]) -> str:
    if victim == "coordinator":
        return "coordinator " + (sorted(body_moment - {"any"}) or ["between steps"])[0]
    if VICTIMS[victim] not in body_moment:
        return f"{victim} at any moment"
    return f"{victim} during {VICTIMS[victim]}"


async def inject(
    watched: WatchedStack,
    pool: asyncpg.Pool,
    rid: str,
    budget: int,
    chaos: Chaos,
    got: Counter[str],
    rng: random.Random,
    ended: asyncio.Event,
    first: tuple[str, ...],
) -> None:
    """Up to `budget` SIGKILLs of the services, each at a moment it is doing its part of release `rid`: after a
    random pause, the release is looked at every 10 ms (a step may take a fraction of a second) and a service whose
    part is in flight is killed; the coordinator, whose part is always, now and then. The services in `first`
    (the deployer, the verifier, and the rollback service in a release that will be rolled back) each keep a kill
    of the budget until their moment comes: the deployer's and the rollback service's are short and would
    otherwise seldom be hit."""
    while sum(got.values()) < budget and not ended.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), rng.uniform(1.0, 4.0))  # a random moment, not a synchronisation
        victim, seen = "", set()
        deadline = time.monotonic() + 30
        while not victim and not ended.is_set():
            with contextlib.suppress(*DOWN):  # PostgreSQL may be restarting
                seen = await moment(pool, rid)
            now = time.monotonic()
            ready = [v for v in VICTIMS if now - chaos.last_kill.get(v, -1e9) >= MIN_GAP_SAME_VICTIM]
            wanted = [v for v in first if not got[v]]
            room = budget - sum(got.values()) - len(wanted)  # kills left for the others: `first` keep theirs
            busy_wanted = [v for v in wanted if v in ready and VICTIMS[v] in seen]
            busy = [v for v in ready if v not in wanted and v != "coordinator" and VICTIMS[v] in seen]
            anytime = [v for v, chance in ANYTIME.items() if v in ready and rng.random() < chance]
            if busy_wanted:
                victim = rng.choice(busy_wanted)
            elif busy and room > 0:
                victim = rng.choices(busy, [WEIGHTS[v] for v in busy])[0]
            elif room > 0 and "any" in seen and anytime:
                victim = anytime[0]
            elif not wanted and now > deadline:
                break
            else:
                await asyncio.sleep(0.01)  # polling for the moment
        if not victim:
            continue
        watched.services[victim].kill()
        chaos.last_kill[victim] = time.monotonic()
        chaos.kills[victim] += 1
        chaos.moments[_describe(victim, seen)] += 1
        got[victim] += 1
        await asyncio.sleep(rng.uniform(0.1, 0.8))  # how long it stays dead
        watched.restart(victim)


async def supervise(watched: WatchedStack, chaos: Chaos, stop: asyncio.Event) -> None:
    """Restart a process that exited without being killed (and count it: the soak fails on it)."""
    while not stop.is_set():
        for name, code in watched.crashed().items():
            if code != -9:  # not a SIGKILL the injector sent (it restarts those itself)
                # a service (re)started while the broker is down cannot start; its supervisor starts it again
                (chaos.exited_in_outage if chaos.outage else chaos.exited)[name] += 1
                print(
                    f"    {name} exited ({code}){' in the outage' if chaos.outage else ''}; started again", flush=True
                )
                watched.restart(name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def restart_infrastructure(which: str, pool: asyncpg.Pool, rid: str, chaos: Chaos, rng: random.Random) -> None:
    """Stop Kafka or PostgreSQL once the release is in a production verification, start it again after a while."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with contextlib.suppress(*DOWN):  # PostgreSQL may be restarting (the other outage)
            if "verify-production" in await moment(pool, rid):
                break
        await asyncio.sleep(0.2)  # polling for the moment
    stop = faults.stop_kafka if which == "kafka" else faults.stop_postgres
    chaos.outage_until = float("inf")
    try:
        await asyncio.to_thread(stop)
        await asyncio.sleep(rng.uniform(2, 6))  # the outage's length
        await asyncio.to_thread(faults.start_infrastructure)
    finally:  # an exit at startup during the outage is seen by the supervisor's next look, up to a second later
        chaos.outage_until = time.monotonic() + OUTAGE_SETTLE_SECONDS
    chaos.infrastructure.append(which)


async def until_ended(pool: asyncpg.Pool, rid: str, timeout: float, *, or_paused: bool = True) -> str:
    """The release's state once it is terminal (or, with `or_paused`, paused for a human)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(*DOWN):  # PostgreSQL may be restarting
            state, _ = await _saga(pool, rid)
            if state in TERMINAL or (or_paused and state == "paused"):
                return state
        await asyncio.sleep(0.5)
    return "running (timed out)"


async def healthy_again(watched: WatchedStack, timeout: float = 120) -> dict[str, str]:
    deadline, unhealthy = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        unhealthy = await watched.unhealthy()
        if not unhealthy:
            return {}
        await asyncio.sleep(0.5)
    return unhealthy


async def check(settings: ServiceSettings, pool: asyncpg.Pool, watched: WatchedStack, out: Outcome) -> None:
    rid, kind = out.release_id, out.kind
    broken: dict[str, list[str]] = {}
    if out.state == "paused":  # for a human: the soak is one, it aborts the release and checks the rollback
        last = (await asyncio.to_thread(status, rid))["timeline"][-1]
        if not last["reason"]:
            broken["ended, or paused with its reason"] = ["paused with no reason in its audit log"]
        out.paused = last["reason"][:300]
        await client.abort_in_flight(settings, "carol", "chaos soak: paused release", key=RELEASE_MANAGER_KEY)
        out.state = await until_ended(pool, rid, 300, or_paused=False)
        if out.state not in TERMINAL:
            broken["ended, or paused with its reason"] = [f"{out.state} after the abort"]
    elif out.state not in TERMINAL:
        broken["ended, or paused with its reason"] = [out.state]
    elif out.state != kind.ends:
        broken["ended as intended"] = [f"{out.state}, not {kind.ends}"]
    if unhealthy := await healthy_again(watched):
        broken["every service healthy"] = [f"{name}: {why}" for name, why in unhealthy.items()]
    release = await asyncio.to_thread(status, rid)
    timeline = release["timeline"]
    served = kind.version if out.state == "promoted" else "v1"
    if wrong := await served_to_every_tenant(served):
        broken["HAProxy serves the saga's version to every tenant"] = [f"{t}: {seen}" for t, seen in wrong.items()]
    if drift := await workload_drift(settings, pool, rid):
        broken["workload exactly the stable version's"] = drift
    if twice := repeated_effects(timeline):
        broken["no effect twice (audit)"] = [f"{what} x{n}" for what, n in twice.items()]
    if late := timed_out(timeline):
        broken["no step failed by its deadline"] = late
    async with pool.acquire() as conn:
        steps = await conn.fetch(
            "SELECT step_id, attempts, result->>'succeeded' AS ok FROM rollback_steps WHERE release_id = $1", rid
        )
    if bad := [f"{s['step_id']} {s['ok']}" for s in steps if s["ok"] != "true"]:
        broken["every compensation carried out"] = bad
    _, body = await _saga(pool, rid)
    if missing := unrecorded_steps(body, timeline):
        broken["audit complete, in plan order"] = missing
    if wrong := await notifications(pool, rid, out.state):
        broken["every notification delivered, none sent more than attempted"] = wrong
    out.broken = broken


def plan_catalog(plan: str, directory: Path) -> None:
    """The shop's entry with `plan`'s strategy, and the canary entry's notification routes whatever the plan."""
    entry = yaml.safe_load(CATALOGS[plan].read_text())
    entry["notifications"] = yaml.safe_load(CATALOGS["canary"].read_text())["notifications"]
    (directory / "shop.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))


async def run(args: argparse.Namespace) -> int:
    settings = ServiceSettings()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="bench-chaos-live-"))
    catalog = workdir / "catalog"
    catalog.mkdir()
    plan_catalog("canary", catalog)
    env = {"RG_CATALOG_DIR": str(catalog)}
    os.environ.update(env)  # the CLI the soak submits and approves with reads the same catalog
    kinds = [MIX[i % len(MIX)] for i in range(args.releases)]
    restarts = {args.releases // 3: "kafka", 2 * args.releases // 3: "postgresql"}
    chaos, outcomes = Chaos(), []
    pool = await db.create_pool(settings.database_url, max_size=3)
    t0 = time.monotonic()
    try:
        async with watched_stack(settings, env, extra=("notifier",)) as watched:
            print(
                f"... {len(kinds)} releases, at least {args.kills} kills, a broker and a PostgreSQL restart",
                flush=True,
            )
            stop = asyncio.Event()
            supervisor = asyncio.create_task(supervise(watched, chaos, stop))
            t0 = time.monotonic()
            try:
                for i, kind in enumerate(kinds):
                    plan_catalog(kind.plan, catalog)
                    await asyncio.to_thread(stable_v1, env)
                    began = time.monotonic()
                    rid = await asyncio.to_thread(submit, kind.version, approvers=kind.approvers)
                    out = Outcome(kind, rid)
                    outcomes.append(out)
                    # a share of the kills still asked, and one more: a release that ends before its moments came
                    # leaves kills unspent, and the last one could not make them up (98 of 100 in a run)
                    budget = -(-(args.kills - sum(chaos.kills.values())) // (len(kinds) - i)) + 1
                    ended = asyncio.Event()
                    first = ("deployer", "verifier") + (() if kind.ends == "promoted" else ("rollback",))
                    faults_of_it = [inject(watched, pool, rid, budget, chaos, out.kills, rng, ended, first)]
                    if i in restarts:
                        faults_of_it.append(restart_infrastructure(restarts[i], pool, rid, chaos, rng))
                    injecting = asyncio.gather(*faults_of_it)
                    out.state = await until_ended(pool, rid, args.timeout)
                    ended.set()
                    await injecting
                    out.seconds = time.monotonic() - began
                    await check(settings, pool, watched, out)
                    kills = ", ".join(f"{v} {n}" for v, n in sorted(out.kills.items())) or "none"
                    verdict = (
                        "ok" if not out.broken else "FAIL " + "; ".join(f"{k}: {v[:3]}" for k, v in out.broken.items())
                    ) + (f" (paused: {out.paused[:160]})" if out.paused else "")
                    print(
                        f"  {i + 1:>3} {kind.label:<28} {out.state:<12} {out.seconds:5.0f} s  kills: {kills}  {verdict}",
                        flush=True,
                    )
            finally:
                stop.set()
                await supervisor
    finally:
        await pool.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(report(outcomes, chaos, time.monotonic() - t0, args.kills))
    return 1 if any(o.broken for o in outcomes) or chaos.exited else 0


INVARIANTS = (  # as the report names them (tests/bench/test_chaos_bench.py looks for each)
    "ended, or paused with its reason",
    "ended as intended",
    "every service healthy",
    "HAProxy serves the saga's version to every tenant",
    "workload exactly the stable version's",
    "no effect twice (audit)",
    "every compensation carried out",
    "no step failed by its deadline",
    "audit complete, in plan order",
    "every notification delivered, none sent more than attempted",
)


def report(outcomes: list[Outcome], chaos: Chaos, wall: float, asked: int) -> str:
    lines = [f"\nLive chaos soak: {len(outcomes)} releases in {wall:.0f} s"]
    by_kind: dict[str, Counter[str]] = {}
    for o in outcomes:
        by_kind.setdefault(o.kind.label, Counter())[f"paused, then {o.state}" if o.paused else o.state] += 1
    lines.append(f"{'releases':<28} {'n':>4}  ended")
    for label, ended in by_kind.items():
        lines.append(f"{label:<28} {sum(ended.values()):>4}  " + ", ".join(f"{s} {n}" for s, n in ended.most_common()))
    kills = ", ".join(f"{name} {n}" for name, n in sorted(chaos.kills.items()))
    lines.append(
        f"\nSIGKILLs: {sum(chaos.kills.values())} of the {asked} asked ({kills}); "
        f"restarted: {', '.join(chaos.infrastructure)}"
    )
    lines.append("moments: " + ", ".join(f"{m} {n}" for m, n in sorted(chaos.moments.items())))
    if chaos.exited_in_outage:
        gave_up = ", ".join(f"{name} {n}" for name, n in sorted(chaos.exited_in_outage.items()))
        lines.append(f"exited while Kafka or PostgreSQL was down, and started again: {gave_up}")
    if chaos.exited:
        lines.append(f"FAIL exited without being killed: {dict(chaos.exited)}")
    for o in (o for o in outcomes if o.paused):
        lines.append(f"paused for a human, then aborted by the soak: {o.release_id} ({o.kind.label}): {o.paused}")
    lines.append("\nInvariants:")
    for name in INVARIANTS:
        found = [f"{o.release_id} ({o.kind.label}): {why}" for o in outcomes for why in o.broken.get(name, [])]
        lines.append(f"  {'ok  ' if not found else 'FAIL'} {name}" + (f": {len(found)}" if found else ""))
        lines += [f"       {why}" for why in found[:10]]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--releases", type=int, default=24, help="2 at least (the restarts are in different ones)")
    parser.add_argument("--kills", type=int, default=100, help="SIGKILLs at least (spread over the releases)")
    parser.add_argument("--seed", type=int, default=None, help="for a repeatable choice of victims and moments")
    parser.add_argument("--timeout", type=float, default=900, help="s for one release to end")
    sys.exit(asyncio.run(run(parser.parse_args())))
