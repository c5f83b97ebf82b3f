"""Every benchmark behind a README figure, run in a tiny configuration on the real local stack so that none can
silently rot again (as `make bench` did when approvals and restore drills became required). A benchmark fails
loudly (non-zero exit) when a run does not reach the state it measures; these tests check that it exits 0 and
printed its table. They assert no figure: timings are the benchmarks' business, not the tests'."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.support.benchmarks import run

pytestmark = [pytest.mark.slow, pytest.mark.integration]
BASELINE = REPO / "examples" / "candidates" / "shop-v1.json"


@pytest.fixture(scope="module")
def up():
    """What `make up` starts beyond the stack: the services (deploy/services.sh), shop v1, the synthetic shoppers."""
    proc = REPO / "deploy" / "proc.sh"
    started = subprocess.run(["bash", "deploy/services.sh", "start"], cwd=REPO, capture_output=True, text=True)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        run("-m", "services.deployer.bootstrap", str(BASELINE), timeout=120)
        for name, target, rate, tenants, cards in (
            ("shopper-production", "http://127.0.0.1:18080", "16", "acme,globex,initech", "mixed"),
            ("shopper-staging", "http://127.0.0.1:18081", "6", "qa", "visa"),
        ):
            subprocess.run(
                ["bash", str(proc), "start", name, "--", sys.executable, "-m", "shop.shopper", "--target", target,
                 "--rate", rate, "--tenants", tenants, "--cards", cards, "--duration", "0"],
                cwd=REPO, check=True, capture_output=True,
            )  # fmt: skip
        yield
    finally:
        subprocess.run(["bash", str(proc), "stop", "shopper-production", "shopper-staging"], cwd=REPO)
        subprocess.run(["bash", "deploy/services.sh", "stop"], cwd=REPO, capture_output=True)


def test_make_bench_rolls_back_its_release_and_prints_both_tables(up):
    out = run("-m", "bench.rollback_latency", "--releases", "1", "--round-trips", "20", timeout=600).stdout
    assert "rolled_back" in out and "median" in out
    assert "coordinator hop" in out and "bare aiokafka round trip" in out
    assert "Where the hop's time goes" in out
    _, rollback_part = out.split("The rollback service's part", 1)
    assert re.search(r"\n\s+handler\s+[1-9]", rollback_part), out  # its metrics counted the compensation
    assert re.search(r"decision to action\s+\d+\s+\d+\s+1\b", out), out  # measured for the release


def test_make_bench_quality_records_every_scenario_and_prints_both_judges(up):
    out = run("-m", "bench.decision_quality", "--runs", "1", "--window", "6", timeout=600).stdout
    assert "releasegate" in out and "fixed" in out
    assert "candidate checkouts/s at 25%" in out and "a drop of 0.02" in out, out  # the power calculation
    for version in ("v2", "v3", "v4", "v5"):
        assert f"recorded {version} run 1" in out


def test_make_bench_auth_prints_the_hop_with_and_without_step_grants():
    out = run("-m", "bench.auth_overhead", "--round-trips", "20", timeout=300).stdout
    assert "message authentication adds" in out and "the ACL check adds" in out
