"""Peak readiness end to end: the shop's catalog entry with its load gate asked for always (`peak_readiness.when:
always`, the profile shortened, a staging window long enough for it), every service and the peak-load verifier as
OS processes. At verify-staging the verifier runs the load profile with Locust against staging's stable instance
(v1) and then the candidate's. v12 ranks every product listing through one shared model session: each request is
only a little slower, but listings queue, and at twice the profile it serves about half of what v1 does. It is
blocked at staging with the evidence (throughput, p95/p99, errors, database and outbox saturation, capacity
against v1's and at the expected peak) in its timeline, and production never sees it. v2 passes the gate (the
release is then aborted: the canary that follows is what the other modules test)."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from contracts.peak import PeakReadiness
from releasegate_cli import client
from tests.conftest import REPO, wait_until
from tests.e2e.conftest import cli, operate, release, submit

pytestmark = [pytest.mark.slow, pytest.mark.integration]
LOAD_KPIS = {
    "load_throughput_rps",
    "load_latency_p95_ms",
    "load_latency_p99_ms",
    "load_error_rate",
    "capacity_rps_per_instance",
    "capacity_at_peak_rps",
    "db_active_sessions_max",
    "db_lock_waits_max",
    "outbox_backlog_max",
}


@pytest.fixture(scope="module")
def catalog_env(tmp_path_factory) -> dict[str, str]:
    """The shop's own catalog entry, with the load gate always on, its profile shortened to 8 s per version (two
    steps of 4 s: the test's time budget), and the staging window the gate then needs."""
    entry = yaml.safe_load((REPO / "catalog" / "shop.yaml").read_text())
    entry["peak_readiness"]["when"] = "always"
    entry["peak_readiness"]["profile"]["duration_seconds"] = 8
    entry["verification"]["staging_window_seconds"] = PeakReadiness.model_validate(entry["peak_readiness"]).gate_seconds
    folder = tmp_path_factory.mktemp("catalog-peak")
    (folder / "shop.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))
    return {"RG_CATALOG_DIR": str(folder)}


def load_gate(timeline: list[dict]) -> list[dict]:
    """The peak-load verifier's verdicts in a timeline."""
    return [t for t in timeline if (t.get("evidence") or {}).get("verifier") == "peak-load"]


class TestPeakReadiness:
    async def test_a_version_that_halves_capacity_is_blocked_at_staging_and_v2_passes(
        self, services, stable_v1, settings
    ):
        rid, timeline = await asyncio.to_thread(release, "v12", promoted=False)
        failed = next(t for t in timeline if t["step"] == "verify-staging" and " failed: " in t["reason"])
        assert failed["reason"].endswith("(verdict of peak-load)"), failed["reason"]
        assert "not ready for peak" in failed["reason"] and "lowers capacity to" in failed["reason"], failed["reason"]
        kpis = {k["name"]: k for k in failed["evidence"]["kpis"]}
        assert LOAD_KPIS <= set(kpis), sorted(kpis)
        capacity = kpis["capacity_rps_per_instance"]
        assert capacity["verdict"] == "fail" and capacity["candidate"] < capacity["baseline"], capacity
        assert kpis["db_active_sessions_max"]["candidate"] is not None
        # production never saw v12
        assert not any((t["step"] or "").endswith("production") and "passed" in t["reason"] for t in timeline)
        shown = cli("timeline", rid)
        assert shown.returncode == 0 and "capacity_rps_per_instance" in shown.stdout, shown.stdout[-2000:]

        rid = await asyncio.to_thread(submit, "v2")

        async def staging_verified() -> dict | None:
            timeline = await client.timeline(settings, rid)
            done = [t for t in timeline if t["step"] == "verify-staging" and " passed: " in t["reason"]]
            return (done or [t for t in timeline if " failed: " in t["reason"]] or [None])[0]

        passed = await wait_until(staging_verified, 180, f"{rid} to pass or fail verify-staging", every=0.5)
        assert " passed: " in passed["reason"], passed["reason"]
        assert passed["evidence"]["verdicts"]["peak-load"]["verdict"] == "pass"
        assert "ready for peak" in passed["evidence"]["verdicts"]["peak-load"]["reason"]
        (verdict,) = load_gate(await client.timeline(settings, rid))
        gated = {k["name"]: k for k in verdict["evidence"]["kpis"]}
        assert gated["capacity_rps_per_instance"]["verdict"] == gated["capacity_at_peak_rps"]["verdict"] == "pass"
        stopped = await asyncio.to_thread(operate, "abort", rid, "the load gate passed; the canary is tested elsewhere")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        await wait_until(lambda: client.all_ended(settings, [rid]), 120, f"{rid} to end", every=0.5)
