"""Peak readiness, as a service's catalog entry declares it (`peak_readiness:`): when its releases must pass the
load gate, the representative load profile staging gets, the SLOs under that load and the capacity the service
must keep. The catalog validates it (releasegate_platform/catalog.py) and the load gate reads it
(verifiers/peak_load), so both share this one model."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contracts.names import MAX_NAMES, NAME, TENANT

# What a load run needs besides the load itself, per version: finding the instances, starting the load tool, its
# last second of answers, reading the results (about 4 s on the local stack).
RUN_OVERHEAD_SECONDS = 6.0
MAX_PROFILE_RPS = 500.0  # per journey: the load tool shares the machine with what it measures
MAX_DURATION_SECONDS = 600.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PeakWindow(_Model):
    """A peak-preparation period (a promotion, a seasonal event): releases inside it get the load gate. `start`
    and `end` are wall-clock times in the IANA `timezone`."""

    name: Annotated[str, Field(pattern=NAME, max_length=63)]
    start: datetime = Field(description="Local time in `timezone`, e.g. 2026-11-20T00:00")
    end: datetime
    timezone: str = Field(default="UTC", description="IANA time zone, e.g. America/New_York")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {zone[:64]!r}") from None
        return zone

    @model_validator(mode="after")
    def _local_and_ordered(self) -> PeakWindow:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError(f"window {self.name!r}: give local times without an offset; the zone is `timezone`")
        if self.end <= self.start:
            raise ValueError(f"window {self.name!r} ends before it starts")
        return self

    def contains(self, at: datetime) -> bool:
        zone = ZoneInfo(self.timezone)
        return self.start.replace(tzinfo=zone) <= at < self.end.replace(tzinfo=zone)


class LoadProfile(_Model):
    """The representative load one instance is given: journeys per second, spread over the tenants by weight. The
    load runs `duration_seconds` per version, in equal parts at each multiple of `steps` (1 = the profile itself;
    the higher ones probe the headroom the capacity is measured from)."""

    duration_seconds: float = Field(gt=0, le=MAX_DURATION_SECONDS, description="Per version, all steps together")
    # the journeys the load tool drives (verifiers/peak_load/locustfile.py): a browse is one GET /products, a
    # checkout is POST /cart then POST /checkout with an approved test card
    journeys: dict[Literal["browse", "checkout"], Annotated[float, Field(ge=0, le=MAX_PROFILE_RPS)]] = Field(
        min_length=1, description="Journeys per second per instance, e.g. {browse: 12, checkout: 4}"
    )
    tenants: dict[Annotated[str, Field(pattern=TENANT, max_length=32)], Annotated[float, Field(gt=0)]] = Field(
        min_length=1, max_length=MAX_NAMES, description="Tenant → weight of its share of the requests"
    )
    steps: list[Annotated[float, Field(gt=0, le=10)]] = Field(
        default=[1.0], min_length=1, max_length=5, description="Load multiples, rising, the first usually 1"
    )

    @field_validator("journeys")
    @classmethod
    def _some_load(cls, journeys: dict[str, float]) -> dict[str, float]:
        if sum(journeys.values()) <= 0:
            raise ValueError("the profile's journeys add up to no load at all")
        return journeys

    @field_validator("steps")
    @classmethod
    def _rising(cls, steps: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"steps must rise: {steps}")
        return steps

    @property
    def rps(self) -> float:
        """Journeys per second at the profile itself (step multiple 1)."""
        return sum(self.journeys.values())

    @property
    def step_seconds(self) -> float:
        return self.duration_seconds / len(self.steps)


class LoadSlo(_Model):
    p95_ms: float = Field(gt=0, description="Highest acceptable p95 latency of every request kind under load")
    error_rate: float = Field(ge=0, lt=1, description="Highest acceptable share of failed requests under load")
    min_throughput_ratio: float = Field(
        default=0.95, gt=0, le=1, description="Share of the offered journeys per second that must be served"
    )


class PeakReadiness(_Model):
    """`when: always` gates every release; `peak_preparation` only those in one of `windows` (none: never)."""

    when: Literal["always", "peak_preparation"] = "peak_preparation"
    windows: list[PeakWindow] = Field(default=[], max_length=MAX_NAMES)
    profile: LoadProfile
    slo: LoadSlo
    expected_peak_rps: float = Field(gt=0, description="Journeys per second the whole service must serve at peak")
    min_capacity_ratio: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="The candidate's measured capacity must be at least this share of the stable version's",
    )

    def active_window(self, at: datetime) -> PeakWindow | None:
        return next((w for w in self.windows if w.contains(at)), None)

    def applies(self, at: datetime) -> bool:
        return self.when == "always" or self.active_window(at) is not None

    @property
    def gate_seconds(self) -> float:
        """How long the gate needs: the profile on the stable version, then on the candidate."""
        return 2 * (self.profile.duration_seconds + RUN_OVERHEAD_SECONDS)

    @property
    def can_run(self) -> bool:
        """Whether the gate can ever run: `always`, or some window declared."""
        return self.when == "always" or bool(self.windows)
