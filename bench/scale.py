"""Scale benchmark on the local stack (`make bench-scale`): N concurrent releases (default 100, 300 and 1,000)
driven through the real coordinator (1, 2 and 3 instances in one consumer group, each its own OS process), Kafka
and PostgreSQL, with a workload that answers every command at once (bench/scale_responder.py: gate, DR check,
deploy, verifiers, rollback), so the control plane is what is measured; the shop, its traffic and HAProxy stay out.

The releases are of a benchmark-only catalog entry, `scale-bench`: the shop's entry under another name (the same
plan: gates, DR check, staging, canary steps each verified by two required and two advisory verifiers, finalize),
without notification routes. For each (instances, N) it prints saga steps per second (plan steps the releases
completed / time from the first submission to the last terminal state), the coordinator's hop latency (a result's
Kafka record → the next command's record of the same release) p50/p99, end-to-end release time (submission →
terminal state), and the CPU of each process over the round; with, measured in the same run, a bare acks=all
produce→consume round trip and a bare PostgreSQL commit (synchronous_commit on), and hop / (commit + round trip).
Writes a plot of throughput and hop latency against N (--plot, default docs/scale.png).

With every command answered at once, the releases keep the coordinators saturated: throughput is at its ceiling
and, by Little's law, a hop waits behind the other N - 1 releases' events, so it grows with N. The benchmark also
runs the same N values through one coordinator at a fixed offered load (--paced R): each command is answered after
about N / R seconds (the responder's `-pace<ms>-` release ids, uniform between half and one and a half times it),
and the submissions are spread over that time, so N releases offer about R commands a second whatever N is. That
is where the hop's growth with the number of releases in flight shows, apart from queueing.

Exits 1, naming them, if any release does not reach a terminal state; otherwise 0 (the goals are printed, not
asserted). Needs the stack (`make stack`) and none of the regular services (`bash deploy/services.sh stop`).

    python -m bench.scale [--releases 100,300,1000] [--instances 1,2,3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import yaml
from aiokafka import AIOKafkaProducer
from confluent_kafka import KafkaError, KafkaException

from bench import breakdown
from bench.rollback_latency import bare_round_trips, coordinator_hops, q
from contracts import topics
from contracts.cloudevents import Envelope, encode
from contracts.events import TERMINAL_STATES, AbortRequested
from releasegate_cli import client
from releasegate_platform import identity
from releasegate_runtime import bus_admin, db
from releasegate_runtime.kafka import client_options
from releasegate_runtime.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / ".run" / "logs"
CANDIDATE = ROOT / "examples" / "candidates" / "shop-v2.json"
RELEASE_MANAGER_KEY = ROOT / "examples" / "keys" / "carol.key"  # demo key: carol may abort the entry's releases
SERVICE = "scale-bench"
GROUP = "releasegate-coordinator"
HEALTH_BASE = 18700  # coordinator i answers /health on 18700 + i: apart from services.sh's and the e2e tests'
TERMINAL = {s.value for s in TERMINAL_STATES}
CLK_TCK = os.sysconf("SC_CLK_TCK")
COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}


def bench_catalog(directory: Path) -> Path:
    """The shop's catalog entry as `scale-bench`: same plan and rules, no notification routes, no replayer (a
    replayer must live in the service's own package, and nothing is ever restored here)."""
    entry = yaml.safe_load((ROOT / "catalog" / "shop.yaml").read_text())
    entry["name"] = SERVICE
    entry["description"] = "scale benchmark (bench/scale.py): the shop's entry under another name"
    entry["dr"].pop("replayer", None)
    entry.pop("notifications", None)
    (directory / f"{SERVICE}.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))
    return directory


# --- processes and their CPU --------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_ticks(pid: int, *, reaped_children: bool = False) -> int:
    """utime + stime of `pid` (and of its children it has waited for); 0 once it is gone."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0
    ticks = int(fields[11]) + int(fields[12])
    return ticks + (int(fields[13]) + int(fields[14]) if reaped_children else 0)


def tree_ticks(pid: int) -> int:
    """A server and its worker processes (PostgreSQL's backends): ended backends are in the server's own count."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat(int(entry))[1]) == pid:
                    children.append(int(entry))
            except (OSError, IndexError):
                continue
    return cpu_ticks(pid, reaped_children=True) + sum(cpu_ticks(c) for c in children)


def pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class Process:
    """One process the benchmark started, in its own session (stopped with its group)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], *, pipe_stdout: bool | None = None) -> None:
        """`pipe_stdout`: read its output (`ready`); by default only the responder's is."""
        LOGS.mkdir(parents=True, exist_ok=True)
        self.name, self.log = name, LOGS / f"bench-{name if name.startswith('chaos-') else 'scale-' + name}.log"
        piped = name == "responder" if pipe_stdout is None else pipe_stdout
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE if piped else self.log.open("ab"),
            stderr=self.log.open("ab"),
            start_new_session=True,
        )

    async def ready(self, timeout: float = 60) -> None:
        """Its first line is `ready` (the responder's, once every consumer is at its start)."""
        assert self.proc.stdout is not None, "ready() needs pipe_stdout"
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if line.strip() != b"ready":
            raise SystemExit(f"benchmark broken: {self.name} did not start (see {self.log})")

    def kill(self) -> None:
        """SIGKILL to its process group: no chance to clean up, as in a crash."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def infrastructure_cpu() -> dict[str, int]:
    """CPU ticks so far of the broker and of each PostgreSQL server with its backends."""
    out = {}
    kafka = pid_file(ROOT / ".run" / "pids" / "kafka.pid")
    if kafka:
        out["kafka"] = cpu_ticks(kafka)
    for name, data in (("postgres", "data"), ("pg-standby", "standby")):
        pid = pid_file(ROOT / ".run" / "pg" / data / "postmaster.pid")
        if pid:
            out[name] = tree_ticks(pid)
    return out


# --- one round: N releases through k coordinators -----------------------------------------------------------


@dataclass
class Round:
    instances: int
    releases: int
    states: dict[str, str] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    hops: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # process → % of one core over the round
    stages: list[str] = field(default_factory=list)  # where the hop's time went (bench/breakdown.py)
    at_rest: bool = False  # one release at a time: the hop of an idle control plane, no queueing
    pace_ms: int = 0  # each command answered after about this long: a fixed offered load (see --paced)

    @property
    def saturated(self) -> bool:
        """All submitted at once and every command answered at once: the control plane's ceiling."""
        return not self.at_rest and not self.pace_ms

    @property
    def unfinished(self) -> list[str]:
        return sorted(rid for rid, state in self.states.items() if state not in TERMINAL)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0


async def group_members(settings: ServiceSettings) -> tuple[str, int]:
    """(state, members with partitions) of the coordinator's consumer group."""
    admin = bus_admin.admin_client(settings.kafka_bootstrap, settings.secrets_dir, settings.kafka_ca_file)

    def describe() -> tuple[str, int]:
        for attempt in range(20):  # a broker that just started may not have loaded the group coordinator yet
            try:
                group = admin.describe_consumer_groups([GROUP])[GROUP].result(30)
                break
            except KafkaException as exc:
                if exc.args[0].code() not in COORDINATOR_MOVING or attempt == 19:
                    raise
                time.sleep(0.5)
        members = [m for m in group.members if m.assignment and m.assignment.topic_partitions]
        return group.state.name, len(members)

    return await asyncio.to_thread(describe)


async def start_coordinators(settings: ServiceSettings, k: int, env: dict[str, str]) -> list[Process]:
    state, members = await group_members(settings)
    if members:
        raise SystemExit(
            f"another coordinator is in the group {GROUP} ({members} member(s), {state}): stop the regular services "
            "first (bash deploy/services.sh stop)"
        )
    workers = int({**os.environ, **env}.get("RG_CONSUMER_WORKERS", "1"))  # group members per coordinator process
    coordinators = [
        Process(
            f"coordinator-{i}",
            [sys.executable, "-m", "services.coordinator"],
            {**env, "RG_HEALTH_PORT": str(HEALTH_BASE + i)},
        )
        for i in range(1, k + 1)
    ]
    try:
        await _until_in_group(settings, coordinators, k * workers)
    except BaseException:
        for c in coordinators:
            c.stop()
        raise
    return coordinators


async def _until_in_group(settings: ServiceSettings, coordinators: list[Process], members_wanted: int) -> None:
    k = len(coordinators)
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            crashed = [c.name for c in coordinators if c.proc.poll() is not None]
            if crashed:
                raise SystemExit(f"benchmark broken: {', '.join(crashed)} exited (see {LOGS}/bench-scale-*.log)")
            healthy = 0
            for c in coordinators:
                with contextlib.suppress(httpx.HTTPError):  # not listening yet: counted as not healthy
                    healthy += (await http.get(f"http://127.0.0.1:{HEALTH_BASE + int(c.name[12:])}/health")).is_success
            state, members = await group_members(settings)
            if healthy == k and members == members_wanted and state == "STABLE":
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"benchmark broken: {k} coordinator(s) not healthy and in the group within 120 s")
            await asyncio.sleep(0.5)


async def submit(settings: ServiceSettings, release_ids: list[str], spread: float = 0.0) -> dict[str, float]:
    """Every candidate, as upstream CI (principal `ci`), at once or evenly over `spread` seconds (an offered load,
    not a synchronisation); returns each one's submission time (epoch s)."""
    raw = client.load_candidate(CANDIDATE, release_id=release_ids[0], submitted_by="ci")
    producer = AIOKafkaProducer(
        **client_options(settings.model_copy(update={"principal": "ci"})), acks="all", enable_idempotence=True
    )
    await producer.start()
    sent: dict[str, float] = {}
    try:
        pending = []
        t0 = time.monotonic()
        for i, rid in enumerate(release_ids):
            if spread:
                await asyncio.sleep(max(t0 + spread * i / len(release_ids) - time.monotonic(), 0.0))
            candidate = raw.model_copy(update={"release_id": rid, "service": SERVICE})
            key, value, headers = encode(Envelope.new(candidate, "releasegate/scale-bench", rid))
            sent[rid] = time.time()
            pending.append(await producer.send(topics.CANDIDATES, value=value, key=key, headers=headers))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def follow(
    pool: asyncpg.Pool, release_ids: list[str], timeout: float, stall: float
) -> tuple[dict[str, str], int, datetime | None]:
    """Poll the sagas until every release is terminal, nothing moved for `stall` s, or `timeout` s passed; returns
    each release's state (with the step it waits at, if it has not ended), the plan steps completed and the last
    terminal state's time."""
    deadline, moved_at, last = time.monotonic() + timeout, time.monotonic(), None
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT release_id, state, revision, updated_at, (body->>'cursor')::int AS cursor,"
                " body->>'waiting_for' AS waiting_for FROM sagas"
                " WHERE release_id = ANY($1::text[])",
                release_ids,
            )
        progress = (len(rows), sum(r["revision"] for r in rows))
        if progress != last:
            last, moved_at = progress, time.monotonic()
        states = {rid: "not registered" for rid in release_ids} | {
            r["release_id"]: r["state"] if r["state"] in TERMINAL else f"{r['state']} at {r['waiting_for']}"
            for r in rows
        }
        done = all(s in TERMINAL for s in states.values())
        if done or time.monotonic() > deadline or time.monotonic() - moved_at > stall:
            ended = max((r["updated_at"] for r in rows if r["state"] in TERMINAL), default=None)
            return states, sum(r["cursor"] for r in rows), ended
        await asyncio.sleep(0.5)


async def end_unfinished(settings: ServiceSettings, pool: asyncpg.Pool, release_ids: list[str]) -> None:
    """Abort what did not finish, each abort signed by a release manager and sent as an operator (`ops`), so the
    stack is left with no release in flight (the responder answers the compensations)."""
    if not release_ids:
        return
    actor = client.actor_for(settings, RELEASE_MANAGER_KEY)
    producer = AIOKafkaProducer(
        **client_options(settings.model_copy(update={"principal": "ops"})), acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        pending = []
        for rid in release_ids:
            abort = AbortRequested(release_id=rid, actor=actor, reason="scale benchmark: did not finish")
            envelope = Envelope.new(identity.sign_command(RELEASE_MANAGER_KEY, abort), "releasegate/scale-bench", rid)
            key, value, headers = encode(envelope)
            pending.append(await producer.send(topics.CONTROL, value=value, key=key, headers=headers))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    await follow(pool, release_ids, timeout=120, stall=60)


async def one_round(
    settings: ServiceSettings,
    pool: asyncpg.Pool,
    k: int,
    n: int,
    env: dict[str, str],
    responder: Process,
    args,
    *,
    at_rest: bool = False,
    pace_ms: int = 0,
) -> Round:
    """`n` releases through `k` coordinators, all submitted at once; `at_rest`: each submitted once the one before
    it ended, so every hop is measured on an idle control plane; `pace_ms`: each command answered after about that
    long, the submissions spread over it."""
    coordinators = await start_coordinators(settings, k, env)
    result = Round(k, n, at_rest=at_rest, pace_ms=pace_ms)
    try:
        watched = {c.name: c.pid for c in coordinators} | {"responder": responder.pid}
        ports = [HEALTH_BASE + i for i in range(1, k + 1)]
        metrics_before = await breakdown.scrape(ports)
        before = {name: cpu_ticks(pid) for name, pid in watched.items()} | infrastructure_cpu()
        paced = f"pace{pace_ms}-" if pace_ms else ""
        release_ids = [f"{SERVICE}-{paced}{uuid.uuid4().hex[:12]}" for _ in range(n)]
        since_ms = int(time.time() * 1000)
        t0 = time.monotonic()
        if at_rest:
            sent, states, steps, ended = {}, {}, 0, None
            for rid in release_ids:
                sent |= await submit(settings, [rid])
                one, done, ended = await follow(pool, [rid], args.timeout, args.stall)
                states, steps = states | one, steps + done
        else:
            sent = await submit(settings, release_ids, spread=pace_ms / 1000)
            states, steps, ended = await follow(pool, release_ids, args.timeout, args.stall)
        wall = time.monotonic() - t0
        after = {name: cpu_ticks(pid) for name, pid in watched.items()} | infrastructure_cpu()
        result.stages = breakdown.table((await breakdown.scrape(ports)).minus(metrics_before))
        result.states, result.steps = states, steps
        first = min(sent.values())
        result.seconds = (ended.timestamp() - first) if ended else wall
        result.cpu = {name: 100 * (after[name] - before.get(name, 0)) / CLK_TCK / wall for name in after}
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT release_id, updated_at FROM sagas WHERE release_id = ANY($1::text[]) AND state = ANY($2)",
                release_ids,
                list(TERMINAL),
            )
        result.e2e = [r["updated_at"].timestamp() - sent[r["release_id"]] for r in rows]
        result.hops = await coordinator_hops(settings, since_ms, set(release_ids))
        await end_unfinished(settings, pool, result.unfinished)
    finally:
        for c in coordinators:
            c.stop()
    return result


# --- baselines, table, plot ---------------------------------------------------------------------------------


async def bare_commits(pool: asyncpg.Pool, n: int) -> list[float]:
    """ms of one INSERT and its COMMIT with synchronous_commit on, in a scratch table of the benchmark's own."""
    table = f"bench_scale_commit_{uuid.uuid4().hex[:8]}"
    samples = []
    async with pool.acquire() as conn:
        await conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
        try:
            await conn.execute("SET synchronous_commit = on")
            for _ in range(n):
                t0 = time.perf_counter()
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {table} DEFAULT VALUES")
                samples.append((time.perf_counter() - t0) * 1000)
        finally:
            await conn.execute("RESET synchronous_commit")
            await conn.execute(f"DROP TABLE {table}")
    return samples


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def table(rounds: list[Round], rtt: list[float], commit: list[float]) -> list[str]:
    base = statistics.median(rtt) + statistics.median(commit)
    lines = [
        f"Baselines (same run): bare acks=all produce->consume round trip p50 {statistics.median(rtt):.2f} ms "
        f"p99 {q(rtt, 0.99):.2f} ms (n={len(rtt)}); bare PostgreSQL commit (synchronous_commit on) p50 "
        f"{statistics.median(commit):.2f} ms p99 {q(commit, 0.99):.2f} ms (n={len(commit)})",
        "",
        f"{'coord':>5} {'N':>5} {'terminal':>9} {'steps':>6} {'steps/s':>8} {'hop p50':>8} {'hop p99':>8}"
        f" {'hop/base':>8} {'e2e p50':>8} {'e2e p99':>8}   CPU % of one core",
        f"{'':>5} {'':>5} {'':>9} {'':>6} {'':>8} {'ms':>8} {'ms':>8} {'p50':>8} {'s':>8} {'s':>8}",
    ]
    for r in rounds:
        terminal = r.releases - len(r.unfinished)
        hop50 = statistics.median(r.hops) if r.hops else None
        cpu = "  ".join(f"{name} {pct:.0f}" for name, pct in r.cpu.items())
        n = f"{r.releases}*" if r.at_rest else f"{r.releases}~" if r.pace_ms else str(r.releases)
        lines.append(
            f"{r.instances:>5} {n:>5} {f'{terminal}/{r.releases}':>9} {r.steps:>6} "
            f"{r.steps_per_second:>8.1f} {fmt(hop50, '.1f'):>8} {fmt(q(r.hops, 0.99) if r.hops else None, '.1f'):>8} "
            f"{fmt(hop50 / base if hop50 else None, '.1f'):>8} "
            f"{fmt(statistics.median(r.e2e) if r.e2e else None, '.1f'):>8} "
            f"{fmt(q(r.e2e, 0.99) if r.e2e else None, '.1f'):>8}   {cpu}"
        )
    lines.append(
        f"hop/base = hop p50 / (commit p50 + round trip p50) = hop p50 / {base:.2f} ms; e2e = submission -> terminal state"
    )
    paced = [r for r in rounds if r.pace_ms]
    if paced:
        rate = round(paced[0].releases * 1000 / paced[0].pace_ms)
        lines.append(
            f"N~ = a fixed offered load: each command answered after about N / {rate} s "
            f"({', '.join(f'{r.pace_ms} ms at N={r.releases}' for r in paced)}), the submissions spread over it"
        )
    lines += [
        f"{r.releases}* = at rest: {r.releases} releases one after another, so no hop waits behind another release's;"
        f" goal hop p50 <= 1.5 x base: {statistics.median(r.hops) / base:.2f} x"
        for r in rounds
        if r.at_rest and r.hops
    ]
    return lines


def goals(rounds: list[Round]) -> list[str]:
    lines = []
    for k in sorted({r.instances for r in rounds}):
        mine = sorted((r for r in rounds if r.instances == k and r.saturated), key=lambda r: r.releases)
        if not mine:
            continue
        top = mine[-1]
        lines.append(
            f"goal, {k} coordinator(s): {top.releases} releases all terminal: {not top.unfinished}; "
            f">=500 steps/s: {top.steps_per_second:.0f} steps/s"
            + (
                f"; hop p99 N={mine[0].releases} -> N={top.releases}: x{q(top.hops, 0.99) / q(mine[0].hops, 0.99):.1f}"
                " (goal: within 2x)"
                if len(mine) > 1 and top.hops and mine[0].hops
                else ""
            )
        )
    paced = sorted((r for r in rounds if r.pace_ms and r.hops), key=lambda r: r.releases)
    if len(paced) > 1:
        low, top = paced[0], paced[-1]
        lines.append(
            f"goal, hop p99 flat at a fixed offered load ({low.instances} coordinator): N={low.releases} -> "
            f"N={top.releases}: {q(low.hops, 0.99):.1f} -> {q(top.hops, 0.99):.1f} ms, "
            f"x{q(top.hops, 0.99) / q(low.hops, 0.99):.1f} (goal: within 2x); saturated, the hop is queueing "
            "(Little's law) and grows with N"
        )
    return lines


def plot(rounds: list[Round], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, k in enumerate(sorted({r.instances for r in rounds})):
        mine = sorted((r for r in rounds if r.instances == k and r.hops and r.saturated), key=lambda r: r.releases)
        ns, color = [r.releases for r in mine], f"C{i}"
        left.plot(ns, [r.steps_per_second for r in mine], marker="o", color=color, label=f"{k} coordinator(s)")
        right.plot(ns, [statistics.median(r.hops) for r in mine], marker="o", color=color, label=f"p50, {k} coord.")
        right.plot(
            ns, [q(r.hops, 0.99) for r in mine], marker="^", linestyle="--", color=color, label=f"p99, {k} coord."
        )
    paced = sorted((r for r in rounds if r.pace_ms and r.hops), key=lambda r: r.releases)
    if paced:
        rate = round(paced[0].releases * 1000 / paced[0].pace_ms)
        right.plot(
            [r.releases for r in paced],
            [q(r.hops, 0.99) for r in paced],
            marker="s",
            linestyle=":",
            color="black",
            label=f"p99, 1 coord., fixed load ({rate} answers/s)",
        )
    ticks = sorted({r.releases for r in rounds if not r.at_rest})
    left.set(xlabel="concurrent releases N", ylabel="saga steps / s", title="Throughput", xscale="log", ylim=(0, None))
    right.set(xlabel="concurrent releases N", ylabel="ms", title="Coordinator hop (result -> next command)")
    right.set(xscale="log", yscale="log")
    for ax in (left, right):
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())  # the N values only (a log axis would add its own)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("releasegate control plane at scale (bench/scale.py, workload answering at once)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# --- main ---------------------------------------------------------------------------------------------------


async def in_flight(pool: asyncpg.Pool) -> list[tuple[str, str]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT release_id, service FROM sagas WHERE state <> ALL($1::text[])", list(TERMINAL))
    return [(r["release_id"], r["service"]) for r in rows]


async def main(args) -> int:
    settings = ServiceSettings()
    pool = await db.create_pool(settings.database_url, max_size=2)
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    catalog = bench_catalog(workdir)
    env = {"RG_CATALOG_DIR": str(catalog), "RG_ENV": "local"}
    responder: Process | None = None
    rounds: list[Round] = []
    try:
        others = [rid for rid, service in await in_flight(pool) if service != SERVICE]
        if others:
            raise SystemExit(
                f"releases in flight that are not the benchmark's: {', '.join(others)}; end them with the regular "
                "services first (releasegate abort)"
            )
        responder = Process(
            "responder",
            [sys.executable, "-m", "bench.scale_responder", "--prefix", f"{SERVICE}-", "--catalog-dir", str(catalog)]
            + ["--heartbeat-seconds", str(args.heartbeat_seconds)],
            env,
        )
        await responder.ready()
        leftovers = [rid for rid, _ in await in_flight(pool)]
        if leftovers:  # a previous run's, interrupted: ended by an abort, the responder answers the compensations
            coordinators = await start_coordinators(settings, 1, env)
            try:
                await end_unfinished(settings, pool, leftovers)
            finally:
                for c in coordinators:
                    c.stop()
        if args.at_rest:
            print(f"... {args.at_rest} releases one after another through 1 coordinator (at rest)", flush=True)
            rounds.append(await one_round(settings, pool, 1, args.at_rest, env, responder, args, at_rest=True))
        if args.paced:
            for n in args.releases:
                pace_ms = round(1000 * n / args.paced)
                print(
                    f"... {n} releases through 1 coordinator at {args.paced:g} answers/s ({pace_ms} ms each)",
                    flush=True,
                )
                r = await one_round(settings, pool, 1, n, env, responder, args, pace_ms=pace_ms)
                rounds.append(r)
                print(f"    {n - len(r.unfinished)}/{n} terminal, {r.steps} steps in {r.seconds:.1f} s", flush=True)
        for k in args.instances:
            for n in args.releases:
                print(f"... {n} releases through {k} coordinator(s)", flush=True)
                r = await one_round(settings, pool, k, n, env, responder, args)
                rounds.append(r)
                print(
                    f"    {n - len(r.unfinished)}/{n} terminal, {r.steps} steps in {r.seconds:.1f} s "
                    f"({r.steps_per_second:.0f}/s)",
                    flush=True,
                )
        rtt = await bare_round_trips(settings, args.round_trips)
        commit = await bare_commits(pool, args.commits)
    finally:
        if responder is not None:
            responder.stop()
        await pool.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nWorkload: the {SERVICE} plan; verifiers heartbeat every {args.heartbeat_seconds:g} s")
    print("\n".join(table(rounds, rtt, commit)))
    print("\n".join(goals(rounds)))
    for r in rounds:
        how = (
            " one at a time (at rest)"
            if r.at_rest
            else f" at a fixed load ({r.pace_ms} ms a step)"
            if r.pace_ms
            else ""
        )
        print(f"\n{r.instances} coordinator(s), N={r.releases}{how}:")
        print("\n".join(r.stages))
    if args.plot:
        plot(rounds, args.plot)
        print(f"plot: {args.plot}")
    failed = {f"{r.instances} coordinator(s), N={r.releases}": r.unfinished for r in rounds if r.unfinished}
    if failed:
        for where, rids in failed.items():
            shown = ", ".join(f"{rid} ({state})" for rid, state in ((x, _state(rounds, x)) for x in rids[:20]))
            print(f"FAIL {where}: {len(rids)} release(s) not terminal: {shown}", file=sys.stderr)
        return 1
    return 0


def _state(rounds: list[Round], rid: str) -> str:
    return next(r.states[rid] for r in rounds if rid in r.states)


def numbers(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--releases", type=numbers, default=[100, 300, 1000], help="N values, e.g. 100,300,1000")
    parser.add_argument("--instances", type=numbers, default=[1, 2, 3], help="coordinator instances, e.g. 1,2,3")
    parser.add_argument("--timeout", type=float, default=1200, help="longest a round may take (s)")
    parser.add_argument("--stall", type=float, default=120, help="a round with no saga change for this long ends")
    parser.add_argument(
        "--at-rest", type=int, default=5, help="releases run one after another first, for the hop at rest (0: none)"
    )
    parser.add_argument(
        "--paced",
        type=float,
        default=150,
        help="also run each N through 1 coordinator with commands answered after N / this many s (0: not)",
    )
    parser.add_argument("--round-trips", type=int, default=200)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=5.0,
        help="the verifiers' heartbeat period (the SDK's default: 5 s); alive = heard from within 3 periods",
    )
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "scale.png", help="PNG to write ('' for none)")
    args = parser.parse_args()
    if args.plot == Path(""):
        args.plot = None
    sys.exit(asyncio.run(main(args)))
