"""Chaos soak of the control plane on the local stack (`make bench-chaos`): R releases of mixed plans and outcomes
driven through two real coordinator processes (one consumer group), Kafka and PostgreSQL, while a fault injector
SIGKILLs a coordinator or the workload at random moments (each restarted after a random while), and the Kafka
broker and the PostgreSQL primary are restarted once each mid-run.

The workload is the scale benchmark's responder (bench/scale_responder.py), run `--durable`: it plays the
gatekeeper, the dr-checker, the deployer, the rollback service and the verifiers with their own principals and
grant checks, commits what it answered, and after a kill answers again whatever it had not committed (so results
arrive twice, as a real service's redelivered records would). The releases are of three catalog entries (the
shop's canary plan, blue-green and tenant-phased), some stateful (the gate reports a data-rewriting migration:
backup point, migrations, a data restore on rollback), some bad (their production verifications fail).

Afterwards it checks and prints the invariants, and exits 1 if one does not hold:
- every release ended (promoted, rolled back, ...) or waits paused with the reason in its audit log;
- each release ended as intended: a good one promoted, a bad one rolled back;
- no effect twice: the audit log records each step's request and its outcome once, and each step's command was
  written to the coordinator's outbox once (a deploy or compensation step never re-issued);
- the audit log is complete: every step the plan completed has its outcome recorded, in plan order.

Not covered here (named in the README): the real worker services under kills, HAProxy weights and candidate
processes (tests/faults kills the coordinator, the deployer, the rollback service and the verifier, and restarts
Kafka and PostgreSQL, under real shop releases, and checks those), and notifications. Needs the stack (`make stack`) and none of the regular services (`bash deploy/services.sh stop`).

    python -m bench.chaos [--releases 200] [--kills 100] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import yaml
from aiokafka import AIOKafkaProducer

from bench import faults
from bench.scale import HEALTH_BASE, TERMINAL, Process, end_unfinished, follow, group_members, in_flight
from contracts import topics
from contracts.cloudevents import Envelope, encode
from releasegate_cli import client
from releasegate_runtime import db
from releasegate_runtime.kafka import client_options
from releasegate_runtime.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
CANDIDATE = ROOT / "examples" / "candidates" / "shop-v2.json"
PREFIX = "chaos-"
BAD, STATEFUL = "-bad-", "-stateful-"  # markers in a release id the responder acts on
# plan kind → (catalog entry, the entry it is made from)
ENTRIES = {
    "canary": ("chaos-canary", ROOT / "catalog" / "shop.yaml"),
    "blue-green": ("chaos-blue-green", ROOT / "examples" / "catalog-blue-green" / "shop.yaml"),
    "tenants": ("chaos-tenants", ROOT / "examples" / "catalog-tenant-phased" / "shop.yaml"),
}
# the mix of releases: (plan kind, stateful, bad) → share
MIX = {
    ("canary", False, False): 0.30,
    ("canary", False, True): 0.15,
    ("blue-green", False, False): 0.10,
    ("blue-green", False, True): 0.05,
    ("tenants", False, False): 0.10,
    ("tenants", False, True): 0.05,
    ("canary", True, False): 0.15,
    ("canary", True, True): 0.10,
}
INTENDED = {False: "promoted", True: "rolled_back"}
COORDINATORS = ("coordinator-1", "coordinator-2")
# commands the coordinator writes once per step whatever happens (a verification is asked again after a resume)
ONCE_ONLY_TOPICS = [topics.GATE_COMMANDS, topics.DR_COMMANDS, topics.DEPLOY_COMMANDS, topics.ROLLBACK_COMMANDS]


def chaos_catalog(directory: Path) -> Path:
    """The three entries under the benchmark's names: same plans and rules, no notification routes, no replayer."""
    for name, source in ENTRIES.values():
        entry = yaml.safe_load(source.read_text())
        entry["name"] = name
        entry["description"] = f"chaos soak (bench/chaos.py): {source.relative_to(ROOT)} under another name"
        entry.get("dr", {}).pop("replayer", None)
        entry.pop("notifications", None)
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))
    return directory


@dataclass(frozen=True)
class Planned:
    release_id: str
    service: str
    kind: str
    stateful: bool
    bad: bool

    @property
    def label(self) -> str:
        return f"{self.kind}{' stateful' if self.stateful else ''} {'bad' if self.bad else 'good'}"


def plan_releases(n: int, rng: random.Random) -> list[Planned]:
    """`n` releases in the MIX's shares (rounded, at least one of each), in random order."""
    counts = {key: max(1, round(share * n)) for key, share in MIX.items()}
    while sum(counts.values()) > n:
        counts[max(counts, key=lambda k: counts[k])] -= 1
    while sum(counts.values()) < n:
        counts[("canary", False, False)] += 1
    planned = []
    for (kind, stateful, bad), count in counts.items():
        for _ in range(count):
            name = f"{PREFIX}{kind}{STATEFUL if stateful else '-'}{'bad' if bad else 'good'}-{uuid.uuid4().hex[:10]}"
            planned.append(Planned(name.replace("--", "-"), ENTRIES[kind][0], kind, stateful, bad))
    rng.shuffle(planned)
    return planned


# --- the processes and the fault injector --------------------------------------------------------------------


class Fleet:
    """The coordinators and the responder, each restartable; `kill` SIGKILLs one (no chance to clean up)."""

    def __init__(self, env: dict[str, str], catalog: Path) -> None:
        self.env, self.catalog = env, catalog
        self.procs: dict[str, Process] = {}
        self.responder_starts = 0

    def start(self, name: str) -> None:
        if name == "responder":
            argv = [
                sys.executable,
                "-m",
                "bench.scale_responder",
                "--prefix",
                PREFIX,
                "--catalog-dir",
                str(self.catalog),
            ]
            argv += [arg for _, (service, _) in ENTRIES.items() for arg in ("--service", service)]
            argv += ["--durable", f"--fail-marker={BAD}", f"--stateful-marker={STATEFUL}"]
            argv += ["--resume"] if self.responder_starts else []  # the first one starts at the end of the topics
            self.responder_starts += 1
            self.procs[name] = Process(f"chaos-{name}", argv, self.env, pipe_stdout=self.responder_starts == 1)
        else:
            i = COORDINATORS.index(name) + 1
            self.procs[name] = Process(
                f"chaos-{name}",
                [sys.executable, "-m", "services.coordinator"],
                {**self.env, "RG_HEALTH_PORT": str(HEALTH_BASE + i)},
            )

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def exited(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.proc.poll() is not None]

    def stop(self) -> None:
        for p in self.procs.values():
            p.stop()


@dataclass
class Chaos:
    kills: Counter[str] = field(default_factory=Counter)
    infrastructure: list[str] = field(default_factory=list)
    outage: str | None = None  # the infrastructure restart under way
    down: set[str] = field(default_factory=set)  # killed on purpose, not restarted yet
    exited_in_outage: Counter[str] = field(default_factory=Counter)  # exited by themselves while Kafka/PG was down
    crashed_by_themselves: list[str] = field(default_factory=list)  # exited by themselves otherwise: a finding


async def supervise(fleet: Fleet, chaos: Chaos, stop: asyncio.Event) -> None:
    """Restart what exited by itself, as the services' supervisor (deploy/services.sh) or Kubernetes would. An exit
    while the broker or PostgreSQL is down is a process giving up on a dependency (counted); any other is a crash."""
    while not stop.is_set():
        for name in fleet.exited():
            if name in chaos.down:
                continue
            if chaos.outage is not None:
                chaos.exited_in_outage[name] += 1
            else:
                chaos.crashed_by_themselves.append(name)
            fleet.start(name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def restart_infrastructure(chaos: Chaos, name: str, stop: Callable[[], None]) -> None:
    chaos.outage = name
    try:
        await asyncio.to_thread(stop)
        await asyncio.to_thread(faults.start_infrastructure)
    finally:
        chaos.outage = None
    chaos.infrastructure.append(name)


async def inject(fleet: Fleet, chaos: Chaos, kills: int, submitted: asyncio.Event, rng: random.Random) -> None:
    """SIGKILL a random process at a random moment, restart it after a random while; the broker restart after a
    third of the kills and the PostgreSQL restart after two thirds. Until `kills` and every release submitted."""
    targets = [*COORDINATORS, "responder"]
    while sum(chaos.kills.values()) < kills or not submitted.is_set():
        # the pacing of a fault injector (random moments), not a wait for something to happen
        await asyncio.sleep(rng.uniform(0.2, 1.2))
        name = rng.choice(targets)
        chaos.down.add(name)
        fleet.kill(name)
        chaos.kills[name] += 1
        await asyncio.sleep(rng.uniform(0.1, 0.8))  # how long it stays down
        fleet.start(name)
        chaos.down.discard(name)
        done = sum(chaos.kills.values())
        if done == kills // 3 and "kafka" not in chaos.infrastructure:
            await restart_infrastructure(chaos, "kafka", faults.stop_kafka)
        if done == 2 * kills // 3 and "postgresql" not in chaos.infrastructure:
            await restart_infrastructure(chaos, "postgresql", faults.stop_postgres)


async def submit_waves(settings: ServiceSettings, planned: list[Planned], wave: int, submitted: asyncio.Event) -> None:
    """The candidates as upstream CI sends them (principal `ci`), `wave` at a time, a second apart."""
    raw = client.load_candidate(CANDIDATE, release_id=planned[0].release_id, submitted_by="ci")
    producer = AIOKafkaProducer(
        **client_options(settings.model_copy(update={"principal": "ci"})), acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for i in range(0, len(planned), wave):
            pending = []
            for p in planned[i : i + wave]:
                candidate = raw.model_copy(update={"release_id": p.release_id, "service": p.service})
                key, value, headers = encode(Envelope.new(candidate, "releasegate/chaos-bench", p.release_id))
                pending.append(await producer.send(topics.CANDIDATES, value=value, key=key, headers=headers))
            await asyncio.gather(*pending)
            await asyncio.sleep(1.0)  # releases arrive over the first part of the soak, not all at once
    finally:
        await producer.stop()
        submitted.set()


# --- invariants ----------------------------------------------------------------------------------------------


async def audit(pool: asyncpg.Pool, planned: list[Planned]) -> dict[str, list[str]]:
    """Invariant → the releases (with why) that break it."""
    ids = [p.release_id for p in planned]
    async with pool.acquire() as conn:
        sagas = {
            r["release_id"]: r
            for r in await conn.fetch(
                "SELECT release_id, state, body FROM sagas WHERE release_id = ANY($1::text[])", ids
            )
        }
        entries = await conn.fetch(
            "SELECT release_id, id, step, reason FROM audit_log WHERE release_id = ANY($1::text[]) ORDER BY id", ids
        )
        outbox = await conn.fetch(
            "SELECT key, topic, payload::jsonb->>'step_id' AS step, count(*) AS n FROM outbox"
            " WHERE producer = 'coordinator' AND key = ANY($1::text[]) AND topic = ANY($2::text[])"
            " GROUP BY key, topic, step HAVING count(*) > 1",
            ids,
            ONCE_ONLY_TOPICS,
        )
    timelines: dict[str, list[dict]] = {rid: [] for rid in ids}
    for e in entries:
        timelines[e["release_id"]].append({"step": e["step"], "reason": e["reason"]})
    broken: dict[str, list[str]] = {
        "ended, or paused with its reason": [],
        "ended as intended": [],
        "no effect twice (audit)": [],
        "no command written twice (outbox)": [],
        "audit complete, in plan order": [],
    }
    for p in planned:
        row = sagas.get(p.release_id)
        if row is None:
            broken["ended, or paused with its reason"].append(f"{p.release_id}: never registered")
            continue
        state, body, timeline = row["state"], row["body"], timelines[p.release_id]
        if state not in TERMINAL and not (state == "paused" and timeline and timeline[-1]["reason"]):
            broken["ended, or paused with its reason"].append(f"{p.release_id}: {state} at {body.get('waiting_for')}")
        elif state in TERMINAL and state != INTENDED[p.bad]:
            last = timeline[-1]["reason"] if timeline else "no audit"
            broken["ended as intended"].append(f"{p.release_id} ({p.label}): {state}: {last[:160]}")
        repeated = faults.repeated_effects(timeline)
        if repeated:
            broken["no effect twice (audit)"].append(f"{p.release_id}: {repeated}")
        missing = unrecorded_steps(body, timeline)
        if missing:
            broken["audit complete, in plan order"].append(f"{p.release_id}: {missing}")
    for r in outbox:
        broken["no command written twice (outbox)"].append(f"{r['key']}: {r['step']} on {r['topic']} {r['n']} times")
    return broken


def unrecorded_steps(body: dict, timeline: list[dict]) -> list[str]:
    """Steps the saga completed (before its cursor) whose outcome the audit log does not record, or records out of
    the plan's order."""
    plan = [s["id"] for s in body.get("plan", [])][: int(body.get("cursor") or 0)]
    outcomes = [
        e["step"]
        for e in timeline
        if e["step"] and e["reason"].startswith((f"{e['step']} done", f"{e['step']} passed", f"{e['step']} skipped"))
    ]
    missing = [s for s in plan if s not in outcomes]
    recorded = [s for s in outcomes if s in plan]
    return missing + ([f"out of order: {recorded}"] if recorded != sorted(recorded, key=plan.index) else [])


# --- the run -------------------------------------------------------------------------------------------------


async def run(args) -> int:
    settings = ServiceSettings()
    rng = random.Random(args.seed)
    pool = await db.create_pool(settings.database_url, max_size=2)
    workdir = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    catalog = chaos_catalog(workdir)
    env = {"RG_CATALOG_DIR": str(catalog), "RG_ENV": "local"}
    fleet = Fleet(env, catalog)
    planned = plan_releases(args.releases, rng)
    chaos = Chaos()
    stop = asyncio.Event()
    supervisor: asyncio.Task | None = None
    try:
        others = [rid for rid, _ in await in_flight(pool) if not rid.startswith(PREFIX)]
        if others:
            raise SystemExit(f"releases in flight that are not the soak's: {', '.join(others)}; end them first")
        state, members = await group_members(settings)
        if members:
            raise SystemExit(f"a coordinator is running ({members} member(s), {state}): bash deploy/services.sh stop")
        fleet.start("responder")
        await fleet.procs["responder"].ready()
        for name in COORDINATORS:
            fleet.start(name)
        leftovers = [rid for rid, _ in await in_flight(pool)]
        if leftovers:  # an interrupted run's: aborted, and the responder answers their compensations
            await end_unfinished(settings, pool, leftovers)
        print(
            f"... {len(planned)} releases, at least {args.kills} kills, a broker and a PostgreSQL restart", flush=True
        )
        t0 = time.monotonic()
        submitted = asyncio.Event()
        supervisor = asyncio.create_task(supervise(fleet, chaos, stop))
        await asyncio.gather(
            submit_waves(settings, planned, args.wave, submitted),
            inject(fleet, chaos, args.kills, submitted, rng),
        )
        print(f"    faults done after {time.monotonic() - t0:.0f} s: {dict(chaos.kills)}", flush=True)
        ids = [p.release_id for p in planned]
        states, _, _ = await follow(pool, ids, args.timeout, args.stall)
        wall = time.monotonic() - t0
        broken = await audit(pool, planned)
        await end_unfinished(settings, pool, [rid for rid, s in states.items() if s not in TERMINAL])
    finally:
        stop.set()
        if supervisor is not None:
            await supervisor
        fleet.stop()
        await pool.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(report(planned, states, chaos, broken, wall))
    return 1 if any(broken.values()) or chaos.crashed_by_themselves else 0


def report(
    planned: list[Planned], states: dict[str, str], chaos: Chaos, broken: dict[str, list[str]], wall: float
) -> str:
    lines = [f"\nChaos soak: {len(planned)} releases in {wall:.0f} s"]
    outcomes: dict[str, Counter[str]] = {}
    for p in planned:
        outcomes.setdefault(p.label, Counter())[states[p.release_id].split(" at ")[0]] += 1
    lines.append(f"{'releases':<28} {'n':>4}  ended")
    for label in sorted(outcomes):
        ended = ", ".join(f"{state} {n}" for state, n in outcomes[label].most_common())
        lines.append(f"{label:<28} {sum(outcomes[label].values()):>4}  {ended}")
    kills = ", ".join(f"{name} {n}" for name, n in sorted(chaos.kills.items()))
    lines.append(f"\nSIGKILLs: {sum(chaos.kills.values())} ({kills}); restarted: {', '.join(chaos.infrastructure)}")
    if chaos.exited_in_outage:
        gave_up = ", ".join(f"{name} {n}" for name, n in sorted(chaos.exited_in_outage.items()))
        lines.append(f"exited while Kafka or PostgreSQL was down, and restarted: {gave_up}")
    if chaos.crashed_by_themselves:
        lines.append(f"FAIL exited without being killed: {', '.join(chaos.crashed_by_themselves)}")
    lines.append("\nInvariants:")
    for name, found in broken.items():
        lines.append(f"  {'ok  ' if not found else 'FAIL'} {name}" + (f": {len(found)} release(s)" if found else ""))
        lines += [f"       {why}" for why in found[:10]]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--releases", type=int, default=200)
    parser.add_argument("--kills", type=int, default=100, help="SIGKILLs at least")
    parser.add_argument("--wave", type=int, default=10, help="releases submitted together, a second apart")
    parser.add_argument("--seed", type=int, default=None, help="for a repeatable choice of victims and moments")
    parser.add_argument("--timeout", type=float, default=900, help="s for every release to end after the faults")
    parser.add_argument("--stall", type=float, default=240, help="s without progress that end the wait early")
    sys.exit(asyncio.run(run(parser.parse_args())))
