"""The chaos soaks in the size CI can afford, on the real local stack. Each soak checks its invariants itself and
exits 1 naming what broke; these tests assert that exit, that every invariant was printed as holding, and that the
faults were injected.

- `make bench-chaos` (bench/chaos.py), the control plane: 20 releases of mixed plans and outcomes through two
  coordinators while at least 10 SIGKILLs hit them and the workload, with a Kafka broker restart and a PostgreSQL
  restart (every release ended as intended, no step requested or done twice, no command written twice, a complete
  audit log).
- `make bench-chaos-live` (bench/chaos_live.py), the real services: two shop releases (v2 good, v3 bad) through
  every service and team verifier as its own OS process while SIGKILLs hit them at the moments they do their part
  (the deployer during a deploy step, the verifiers during a window, the gatekeeper during a gate, the rollback
  service during a compensation, the coordinator anywhere), the broker restarted during the first and PostgreSQL
  during the second (ended as intended, HAProxy and the workload exactly the stable version's, no orphan process,
  no effect twice, a complete audit log, every service healthy)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench import chaos_live
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.integration]
CONTROL_PLANE_INVARIANTS = (
    "ended, or paused with its reason",
    "ended as intended",
    "no effect twice (audit)",
    "no command written twice (outbox)",
    "audit complete, in plan order",
)


def soak(module: str, *args: str, invariants: tuple[str, ...], kills: int, timeout: float) -> None:
    # a soak starts processes of its own: regular ones in the same consumer groups would take its work
    for argv in (["bash", "deploy/services.sh", "stop"], ["bash", "deploy/proc.sh", "stop", "shopper-production",
                 "shopper-staging"]):  # fmt: skip
        stopped = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    out = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    shown = f"{module} exited {out.returncode}:\n{out.stdout[-4000:]}\n{out.stderr[-3000:]}"
    assert out.returncode == 0, shown
    for invariant in invariants:
        assert f"ok   {invariant}" in out.stdout, shown
    assert "restarted: kafka, postgresql" in out.stdout, shown
    sent = re.search(r"SIGKILLs: (\d+)", out.stdout)
    assert sent and int(sent.group(1)) >= kills, shown


@pytest.mark.timeout(900)
def test_releases_end_as_intended_through_kills_and_restarts_with_every_effect_once():
    soak(
        "bench.chaos", "--releases", "20", "--kills", "10", "--wave", "5", "--stall", "120",
        invariants=CONTROL_PLANE_INVARIANTS, kills=10, timeout=840,
    )  # fmt: skip


@pytest.mark.timeout(1200)
def test_real_releases_end_as_intended_through_kills_and_restarts_with_the_workload_exact():
    soak(
        "bench.chaos_live", "--releases", "2", "--kills", "6", "--timeout", "400",
        invariants=chaos_live.INVARIANTS, kills=4, timeout=1140,  # a moment may pass unhit: most of the 6 asked
    )  # fmt: skip
