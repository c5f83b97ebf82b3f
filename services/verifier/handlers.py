"""The core verifier's check: customer-traffic KPIs (shop business events, HAProxy request log) judged with
sequential tests against stable, Prometheus KPIs, and synthetic journeys against the instances the deployer
published (`release.environments`). The SDK does the rest: requests, looks, deadlines, the verdict. Its ports
(`ports.py`) are wired by `bootstrap.py`."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from contracts.cloudevents import Envelope
from contracts.events import KpiResult, Verdict
from releasegate_platform import environments
from releasegate_runtime import db
from releasegate_sdk import Result, TransientError, VerificationRequest
from services.verifier import synthetic
from services.verifier.domain import judge, merge_verdicts
from services.verifier.ports import KpiStorePort, PrometheusPort

JOURNEY_RUNS_KEPT = 256
log = structlog.get_logger()


def utcnow() -> datetime:
    return datetime.now(UTC)


class BusinessKpis:
    """`check` for the SDK. A passed or failed judgement is decisive at any look; anything else is pending
    until the window's end, and after it while business events are still being ingested or samples are too
    few; at the deadline the SDK turns a pending answer into an inconclusive verdict with its reason."""

    def __init__(
        self,
        store: KpiStorePort,
        ingested_until: Callable[[], datetime | None],
        prometheus: PrometheusPort | None = None,
        clock: Callable[[], datetime] = utcnow,
        journeys: synthetic.JourneyResolver = synthetic.no_journeys,
    ) -> None:
        """`journeys` resolves a journey name for a service (`synthetic.CatalogJourneys`); a name it does not
        know ends the check at once as inconclusive with the reason (VerifierError is not retried)."""
        self._store, self._ingested_until, self._prometheus, self._clock = store, ingested_until, prometheus, clock
        self._resolve_journey = journeys
        # Journeys run once per window, as it opens; a restarted verifier runs them again.
        self._journeys: OrderedDict[tuple[str, str, datetime], list[KpiResult]] = OrderedDict()

    async def check(self, req: VerificationRequest) -> Result:
        try:
            if req.raw.synthetic is not None:
                return await self._synthetic(req)
            return await self._judge(req)
        except db.UNAVAILABLE as exc:
            # A database hiccup costs a look (retried until the deadline), not the verdict.
            raise TransientError(f"KPI store unavailable: {exc}") from exc

    async def on_environment_state(self, envelope: Envelope) -> None:
        """The deployer's read model: keep the newest state of each environment (idempotent by sequence)."""
        await environments.keep_newest(self._store, envelope)

    async def _targets(self, req: VerificationRequest) -> list[str]:
        """Where the candidate serves. The deployer publishes it before it reports the step done, but the state
        may reach this verifier after the request: until it does, the check is retried (inconclusive at the
        deadline, with this reason)."""
        targets = await self._store.targets(req.service, req.environment, req.candidate_version)
        if not targets:
            raise TransientError(
                f"no serving instance of {req.candidate_version} in {req.environment} published by the deployer "
                "(release.environments) yet"
            )
        return targets

    async def _synthetic(self, req: VerificationRequest) -> Result:
        assert req.raw.synthetic is not None
        journey = self._resolve_journey(req.service, req.raw.synthetic.journey)
        targets = await self._targets(req)
        verdict, reason, kpis = await synthetic.run(req.raw.synthetic, targets, journey)
        log.info("synthetic verdict", step=req.step_id, verdict=verdict.value, reason=reason)
        return Result(verdict, reason, tuple(kpis))

    async def _journeys_for(self, req: VerificationRequest) -> list[KpiResult]:
        if req.raw.journeys is None:
            return []
        key = (req.release_id, req.step_id, req.window_start)
        if key not in self._journeys:
            journey = self._resolve_journey(req.service, req.raw.journeys.journey)
            targets = await self._targets(req)
            _, _, self._journeys[key] = await synthetic.run(req.raw.journeys, targets, journey)
            while len(self._journeys) > JOURNEY_RUNS_KEPT:
                self._journeys.popitem(last=False)
        return self._journeys[key]

    async def _judge(self, req: VerificationRequest) -> Result:
        raw = req.raw
        end = min(self._clock(), req.deadline)
        candidate = await self._store.counts(req.environment, req.candidate_version, req.window_start, end, raw.tenants)
        baseline = await self._store.counts(req.environment, req.stable_version, req.window_start, end)
        if req.woken_by_data:  # the business events only, on what may be judged at every arrival; the rest on the tick
            verdict, reason, kpis = judge(
                raw.thresholds, candidate, baseline, raw.min_samples, final=False, alpha=raw.false_rollback_bound,
                woken_by_data=True, elapsed_s=(end - req.window_start).total_seconds(),
            )  # fmt: skip
            return Result(verdict, reason, tuple(kpis)) if verdict is Verdict.FAIL else Result.pending(reason, kpis)
        journeys = await self._journeys_for(req)
        caught_up = self._ingested_until()
        # A verdict never closes a window whose business events are still in flight.
        final = req.is_final_look and caught_up is not None and caught_up >= req.window_end
        verdict, reason, kpis = judge(
            raw.thresholds, candidate, baseline, raw.min_samples, final=final, alpha=raw.false_rollback_bound,
            elapsed_s=(end - req.window_start).total_seconds(),
        )  # fmt: skip
        if raw.prometheus and self._prometheus is not None:
            window = int((end - req.window_start).total_seconds())
            prom = await self._prometheus.kpis(
                raw.prometheus, req.candidate_version, req.environment, window, stable=req.stable_version
            )
            verdict, reason = merge_verdicts(verdict, reason, prom, final)
            kpis = kpis + prom
        if journeys:
            verdict, reason = merge_verdicts(verdict, reason, journeys, final)
            kpis = kpis + journeys
        if verdict in (Verdict.PASS, Verdict.FAIL):
            return Result(verdict, reason, tuple(kpis))
        if verdict is None and req.is_final_look and not final:
            reason = "business events not yet ingested up to the window's end"
        return Result.pending(reason, kpis)
