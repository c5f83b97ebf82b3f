"""The hop breakdown the benchmarks print: stage figures from the difference of two /metrics snapshots."""

from __future__ import annotations

from bench.breakdown import Snapshot, stages
from releasegate_runtime import metrics


def snapshot() -> Snapshot:
    samples = {}
    for family in metrics.REGISTRY.collect():
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return Snapshot(samples)


def test_each_stage_counts_only_what_happened_between_the_snapshots():
    metrics.outbox_waited("coordinator", [0.003])
    before = snapshot()
    metrics.outbox_waited("coordinator", [0.0015, 0.0015, 0.030])
    metrics.outbox_waited("deployer", [5.0])  # another producer's relay: not the coordinator's hop
    metrics.outbox_acknowledged("coordinator", 0.002)
    by_name = {s.name: s for s in stages(snapshot().minus(before))}
    wait = by_name["outbox wait"]
    assert wait.count == 3
    assert abs(wait.mean_ms - 11.0) < 1e-6
    assert wait.p50_ms == 2.0 and wait.p99_ms == 32.0  # the buckets holding the median and the 99th
    assert by_name["broker ack"].count == 1 and by_name["record wait"].count == 0
