"""Where a coordinator hop's time goes, from the coordinator's own Prometheus metrics (releasegate_runtime.metrics):
snapshots of /metrics before and after a run, and the difference per stage.

A hop (a result record on Kafka → the next command record on Kafka) is, in order:
  record wait   the result's Kafka timestamp → the coordinator's handler starts (fetch, queueing in the process)
  handler       one record's handler: decode, verify, decide (inside its batch: the saga was read with the batch's)
  batch         the batch the record was decided in: every record's handler, then the batch's writes and one commit
  outbox wait   the command staged in the outbox → the relay picks it up (rest of the transaction, commit, NOTIFY)
  broker ack    the relay queues its batch → the broker acknowledged all of it (acks=all)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, tuple[tuple[str, str], ...]]
STAGES = (
    ("record wait", "releasegate_record_wait_seconds", "topic", "release.results."),
    ("handler", "releasegate_handler_duration_seconds", "topic", "release.results."),
    ("batch", "releasegate_batch_duration_seconds", "group", "releasegate-coordinator"),
    ("outbox wait", "releasegate_outbox_wait_seconds", "producer", "coordinator"),
    ("broker ack", "releasegate_outbox_ack_seconds", "producer", "coordinator"),
)
# The rollback service's part of decision to action: the compensation command's Kafka timestamp → its handler
# starts, and the handler (admission, ledger, traffic back to stable, the candidate retired, the outcome staged).
ROLLBACK_STAGES = (
    ("record wait", "releasegate_record_wait_seconds", "topic", "release.commands.rollback"),
    ("handler", "releasegate_handler_duration_seconds", "topic", "release.commands.rollback"),
)


@dataclass
class Snapshot:
    samples: dict[Key, float]

    def minus(self, before: Snapshot) -> Snapshot:
        return Snapshot({k: v - before.samples.get(k, 0.0) for k, v in self.samples.items()})


async def scrape(ports: Iterable[int]) -> Snapshot:
    """The sum over every process on `ports` (several coordinator instances add up)."""
    samples: dict[Key, float] = {}
    async with httpx.AsyncClient(timeout=5) as client:
        for port in ports:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    key = (s.name, tuple(sorted(s.labels.items())))
                    samples[key] = samples.get(key, 0.0) + s.value
    return Snapshot(samples)


@dataclass(frozen=True)
class Stage:
    name: str
    count: int
    mean_ms: float
    p50_ms: float  # upper bound of the bucket holding the median
    p99_ms: float

    def line(self) -> str:
        if not self.count:
            return f"   {self.name:<14}{'-':>8}"
        return (
            f"   {self.name:<14}{self.count:>8}{self.mean_ms:>11.2f}{_bound(self.p50_ms):>12}{_bound(self.p99_ms):>12}"
        )


def _bound(ms: float) -> str:
    return "> 4 s" if math.isinf(ms) else f"<= {ms:g}"


def stages(run: Snapshot, which: tuple[tuple[str, str, str, str], ...] = STAGES) -> list[Stage]:
    out = []
    for name, metric, label, prefix in which:
        total = count = 0.0
        buckets: dict[float, float] = {}
        for (sample, labels), value in run.samples.items():
            values = dict(labels)
            if not values.get(label, "").startswith(prefix):
                continue
            if sample == f"{metric}_sum":
                total += value
            elif sample == f"{metric}_count":
                count += value
            elif sample == f"{metric}_bucket":
                bound = float(values["le"])
                buckets[bound] = buckets.get(bound, 0.0) + value
        out.append(
            Stage(
                name,
                int(count),
                total / count * 1000 if count else 0.0,
                _quantile(buckets, count, 0.5),
                _quantile(buckets, count, 0.99),
            )
        )
    return out


def _quantile(cumulative: dict[float, float], count: float, q: float) -> float:
    for bound in sorted(cumulative):
        if count and cumulative[bound] >= q * count:
            return bound * 1000
    return math.inf


def table(
    run: Snapshot,
    which: tuple[tuple[str, str, str, str], ...] = STAGES,
    title: str = "Where the hop's time goes (the coordinator's metrics over the run",
) -> list[str]:
    rows = stages(run, which)
    lines = [
        f"   {title}; buckets bound the percentiles)",
        f"   {'stage':<14}{'n':>8}{'mean ms':>11}{'p50 ms':>12}{'p99 ms':>12}",
        *(r.line() for r in rows),
    ]
    # a record's handler runs inside its batch: with batches, the batch stands for it in the sum
    batched = any(r.name == "batch" and r.count for r in rows)
    total = sum(r.mean_ms for r in rows if r.count and not (batched and r.name == "handler"))
    lines.append(f"   {'sum of means':<14}{'':>8}{total:>11.2f}")
    records = run.samples.get(("releasegate_batch_records_sum", (("group", "releasegate-coordinator"),)), 0.0)
    batches = run.samples.get(("releasegate_batch_records_count", (("group", "releasegate-coordinator"),)), 0.0)
    if batched and batches:
        lines.append(f"   records per batch: {records / batches:.1f} on average ({int(batches)} batches)")
    return lines
