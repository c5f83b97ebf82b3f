"""The scale benchmark (`make bench-scale`, bench/scale.py) in a tiny configuration on the real local stack: one
release alone (the hop at rest), 5 releases at a fixed offered load (their commands answered after about 100 ms),
then 5 releases through 1 and then 2 coordinator instances, so it cannot silently rot. It fails loudly (non-zero exit, naming the releases) when a release does not reach a terminal state; this test
checks that it exits 0 and printed its table, and asserts no figure."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.mark.timeout(600)
def test_the_scale_benchmark_drives_releases_to_an_end_and_prints_its_table(tmp_path):
    # the benchmark starts coordinators of its own: a regular one in the same consumer group would take releases
    stopped = subprocess.run(["bash", "deploy/services.sh", "stop"], cwd=REPO, capture_output=True, text=True)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    plot = tmp_path / "scale.png"
    argv = [
        "-m",
        "bench.scale",
        "--releases",
        "5",
        "--instances",
        "1,2",
        "--at-rest",
        "1",
        "--paced",
        "50",
        "--round-trips",
        "20",
        "--commits",
        "20",
    ]
    out = subprocess.run(
        [sys.executable, *argv, "--plot", str(plot), "--stall", "60"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert out.returncode == 0, f"bench.scale exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert "steps/s" in out.stdout and "hop/base" in out.stdout, out.stdout
    assert "5/5" in out.stdout and "1*" in out.stdout and "at rest" in out.stdout, out.stdout
    assert "5~" in out.stdout and "fixed offered load" in out.stdout, out.stdout
    assert plot.is_file()
