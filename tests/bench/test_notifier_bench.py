"""The notifier intake benchmark (`make bench-notifier`, bench/notifier_intake.py) in a tiny configuration on the
real local stack, so it cannot silently rot: it fails loudly (non-zero exit) when a round does not record all its
events; this test checks that it exits 0 and printed both rates, and asserts no figure."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO
from tests.support.benchmarks import run

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.mark.timeout(600)
def test_the_notifier_benchmark_records_every_event_both_ways_and_prints_the_ratio():
    # the benchmark starts a notifier of its own: the regular one in the same consumer group would take events
    stopped = subprocess.run(["bash", "deploy/services.sh", "stop"], cwd=REPO, capture_output=True, text=True)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    out = run("-m", "bench.notifier_intake", "--events", "90", "--rounds", "1", "--timeout", "240", timeout=540).stdout
    assert "RG_CONSUMER_BATCH=1:" in out and "RG_CONSUMER_BATCH=100:" in out and "ratio:" in out, out
