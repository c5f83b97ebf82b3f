"""`make bench-judge` in a tiny configuration (pure computation: no stack): it runs every scenario through every
judge, prints the table with the oracle's sample sizes and the power calculation, and writes its plot. It asserts
no figure: the rates are the benchmark's business."""

from __future__ import annotations

import pytest

from tests.support.benchmarks import run

pytestmark = [pytest.mark.slow]


def test_make_bench_judge_prints_every_judge_and_writes_the_plot(tmp_path):
    plot = tmp_path / "judge.png"
    out = run("-m", "bench.judge", "--runs", "8", "--horizon", "90", "--plot", str(plot), timeout=600).stdout
    for judge in ("releasegate", "pooled", "fixed", "kayenta"):
        assert f" {judge} " in out, out
    assert "-2 pts @ 100/s" in out and "mix only" in out and "latency x1.3" in out
    assert "Power calculation (the verifier's)" in out
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
