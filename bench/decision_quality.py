"""Decision-quality benchmark on the running local stack (`make bench-quality`).

Runs many canaries against the real shop: the candidate is started in production beside stable v1 at a fixed
weight (25%) for a window (60 s) while the synthetic shoppers run, and the verifier records every business event
and HAProxy request. Then two judges are replayed, look by look, on exactly the same recorded samples:
  releasegate  — the verifier's judge: guardrails; on the rates, the stratified SPRT for a 2-point drop (`detect`,
                 power 0.95, by tenant); on latency, the mSPRT; α = 0.01; looked at as the live verifier does: on
                 the tick, and after each candidate event (those looks only fail);
  fixed        — a threshold-per-interval judge in the style of Flagger/Argo analysis: every interval, canary
                 success rates >= 95% and p95 <= a fixed latency; rollback after 2 failed checks in a row.
Prints detection rate per regression size, false-rollback rate on healthy releases, the time from the
regression's start (canary start) to the rollback decision, and releasegate's outcomes (rollback, pass,
inconclusive); then the power calculation the verifier uses (`evidence_needed`) on the recorded traffic: how many
candidate checkouts a 2-point drop needs, how long that is at this traffic and what traffic the window would need.
Prints figures; asserts nothing. `--versions v2,v4` runs only those scenarios."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from contracts.events import KpiThreshold, Verdict
from releasegate_platform.artifacts import ArtifactStore
from releasegate_platform.haproxy import HAProxy
from releasegate_platform.local_target import LocalTarget
from releasegate_runtime import db
from releasegate_sdk.statistics import evidence_needed
from services.deployer.adapters.launcher import Launcher
from services.deployer.config import DeployerSettings
from services.verifier.domain import Counts, judge, percentile

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = ROOT / "examples" / "candidates"
SCENARIOS = {
    "v2": "healthy",
    "v4": "small: ~2 points of checkout success",
    "v5": "small: +30% p95 latency",
    "v3": "large: non-Visa payments broken",
}
DETECT, POWER = 0.02, 0.95  # the goal: a 2-point drop caught in >= 95% of runs
RELEASEGATE_THRESHOLDS = {
    "checkout_success_rate": KpiThreshold(min=0.5, detect=DETECT, power=POWER),
    "payment_authorization_rate": KpiThreshold(min=0.5, detect=DETECT, power=POWER),
    "http_error_rate": KpiThreshold(max=0.05),
    "latency_p95_ms": KpiThreshold(max=1500, tolerance=0.1),
    "checkout_latency_p95_ms": KpiThreshold(tolerance=0.1),
}
FIXED = {"min_rate": 0.95, "max_p95_ms": 20.0, "interval_s": 5, "failed_checks": 2}
MIN_SAMPLES, ALPHA, LOOK_S = 15, 0.01, 1
DATA_LOOK_GAP_S = 0.05  # the business-KPI verifier's data_look_gap_seconds


@dataclass
class Recording:
    version: str
    start: datetime
    end: datetime
    events: list[tuple[datetime, str, str, float | None, str]]  # (at, version, type, latency_ms, tenant)
    http: list[tuple[datetime, str, int, int]]  # (at, version, status, ta_ms)


def counts(rec: Recording, version: str, start: datetime, end: datetime) -> Counts:
    c = Counts()
    checkouts: dict[str, list[int]] = {}
    payments: dict[str, list[int]] = {}
    for at, v, type_, latency, tenant in rec.events:
        if v == version and start <= at < end:
            if type_ == "shop.checkout.succeeded.v1":
                c.checkout_succeeded += 1
                c.checkout_latencies_ms.append(latency or 0.0)
                checkouts.setdefault(tenant, [0, 0])[0] += 1
            elif type_ == "shop.checkout.failed.v1":
                c.checkout_failed += 1
                checkouts.setdefault(tenant, [0, 0])[1] += 1
            elif type_ == "shop.payment.authorized.v1":
                c.payment_authorized += 1
                payments.setdefault(tenant, [0, 0])[0] += 1
            elif type_ == "shop.payment.declined.v1":
                c.payment_declined += 1
                payments.setdefault(tenant, [0, 0])[1] += 1
    # per tenant, as the verifier's store groups them: the segments of the stratified test
    c.checkout_segments = {t: (ok, ok + bad) for t, (ok, bad) in checkouts.items()}
    c.payment_segments = {t: (ok, ok + bad) for t, (ok, bad) in payments.items()}
    for at, v, status, ta in rec.http:
        if v == version and start <= at < end:
            c.http_total += 1
            c.http_5xx += status >= 500
            c.latencies_ms.append(float(ta))
    return c


def looks(rec: Recording, window: int) -> list[tuple[float, bool]]:
    """The live verifier's looks, as (seconds from canary start, woken by data): one every `LOOK_S` on the tick,
    and one after each candidate business event (what its ingest wakes), no sooner than `DATA_LOOK_GAP_S` after
    the previous look."""
    ticks = [(float(t), False) for t in range(LOOK_S, window + 1, LOOK_S)]
    arrivals = sorted(
        (at - rec.start).total_seconds() + 1e-6
        for at, v, _, _, _ in rec.events
        if v == rec.version and rec.start <= at < rec.start + timedelta(seconds=window)
    )
    out: list[tuple[float, bool]] = []
    last = -math.inf
    for t, woken in sorted([*ticks, *((a, True) for a in arrivals)]):
        if woken and t - last < DATA_LOOK_GAP_S:
            continue
        out.append((t, woken))
        last = t
    return out


OUTCOMES: dict[str, list[str]] = {}  # version -> releasegate's verdict per run (rollback / pass / inconclusive)


def releasegate_decision(rec: Recording, window: int) -> float | None:
    """Seconds from canary start to a rollback decision, or None if it would not roll back."""
    for t, woken in looks(rec, window):
        end = rec.start + timedelta(seconds=t)
        verdict, _, _ = judge(
            RELEASEGATE_THRESHOLDS,
            counts(rec, rec.version, rec.start, end),
            counts(rec, "v1", rec.start, end),
            MIN_SAMPLES,
            final=not woken and t >= window,
            alpha=ALPHA,
            woken_by_data=woken,
            elapsed_s=t,
        )
        if verdict is Verdict.FAIL:
            OUTCOMES.setdefault(rec.version, []).append("rollback")
            return t
        if verdict is not None:
            OUTCOMES.setdefault(rec.version, []).append("pass" if verdict is Verdict.PASS else "inconclusive")
            return None
    OUTCOMES.setdefault(rec.version, []).append("inconclusive")
    return None


def traffic_needed(recordings: list[Recording], window: int, weight: int) -> list[str]:
    """The power calculation the verifier uses (`evidence_needed`), on the traffic the healthy canaries had: how
    many candidate checkouts a 2-point drop needs, how many a second that is within the window, and what the
    shop's traffic gives."""
    healthy = [r for r in recordings if r.version == "v2"] or recordings
    cand = [counts(r, r.version, r.start, r.end) for r in healthy]
    base = [counts(r, "v1", r.start, r.end) for r in healthy]
    nc = sum(c.checkout_succeeded + c.checkout_failed for c in cand)
    nb = sum(b.checkout_succeeded + b.checkout_failed for b in base)
    if not nc or not nb:
        return ["   no checkouts recorded: no power calculation"]
    seconds = sum((r.end - r.start).total_seconds() for r in healthy)
    rate = sum(b.checkout_succeeded for b in base) / nb
    need = evidence_needed(rate, DETECT, ALPHA, POWER, nb / nc)
    have = nc / seconds
    lines = [
        f"   traffic: {have:.2f} candidate checkouts/s at {weight}% ({nb / nc:.1f} stable per candidate), success "
        f"rate {rate:.2%}",
        f"   a drop of {DETECT:g} at α {ALPHA} and power {POWER}: ≈{need.if_dropped} candidate checkouts to catch "
        f"(≈{need.if_healthy} to pass; fixed-horizon test {need.fixed}) = ≈{need.to_decide / have:.0f} s at this "
        f"traffic; within {window} s it needs {need.to_decide / window:.1f} candidate checkouts/s, "
        f"{need.to_decide / window / have:.1f}x the shop's traffic at this weight",
    ]
    return lines


def fixed_decision(rec: Recording, window: int) -> float | None:
    failed_in_a_row = 0
    for t in range(FIXED["interval_s"], window + 1, FIXED["interval_s"]):
        c = counts(
            rec, rec.version, rec.start + timedelta(seconds=t - FIXED["interval_s"]), rec.start + timedelta(seconds=t)
        )
        checkouts = c.checkout_succeeded + c.checkout_failed
        payments = c.payment_authorized + c.payment_declined
        bad = (
            (checkouts and c.checkout_succeeded / checkouts < FIXED["min_rate"])
            or (payments and c.payment_authorized / payments < FIXED["min_rate"])
            or (c.latencies_ms and percentile(c.latencies_ms, 0.95) > FIXED["max_p95_ms"])
        )
        failed_in_a_row = failed_in_a_row + 1 if bad else 0
        if failed_in_a_row >= FIXED["failed_checks"]:
            return float(t)
    return None


async def record(version: str, weight: int, window: int, pool, launcher: Launcher, target: LocalTarget) -> Recording:
    candidate = json.loads((CANDIDATES / f"shop-{version}.json").read_text())
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.deployer.bootstrap", "--force", str(CANDIDATES / "shop-v1.json")],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    inst = await launcher.start(
        "shop", "production", version, candidate["artifact"]["digest"], f"bench-{uuid.uuid4().hex[:8]}"
    )
    await target.split("shop", "production", {version: weight, "v1": 100 - weight})
    start = datetime.now(UTC)
    await asyncio.sleep(window)  # the canary runs; this is the measurement period, not synchronisation
    end = datetime.now(UTC)
    await target.split("shop", "production", {"v1": 100})
    await target.stop(inst)
    deadline = time.monotonic() + 15
    async with pool.acquire() as conn:
        while (  # noqa: ASYNC110 -- polls state outside this process; no event to await
            time.monotonic() < deadline
            and (await conn.fetchval("SELECT max(at) FROM business_events WHERE environment = 'production'") or start)
            < end
        ):
            await asyncio.sleep(0.2)
        events = await conn.fetch(
            "SELECT at, version, type, latency_ms, tenant FROM business_events WHERE environment = 'production'"
            " AND at >= $1 AND at < $2",
            start,
            end,
        )
        http = await conn.fetch(
            "SELECT at, version, status, ta_ms FROM http_samples WHERE environment ="
            " 'production' AND at >= $1 AND at < $2",
            start,
            end,
        )
    return Recording(version, start, end, [tuple(r) for r in events], [tuple(r) for r in http])


def summarise(name: str, decisions: dict[str, list[float | None]]) -> None:
    for version, label in SCENARIOS.items():
        ds = decisions.get(version, [])
        if not ds:
            continue
        hits = [d for d in ds if d is not None]
        rate = len(hits) / len(ds)
        what = "false-rollback rate" if version == "v2" else "detection rate"
        timing = (
            f"median {statistics.median(hits):5.1f} s  p95 {sorted(hits)[math.ceil(0.95 * len(hits)) - 1]:5.1f} s"
            if hits
            else "-"
        )
        print(f"   {name:<12} {version} {label:<38} {what:<20} {rate:6.0%} ({len(hits)}/{len(ds)})   {timing}")


async def main(runs: int, weight: int, window: int, versions: list[str]) -> None:
    settings = DeployerSettings()
    pool = await db.create_pool(settings.database_url)
    haproxy = HAProxy(settings.haproxy_admin)
    target = LocalTarget(pool, haproxy, settings.run_dir)
    launcher = Launcher(
        pool,
        haproxy,
        ArtifactStore(settings.artifact_store),
        settings.run_dir,
        settings.shop_env,
        user=settings.candidate_user,
        path=settings.candidate_path,
    )
    recordings = []
    try:
        for version in versions:
            for i in range(runs if version != "v3" else max(1, runs // 2)):
                rec = await record(version, weight, window, pool, launcher, target)
                print(
                    f"recorded {version} run {i + 1}: {len(rec.events)} business events, {len(rec.http)} requests",
                    flush=True,
                )
                recordings.append(rec)
    finally:
        await pool.close()
    empty = [f"{r.version} at {r.start:%H:%M:%S}" for r in recordings if not any(e[1] == r.version for e in r.events)]
    if empty:
        raise SystemExit(f"benchmark broken: no business event of the candidate in the canary of {', '.join(empty)}")
    ours = {v: [releasegate_decision(r, window) for r in recordings if r.version == v] for v in SCENARIOS}
    fixed = {v: [fixed_decision(r, window) for r in recordings if r.version == v] for v in SCENARIOS}
    print(f"\nDecision quality: canary at {weight}% for {window} s, both judges replayed on the same samples")
    print(
        f"   releasegate: guardrails + the stratified SPRT for a {DETECT:g} drop of a rate (power {POWER}, by "
        f"tenant), mSPRT with AUC 0.6 on request and checkout latency, α = {ALPHA}, "
        f"min {MIN_SAMPLES} samples, a look every {LOOK_S} s and one after each candidate event "
        f"(at most every {DATA_LOOK_GAP_S * 1000:.0f} ms; those only fail, on rate bounds and the sequential tests)"
    )
    print(
        f"   fixed:       every {FIXED['interval_s']} s rates >= {FIXED['min_rate']:.0%} and p95 <= "
        f"{FIXED['max_p95_ms']:.0f} ms, rollback after {FIXED['failed_checks']} failed checks in a row"
    )
    summarise("releasegate", ours)
    for version, outcomes in OUTCOMES.items():
        print(f"   releasegate {version}: " + ", ".join(f"{outcomes.count(o)} {o}" for o in sorted(set(outcomes))))
    summarise("fixed", fixed)
    print("\n".join(traffic_needed(recordings, window, weight)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4, help="releases per scenario (half as many for v3)")
    parser.add_argument("--weight", type=int, default=25, help="canary weight in percent")
    parser.add_argument("--window", type=int, default=60, help="seconds per canary")
    parser.add_argument("--versions", default=",".join(SCENARIOS), help="scenarios to run, e.g. v2,v4")
    args = parser.parse_args()
    chosen = [v for v in args.versions.split(",") if v]
    unknown = [v for v in chosen if v not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    asyncio.run(main(args.runs, args.weight, args.window, chosen))
