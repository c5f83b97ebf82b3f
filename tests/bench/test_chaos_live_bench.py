"""The chaos soak of the real services (`make bench-chaos-live`, bench/chaos_live.py) in the size CI can afford:
two shop releases (v2 good, v3 bad) through every real service and team verifier as its own OS process while
SIGKILLs hit them at the moments they do their part (the deployer during a deploy step, the verifiers during a
window, the gatekeeper during a gate, the rollback service during a compensation, the coordinator anywhere), the
Kafka broker restarted during the first and PostgreSQL during the second. The soak checks its invariants itself
after each release (ended as intended, HAProxy and the workload exactly the stable version's, no orphan process,
no effect twice, a complete audit log, every service healthy) and exits 1 naming what broke; this test asserts
that exit and that every invariant was printed as holding."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.integration]
INVARIANTS = (
    "ended as intended",
    "no release paused",
    "every service healthy",
    "HAProxy serves the saga's version to every tenant",
    "workload exactly the stable version's",
    "no effect twice (audit)",
    "every compensation carried out",
    "no step failed by its deadline",
    "audit complete, in plan order",
)


@pytest.mark.timeout(1200)
def test_real_releases_end_as_intended_through_kills_and_restarts_with_the_workload_exact():
    # the soak starts every service of its own: regular ones in the same consumer groups would take its work
    for argv in (["bash", "deploy/services.sh", "stop"], ["bash", "deploy/proc.sh", "stop", "shopper-production",
                 "shopper-staging"]):  # fmt: skip
        stopped = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    out = subprocess.run(
        [sys.executable, "-m", "bench.chaos_live", "--releases", "2", "--kills", "6", "--timeout", "400"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1140,
    )
    shown = f"bench.chaos_live exited {out.returncode}:\n{out.stdout[-4000:]}\n{out.stderr[-3000:]}"
    assert out.returncode == 0, shown
    for invariant in INVARIANTS:
        assert f"ok   {invariant}" in out.stdout, shown
    assert "restarted: kafka, postgresql" in out.stdout, shown
    kills = re.search(r"SIGKILLs: (\d+)", out.stdout)
    assert kills and int(kills.group(1)) >= 6, shown
