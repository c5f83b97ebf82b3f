"""What the load gate concludes from a load run, without I/O: per step of the profile the throughput reached,
latency percentiles and errors; per version the capacity (the highest step it served within the SLO); and the
verdict, candidate against the stable version loaded the same way in the same run.

A version's capacity per instance is the throughput it reached at the highest step whose SLO held: a lower bound
(it may carry more than the highest step tried). A version that misses the SLO at every step gets, as an upper
bound, what it reached at the first step. The candidate fails when
- it misses the SLO under the profile itself (throughput short of the offered rate, p95 above the SLO, errors
  above the SLO's rate);
- its capacity is below `min_capacity_ratio` of the stable version's;
- the service's capacity at the expected peak, instances × capacity per instance, is below the expected peak.
When the stable version misses the SLO under the profile too, the environment could not carry the load (the
machine is busy, or the profile is wrong): inconclusive, never a failure of the candidate."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from contracts.peak import PeakReadiness
from releasegate_sdk import Measurement, Result
from releasegate_sdk.statistics import percentile

# Each journey's requests; the last one completes a journey (its throughput counts).
JOURNEY_REQUESTS = {"browse": ("products",), "checkout": ("cart", "checkout")}
WARMUP_SHARE = 0.2  # the first fifth of each step is warm-up (users starting, connections opening): not judged


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the run started
    kind: str  # products, cart, checkout
    ms: float
    ok: bool


@dataclass(frozen=True)
class Saturation:
    """The shared dependencies while a version was loaded: the staging database and the storefront's outbox."""

    db_active_max: int = 0  # sessions of the shop's database running a statement
    db_lock_waits_max: int = 0  # sessions waiting for a lock
    db_connections_max: int = 0
    db_commits_per_s: float | None = None
    outbox_backlog_max: int = 0  # business events committed but not yet on Kafka

    def describe(self) -> str:
        commits = f", {self.db_commits_per_s:.0f} commits/s" if self.db_commits_per_s is not None else ""
        return (
            f"db {self.db_active_max} active / {self.db_connections_max} connections, "
            f"{self.db_lock_waits_max} lock waits{commits}; outbox backlog {self.outbox_backlog_max}"
        )


@dataclass(frozen=True)
class StepStats:
    multiple: float
    offered_rps: float  # journeys per second asked
    reached_rps: float  # journeys per second completed successfully
    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None  # of the slowest kind of request
    p99_ms: float | None
    p95_by_kind: dict[str, float]

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0

    def misses(self, peak: PeakReadiness) -> list[str]:
        """Why this step missed the SLO (empty: it held)."""
        slo, why = peak.slo, []
        if self.reached_rps < slo.min_throughput_ratio * self.offered_rps:
            why.append(f"reached {self.reached_rps:.1f} of {self.offered_rps:.1f} journeys/s")
        if self.p95_ms is None or self.p95_ms > slo.p95_ms:
            worst = max(self.p95_by_kind, key=lambda k: self.p95_by_kind[k], default="-")
            shown = "no answers" if self.p95_ms is None else f"{self.p95_ms:.0f} ms ({worst})"
            why.append(f"p95 {shown} > {slo.p95_ms:g} ms")
        if self.error_rate > slo.error_rate:
            why.append(f"errors {self.error_rate:.1%} > {slo.error_rate:.1%}")
        return why

    def describe(self) -> str:
        p95 = "-" if self.p95_ms is None else f"{self.p95_ms:.0f}"
        p99 = "-" if self.p99_ms is None else f"{self.p99_ms:.0f}"
        return (
            f"x{self.multiple:g}: {self.reached_rps:.1f}/{self.offered_rps:.1f} journeys/s, p95 {p95} ms, "
            f"p99 {p99} ms, errors {self.error_rate:.1%}"
        )


@dataclass(frozen=True)
class VersionLoad:
    """One version under the profile: its steps and the saturation seen meanwhile."""

    version: str
    steps: list[StepStats]
    saturation: Saturation = field(default_factory=Saturation)

    def held(self, peak: PeakReadiness) -> list[StepStats]:
        return [s for s in self.steps if not s.misses(peak)]

    def capacity(self, peak: PeakReadiness) -> tuple[float, bool]:
        """(journeys per second per instance, whether it is within the SLO): the throughput at the highest step
        that held (a lower bound), else what the first step reached (an upper bound)."""
        held = self.held(peak)
        if held:
            return max(s.reached_rps for s in held), True
        return (self.steps[0].reached_rps if self.steps else 0.0), False


def step_stats(samples: Iterable[Sample], peak: PeakReadiness) -> list[StepStats]:
    """Each step's figures from the requests started in its judged part (after its warm-up)."""
    profile, found = peak.profile, list(samples)
    length = profile.step_seconds
    judged = length * (1 - WARMUP_SHARE)
    journeys = {kind: journey for journey, kinds in JOURNEY_REQUESTS.items() for kind in kinds[-1:]}
    stats = []
    for i, m in enumerate(profile.steps):
        start = i * length + length * WARMUP_SHARE
        mine = [s for s in found if start <= s.at < (i + 1) * length]
        by_kind: dict[str, list[float]] = {}
        for s in mine:
            if s.ok:
                by_kind.setdefault(s.kind, []).append(s.ms)
        p95s = {k: p for k, v in by_kind.items() if (p := percentile(v, 0.95)) is not None}
        all_ok = [s.ms for s in mine if s.ok]
        p99s = [p for v in by_kind.values() if (p := percentile(v, 0.99)) is not None]
        completed = sum(1 for s in mine if s.ok and s.kind in journeys and journeys[s.kind] in profile.journeys)
        stats.append(
            StepStats(
                multiple=m,
                offered_rps=profile.rps * m,
                reached_rps=completed / judged,
                requests=len(mine),
                errors=sum(1 for s in mine if not s.ok),
                p50_ms=percentile(all_ok, 0.5),
                p95_ms=max(p95s.values()) if p95s else None,
                p99_ms=max(p99s) if p99s else None,
                p95_by_kind=p95s,
            )
        )
    return stats


def judge(candidate: VersionLoad, stable: VersionLoad | None, peak: PeakReadiness, instances: int) -> Result:
    """The gate's verdict on the candidate, with the evidence as measurements."""
    at_profile = candidate.steps[0]
    base = stable.steps[0] if stable and stable.steps else None
    capacity, within = candidate.capacity(peak)
    stable_capacity = stable.capacity(peak)[0] if stable else None
    at_peak = instances * capacity
    ratio = capacity / stable_capacity if stable_capacity else None
    slo = peak.slo
    found = [
        Measurement(
            "load_throughput_rps",
            round(at_profile.reached_rps, 2),
            threshold=round(slo.min_throughput_ratio * at_profile.offered_rps, 2),
            unit="journeys/s",
            passed=at_profile.reached_rps >= slo.min_throughput_ratio * at_profile.offered_rps,
            baseline=_r(base.reached_rps if base else None),
            samples=at_profile.requests,
        ),
        Measurement(
            "load_latency_p95_ms",
            _r(at_profile.p95_ms),
            threshold=slo.p95_ms,
            unit="ms",
            passed=at_profile.p95_ms is not None and at_profile.p95_ms <= slo.p95_ms,
            baseline=_r(base.p95_ms if base else None),
            samples=at_profile.requests,
        ),
        Measurement(
            "load_latency_p99_ms",
            _r(at_profile.p99_ms),
            unit="ms",
            passed=True,
            baseline=_r(base.p99_ms if base else None),
            samples=at_profile.requests,
        ),
        Measurement(
            "load_error_rate",
            round(at_profile.error_rate, 4),
            threshold=slo.error_rate,
            unit="ratio",
            passed=at_profile.error_rate <= slo.error_rate,
            baseline=round(base.error_rate, 4) if base else None,
            samples=at_profile.requests,
        ),
        Measurement(
            "capacity_rps_per_instance",
            round(capacity, 2),
            threshold=None if stable_capacity is None else round(peak.min_capacity_ratio * stable_capacity, 2),
            unit="journeys/s",
            passed=ratio is None or ratio >= peak.min_capacity_ratio,
            baseline=_r(stable_capacity),
            samples=sum(s.requests for s in candidate.steps),
        ),
        Measurement(
            "capacity_at_peak_rps",
            round(at_peak, 2),
            threshold=peak.expected_peak_rps,
            unit="journeys/s",
            passed=at_peak >= peak.expected_peak_rps,
            baseline=None if stable_capacity is None else round(instances * stable_capacity, 2),
            samples=instances,
        ),
        *_saturation(candidate.saturation, stable.saturation if stable else None),
    ]
    steps = "; ".join(s.describe() for s in candidate.steps)
    kind = "at least" if within else "at most (no step within the SLO)"
    evidence = (
        f"{candidate.version}: {steps}; capacity {kind} {capacity:.1f} journeys/s per instance"
        + (f" vs {stable.version}'s {stable_capacity:.1f}" if stable and stable_capacity is not None else "")
        + f"; {instances} instance(s) x {capacity:.1f} = {at_peak:.1f} for an expected peak of "
        f"{peak.expected_peak_rps:g}; {candidate.saturation.describe()}"
    )
    if base is not None and stable is not None and stable.steps[0].misses(peak):
        return Result.inconclusive(
            f"the stable version {stable.version} missed the SLO under the profile too "
            f"({', '.join(stable.steps[0].misses(peak))}): staging could not carry the load; {evidence}",
            found,
        )
    failures = []
    if misses := at_profile.misses(peak):
        failures.append(f"misses the SLO under the profile ({', '.join(misses)})")
    if ratio is not None and ratio < peak.min_capacity_ratio:
        failures.append(
            f"lowers capacity to {ratio:.0%} of {stable.version if stable else 'stable'}'s "
            f"(at least {peak.min_capacity_ratio:.0%} required)"
        )
    if at_peak < peak.expected_peak_rps:
        failures.append(f"cannot carry the expected peak ({at_peak:.1f} < {peak.expected_peak_rps:g} journeys/s)")
    if failures:
        return Result.failed(f"not ready for peak: {'; '.join(failures)}; {evidence}", found)
    baseline = "" if stable is not None else " (no stable version serving in staging to compare with)"
    return Result.passed(f"ready for peak{baseline}: {evidence}", found)


def _saturation(candidate: Saturation, stable: Saturation | None) -> list[Measurement]:
    def row(name: str, attr: str) -> Measurement:
        value = getattr(candidate, attr)
        base = getattr(stable, attr) if stable else None
        return Measurement(name, _r(value), unit="", passed=True, baseline=_r(base))

    return [
        row("db_active_sessions_max", "db_active_max"),
        row("db_lock_waits_max", "db_lock_waits_max"),
        row("db_connections_max", "db_connections_max"),
        row("db_commits_per_s", "db_commits_per_s"),
        row("outbox_backlog_max", "outbox_backlog_max"),
    ]


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)
