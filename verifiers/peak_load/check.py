"""peak-load: the load gate at staging. Before a release in one of the catalog's peak-preparation windows (or always,
when the service's `peak_readiness` says so), the staging instances of the stable version and of the candidate get
the catalog's representative load profile, one after the other, with Locust: the candidate must hold the SLOs under
it, keep the stable version's capacity, and carry the expected peak with the catalog's instance count
(`judge.py`). Outside the windows the check passes at once, saying so.

Stable is measured in the same run, on the same machine and database, rather than compared with a figure recorded
at an earlier release: on a shared machine, minutes apart, the load around the measurement moves capacity more
than most regressions do. Staging keeps the stable version's instance serving (at weight 0) until the release
finalizes, so both are reached directly, by the endpoints the deployer publishes (`release.environments`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import yaml
from pydantic import ValidationError

from contracts.events import EnvironmentState
from contracts.peak import PeakReadiness
from releasegate_sdk import Result, TransientError, VerificationRequest, Verifier
from verifiers.peak_load import load
from verifiers.peak_load.judge import VersionLoad, judge
from verifiers.shop_data import ShopSettings

verifier = Verifier(
    name="peak-load",
    version="1.0.0",
    services=["shop"],
    environments=["staging"],
    kpis=[
        "load_throughput_rps",
        "load_latency_p95_ms",
        "load_latency_p99_ms",
        "load_error_rate",
        "capacity_rps_per_instance",
        "capacity_at_peak_rps",
        "db_active_sessions_max",
        "db_lock_waits_max",
        "outbox_backlog_max",
    ],
    # the load starts at the first look, a second into the window, and its verdict ends the window; the catalog
    # makes the staging window long enough for it (releasegate_platform/catalog.py)
    looks_every=1.0,
)
# A run's verdict, kept for the looks after the one that ran the load (a look that is not final and not decisive
# would otherwise run it again): by release, step and window.
_verdicts: dict[tuple[str, str, datetime], Result] = {}


def peak_readiness(settings: ShopSettings, service: str) -> tuple[PeakReadiness | None, int]:
    """The service's `peak_readiness` and its production instance count (`rollout.instances`) from the catalog."""
    path = settings.catalog_dir / f"{service}.yaml"
    try:
        entry: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"catalog entry {path.name}: {exc}") from None
    raw, instances = entry.get("peak_readiness"), int((entry.get("rollout") or {}).get("instances", 1))
    try:
        return (None if raw is None else PeakReadiness.model_validate(raw)), instances
    except ValidationError as exc:
        raise ValueError(f"catalog entry {path.name}: peak_readiness is invalid: {exc}") from None


def endpoint(state: EnvironmentState, version: str | None) -> str | None:
    """The first serving instance of `version` in the environment (the profile is per instance)."""
    found = next((s for s in state.serving if s.version == version and s.endpoints), None)
    return found.endpoints[0] if found else None


async def measure(
    req: VerificationRequest, peak: PeakReadiness, settings: ShopSettings
) -> tuple[VersionLoad, VersionLoad | None]:
    """The profile on the staging instance of the stable version (when one still serves), then of the candidate."""
    state = await load.environment_state(settings, req.service, req.environment)
    candidate_url = endpoint(state, req.candidate_version) if state else None
    if state is None or candidate_url is None:
        raise TransientError(f"no serving {req.candidate_version} instance in {req.environment} yet")
    stable_version = state.stable_version if state.stable_version != req.candidate_version else None
    stable_url = endpoint(state, stable_version)
    database = settings.shop_database(req.environment)
    stable = None
    if stable_url is not None and stable_version is not None:
        stable = await load.run_profile(stable_url, stable_version, peak, database)
    return await load.run_profile(candidate_url, req.candidate_version, peak, database), stable


@verifier.check
async def check(req: VerificationRequest) -> Result:
    key = (req.release_id, req.step_id, req.window_start)
    if key in _verdicts:
        return _verdicts[key] if req.is_final_look or _verdicts[key].decisive else Result.pending("judged")
    settings = ShopSettings()
    settings = settings.model_copy(update={"principal": settings.principal or verifier.service_name})
    peak, instances = peak_readiness(settings, req.service)
    now = datetime.now(UTC)
    if peak is None:
        return Result.passed(f"{req.service} declares no peak_readiness: no load gate")
    if not peak.applies(now):
        return Result.passed(
            f"not in a peak-preparation window ({len(peak.windows)} declared): no load gate for this release"
        )
    window = peak.active_window(now)
    try:
        candidate, stable = await measure(req, peak, settings)
    except load.LoadToolError as exc:
        result = Result.inconclusive(f"the load did not run: {exc}")
    else:
        result = judge(candidate, stable, peak, instances)
        why = f"peak-preparation window {window.name}" if window else "the service asks for the load gate always"
        result = Result(result.verdict, f"{why}: {result.reason}", result.measurements)
    _verdicts.clear()  # one release's step at a time matters; older verdicts were published already
    _verdicts[key] = result
    return result
