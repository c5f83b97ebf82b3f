"""Decision to action, for `make bench`: from the business event that made the verifier's judge cross its
boundary to the candidate taking no traffic in HAProxy, and the stages in between.

The crossing sample is found by replaying the verifier's own judge (services.verifier.domain.judge) over the
window's business events, one candidate event at a time, with the thresholds of the verify command: the first
candidate event after which the judge says `fail`. The stages are read from Kafka record timestamps:
  crossing sample → failing verdict on Kafka    ingest of the shop's events, the verifier's look, its outbox;
                                                 split at the moment the verifier stored the sample
                                                 (business_events.received_at): the shop's relay, Kafka and the
                                                 ingest before it, the look, the judge and the verifier's outbox after
  verdict → compensation command on Kafka       the coordinator's hop
  compensation command → weight 0 in HAProxy    the rollback service (its consumer, HAProxy's runtime API)
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from bench.kafka_since import read_since
from contracts import topics
from contracts.cloudevents import decode
from contracts.events import RollbackRequested, Verdict, VerificationFinished, VerificationRequested
from releasegate_runtime.settings import ServiceSettings
from services.verifier.adapters.store import KpiStore
from services.verifier.domain import judge

VERDICTS_PREFIX = topics.results_for("verifier-")
CANDIDATE_EVENTS = (
    "SELECT at, received_at FROM business_events WHERE environment = $1 AND version = $2 AND at >= $3 AND at <= $4"
    " AND ($5::text[] IS NULL OR tenant = ANY($5::text[])) ORDER BY at"
)


@dataclass
class Records:
    """What one release put on Kafka: its verify commands (by step), its verifier's failing verdict, its first
    compensation command, each with the record's timestamp (ms)."""

    requests: dict[str, VerificationRequested]
    failed: tuple[int, VerificationFinished] | None = None
    compensation_ms: int | None = None


async def read_records(settings: ServiceSettings, release_ids: set[str], since_ms: int) -> dict[str, Records]:
    """The verify commands, verdicts (every verifier's own result topic) and compensation commands of
    `release_ids` since `since_ms`."""
    found = {rid: Records({}) for rid in release_ids}
    wanted = {topics.VERIFY_COMMANDS, topics.ROLLBACK_COMMANDS}
    await read_since(
        settings, lambda t: t in wanted or t.startswith(VERDICTS_PREFIX), since_ms, lambda r: _note(found, r)
    )
    return found


def _note(found: dict[str, Records], record) -> None:
    try:
        env = decode(record.headers, record.value)
    except ValueError:
        return
    mine = found.get(env.subject or "")
    if mine is None:
        return
    data = env.data
    if isinstance(data, VerificationRequested):
        mine.requests[data.step_id] = data
    elif isinstance(data, VerificationFinished) and data.verdict is Verdict.FAIL:
        # the earliest failing verdict of any verifier: the topics are read one after another, not in time order,
        # and a team verifier's failing verdict may come long after the one that triggered the compensation
        if mine.failed is None or record.timestamp < mine.failed[0]:
            mine.failed = (record.timestamp, data)
    elif isinstance(data, RollbackRequested) and mine.compensation_ms is None:
        mine.compensation_ms = record.timestamp


async def crossing_at(
    pool: asyncpg.Pool, request: VerificationRequested, verdict: VerificationFinished
) -> tuple[datetime, datetime] | None:
    """The candidate business event after which the verifier's judge first fails the window: when it happened and
    when the verifier stored it (None: the judge never fails on business events alone, e.g. a journey decided)."""
    store = KpiStore(pool)
    tenants = list(request.tenants) if request.tenants else None
    start, end = verdict.window_start, verdict.window_end
    async with pool.acquire() as conn:
        moments = [
            (r["at"], r["received_at"])
            for r in await conn.fetch(
                CANDIDATE_EVENTS, request.environment, request.candidate_version, start, end, tenants
            )
        ]
    for at, received_at in moments:
        upto = at + timedelta(microseconds=1)
        candidate = await store.counts(request.environment, request.candidate_version, start, upto, tenants)
        baseline = await store.counts(request.environment, request.stable_version, start, upto)
        decided, _, _ = judge(
            request.thresholds,
            candidate,
            baseline,
            request.min_samples,
            final=False,
            alpha=request.false_rollback_bound,
        )
        if decided is Verdict.FAIL:
            return at, received_at
    return None


@dataclass(frozen=True)
class Path:
    """Milliseconds of each stage of one release's decision to action (None: not measured)."""

    release_id: str
    to_verdict: float | None
    hop: float | None
    to_weight_zero: float | None
    to_stored: float | None = None  # the part of to_verdict until the verifier stored the crossing sample

    @property
    def total(self) -> float | None:
        parts = (self.to_verdict, self.hop, self.to_weight_zero)
        return None if any(p is None for p in parts) else sum(parts)  # type: ignore[arg-type]


async def paths(settings: ServiceSettings, pool: asyncpg.Pool, zero_at: dict[str, float], since_ms: int) -> list[Path]:
    """`zero_at`: release id → wall time (s) its candidate was seen taking no traffic in HAProxy."""
    records = await read_records(settings, set(zero_at), since_ms)
    out = []
    for rid, rec in records.items():
        if rec.failed is None:
            out.append(Path(rid, None, None, None))
            continue
        verdict_ms, verdict = rec.failed
        request = rec.requests.get(verdict.step_id)
        crossed = await crossing_at(pool, request, verdict) if request is not None else None
        to_verdict = verdict_ms - crossed[0].timestamp() * 1000 if crossed else None
        to_stored = (crossed[1] - crossed[0]).total_seconds() * 1000 if crossed else None
        hop = rec.compensation_ms - verdict_ms if rec.compensation_ms is not None else None
        to_zero = zero_at[rid] * 1000 - rec.compensation_ms if rec.compensation_ms is not None else None
        out.append(Path(rid, to_verdict, hop, to_zero, to_stored))
    return out


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def table(found: list[Path]) -> list[str]:
    def cell(values: list[float]) -> str:
        if not values:
            return f"{'-':>12}{'-':>10}"
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        return f"{statistics.median(values):>12.0f}{p99:>10.0f}"

    rows = [
        ("crossing sample -> verdict on Kafka", [p.to_verdict for p in found]),
        ("  of which: sample -> stored by verifier", [p.to_stored for p in found]),
        ("  stored -> verdict on Kafka", [_minus(p.to_verdict, p.to_stored) for p in found]),
        ("verdict -> compensation command", [p.hop for p in found]),
        ("compensation command -> weight 0", [p.to_weight_zero for p in found]),
        ("decision to action", [p.total for p in found]),
    ]
    lines = [f"   {'':<40}{'median ms':>12}{'p99 ms':>10}{'n':>5}"]
    for label, values in rows:
        measured = [v for v in values if v is not None]
        lines.append(f"   {label:<40}{cell(measured)}{len(measured):>5}")
    lines.append("   each release (ms): crossing -> verdict, verdict -> command, command -> weight 0, total")
    for p in found:
        parts = (p.to_verdict, p.hop, p.to_weight_zero, p.total)
        lines.append(f"     {p.release_id:<24}" + "".join(f"{'-' if v is None else f'{v:.0f}':>9}" for v in parts))
    return lines
