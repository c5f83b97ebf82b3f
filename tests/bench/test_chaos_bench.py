"""The chaos soak (`make bench-chaos`, bench/chaos.py) in the size CI can afford, on the real local stack: 20
releases of mixed plans and outcomes through two coordinators while at least 10 SIGKILLs hit them and the
workload, with a Kafka broker restart and a PostgreSQL restart. The soak checks its invariants itself (every
release ended as intended, no step requested or done twice, no command written twice, a complete audit log) and
exits 1 naming what broke; this test asserts that exit and that every invariant was printed as holding."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.integration]
INVARIANTS = (
    "ended, or paused with its reason",
    "ended as intended",
    "no effect twice (audit)",
    "no command written twice (outbox)",
    "audit complete, in plan order",
)


@pytest.mark.timeout(900)
def test_releases_end_as_intended_through_kills_and_restarts_with_every_effect_once():
    # the soak starts coordinators of its own: a regular one in the same consumer group would take its releases
    stopped = subprocess.run(["bash", "deploy/services.sh", "stop"], cwd=REPO, capture_output=True, text=True)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    out = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--releases", "20", "--kills", "10", "--wave", "5", "--stall", "120"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=840,
    )
    shown = f"bench.chaos exited {out.returncode}:\n{out.stdout[-4000:]}\n{out.stderr[-3000:]}"
    assert out.returncode == 0, shown
    for invariant in INVARIANTS:
        assert f"ok   {invariant}" in out.stdout, shown
    assert "restarted: kafka, postgresql" in out.stdout, shown
