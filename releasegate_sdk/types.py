"""What a check is given and what it answers: the request, its measurements and its result."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import httpx

from contracts.events import KpiResult, KpiThreshold, Verdict, VerificationRequested


class TransientError(Exception):
    """Raise it when a check cannot answer *yet* (a dependency is down or slow): the SDK retries the check with
    backoff until the verdict's deadline, then publishes an inconclusive verdict naming the error."""


# Timeouts and refused or reset connections are retried like a TransientError: they usually pass.
RETRYABLE: tuple[type[BaseException], ...] = (
    TransientError,
    httpx.TimeoutException,
    httpx.NetworkError,
    TimeoutError,
    ConnectionError,
)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


@dataclass(frozen=True)
class VerificationRequest:
    """One release step asks: is the candidate good in this environment over this window?

    `window_start` is when the verifier received the request, `window_end` is `window_seconds` later, and the
    verdict is due by `deadline`. `is_final_look` is true from the window's end on; before it (verifiers with
    `looks_every`) a passed or failed result ends the window early. `woken_by_data` is true for a look brought
    forward by new data (`Verifier.new_data`) rather than taken on the tick: a check whose point checks must not
    be repeated that often can leave them to the tick looks. `raw` is the full command."""

    release_id: str
    service: str
    environment: str
    step_id: str
    candidate_version: str
    stable_version: str | None
    window_start: datetime
    window_end: datetime
    deadline: datetime
    tenants: tuple[str, ...] | None
    thresholds: Mapping[str, KpiThreshold]
    is_final_look: bool
    raw: VerificationRequested
    woken_by_data: bool = False

    @classmethod
    def of(
        cls,
        raw: VerificationRequested,
        window_start: datetime,
        window_end: datetime,
        deadline: datetime,
        is_final_look: bool,
        woken_by_data: bool = False,
    ) -> VerificationRequest:
        return cls(
            release_id=raw.release_id,
            service=raw.service,
            environment=raw.environment,
            step_id=raw.step_id,
            candidate_version=raw.candidate_version,
            stable_version=raw.stable_version,
            window_start=window_start,
            window_end=window_end,
            deadline=deadline,
            tenants=tuple(raw.tenants) if raw.tenants is not None else None,
            thresholds=raw.thresholds,
            is_final_look=is_final_look,
            raw=raw,
            woken_by_data=woken_by_data,
        )


@dataclass(frozen=True)
class Measurement:
    """One figure behind a verdict, e.g. `Measurement("erp_export_lag_s", 42.0, threshold=60, unit="s")`.

    `passed` says whether this figure alone is acceptable; left out, it takes the result's verdict (and
    inconclusive when `value` is None). `baseline` and `samples` are reported when known."""

    name: str
    value: float | None
    threshold: float | None = None
    unit: str = ""
    passed: bool | None = None
    baseline: float | None = None
    samples: int | None = None

    def to_kpi(self, verdict: Verdict) -> KpiResult:
        if self.passed is not None:
            verdict = Verdict.PASS if self.passed else Verdict.FAIL
        elif self.value is None:
            verdict = Verdict.INCONCLUSIVE
        unit = f" {self.unit}" if self.unit else ""
        rule = f"threshold {self.threshold:g}{unit}" if self.threshold is not None else f"reported{unit}"
        samples = self.samples if self.samples is not None else int(self.value is not None)
        return KpiResult(
            name=self.name,
            candidate=self.value,
            baseline=self.baseline,
            candidate_samples=samples,
            baseline_samples=0,
            verdict=verdict,
            rule=rule,
        )


@dataclass(frozen=True)
class Result:
    """A check's answer: `Result.passed(reason)`, `.failed`, `.inconclusive`, or `.pending` (no answer yet:
    look again until the deadline, then inconclusive with this reason). Measurements may be `Measurement`s or,
    for full control, `contracts.events.KpiResult`s."""

    verdict: Verdict | None
    reason: str
    measurements: tuple[Measurement | KpiResult, ...] = ()

    @classmethod
    def passed(cls, reason: str, measurements: Iterable[Measurement | KpiResult] = ()) -> Result:
        return cls(Verdict.PASS, reason, tuple(measurements))

    @classmethod
    def failed(cls, reason: str, measurements: Iterable[Measurement | KpiResult] = ()) -> Result:
        return cls(Verdict.FAIL, reason, tuple(measurements))

    @classmethod
    def inconclusive(cls, reason: str, measurements: Iterable[Measurement | KpiResult] = ()) -> Result:
        return cls(Verdict.INCONCLUSIVE, reason, tuple(measurements))

    @classmethod
    def pending(cls, reason: str, measurements: Iterable[Measurement | KpiResult] = ()) -> Result:
        return cls(None, reason, tuple(measurements))

    @property
    def decisive(self) -> bool:
        """Passed or failed: ends the window at any look."""
        return self.verdict in (Verdict.PASS, Verdict.FAIL)

    def kpis(self) -> list[KpiResult]:
        verdict = self.verdict or Verdict.INCONCLUSIVE
        return [m if isinstance(m, KpiResult) else m.to_kpi(verdict) for m in self.measurements]
