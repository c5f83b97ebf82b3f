"""The verifier SDK's rules without I/O: which requests a verifier takes, when its check runs, what an answer or
an error means for the verdict, and how measurements are reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from contracts.events import KpiResult, Verdict, VerificationRequested
from releasegate_sdk import Measurement, Result, TransientError, Verifier
from releasegate_sdk.schedule import Finish, LookAgain, Window, after_answer, after_error, first_look
from releasegate_sdk.testing import fake_request
from releasegate_sdk.types import RETRYABLE
from services.verifier.domain import Counts
from services.verifier.handlers import BusinessKpis

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def request(**fields) -> VerificationRequested:
    return fake_request(**fields).raw


class TestWhichRequestsAVerifierTakes:
    def test_takes_its_services_and_environments_and_skips_the_rest(self):
        v = Verifier(name="erp-export", version="1", services=["shop"], environments=["production"])
        assert v.skip_reason(request(service="shop", environment="production")) is None
        assert "service 'cart'" in v.skip_reason(request(service="cart", environment="production"))
        assert "environment 'staging'" in v.skip_reason(request(service="shop", environment="staging"))

    def test_star_covers_every_service_and_environment(self):
        v = Verifier(name="core", version="1", services=["*"], environments=["*"])
        assert v.skip_reason(request(service="anything", environment="qa")) is None

    def test_leaves_synthetic_journeys_to_the_core_verifier(self):
        synthetic = {"journey": "checkout", "tenants": ["acme"], "profiles": ["visa"]}
        assert (
            Verifier(name="erp-export", version="1", services=["*"]).skip_reason(request(synthetic=synthetic))
            is not None
        )
        assert (
            Verifier(name="core", version="1", services=["*"], handles_synthetic=True).skip_reason(
                request(synthetic=synthetic)
            )
            is None
        )

    @pytest.mark.parametrize("name", ["ERP", "erp_export", "-erp", "erp--export", ""])
    def test_refuses_names_that_cannot_be_a_consumer_group_and_a_module(self, name):
        with pytest.raises(ValueError):
            Verifier(name=name, version="1", services=["shop"])

    def test_heartbeat_announces_what_it_covers(self):
        v = Verifier(name="erp-export", version="1.2.0", services=["shop"], kpis=["erp_lag_s"], heartbeat_seconds=2)
        hb = v.heartbeat()
        assert (hb.name, hb.version, hb.instance, hb.services, hb.kpis, hb.interval_seconds) == (
            "erp-export",
            "1.2.0",
            v.instance,
            ["shop"],
            ["erp_lag_s"],
            2,
        )
        assert v.service_name == "verifier-erp-export"


class TestWhenTheCheckRuns:
    def test_without_looks_the_check_runs_at_the_window_end(self):
        w = Window.of(T0, 10, 20)
        assert first_look(w, None) == at(10)
        assert w.deadline == at(20)  # grace is at most the window's length

    def test_grace_is_bounded_by_grace_seconds_for_long_windows(self):
        assert Window.of(T0, 300, 20).deadline == at(320)

    def test_with_looks_an_undecided_look_is_followed_by_the_next_until_the_window_end(self):
        w = Window.of(T0, 10, 20)
        assert first_look(w, 3) == at(3)
        undecided = Result.inconclusive("not yet")
        assert after_answer(w, undecided, final=False, now=at(3), looks_every=3) == LookAgain(at(6))
        assert after_answer(w, Result.pending("not yet"), final=False, now=at(9), looks_every=3) == LookAgain(at(10))

    def test_a_decisive_look_ends_the_window_early(self):
        w = Window.of(T0, 10, 20)
        failed = Result.failed("checkout broken")
        assert after_answer(w, failed, final=False, now=at(2), looks_every=1) == Finish(failed)

    def test_inconclusive_at_the_window_end_is_the_verdict(self):
        w = Window.of(T0, 10, 20)
        r = Result.inconclusive("too few orders")
        assert after_answer(w, r, final=True, now=at(10), looks_every=None) == Finish(r)

    def test_pending_at_the_window_end_looks_again_until_the_deadline_then_is_inconclusive(self):
        w = Window.of(T0, 10, 20)
        waiting = Result.pending("export not confirmed", [Measurement("erp_lag_s", None)])
        assert after_answer(w, waiting, final=True, now=at(10), looks_every=None) == LookAgain(at(11))
        assert after_answer(w, waiting, final=True, now=at(19.5), looks_every=None) == LookAgain(at(20))
        late = after_answer(w, waiting, final=True, now=at(20), looks_every=None)
        assert isinstance(late, Finish)
        assert (late.result.verdict, late.result.reason) == (Verdict.INCONCLUSIVE, "export not confirmed")
        assert late.result.measurements == waiting.measurements


class TestErrors:
    def test_transient_errors_are_retried_with_growing_backoff_until_the_deadline(self):
        w = Window.of(T0, 10, 20)
        err = TransientError("ERP API answered 503")
        assert after_error(w, err, attempt=1, retryable=True, now=at(10)) == LookAgain(at(10.5))
        assert after_error(w, err, attempt=3, retryable=True, now=at(11)) == LookAgain(at(13))
        assert after_error(w, err, attempt=9, retryable=True, now=at(19)) == LookAgain(at(20))

    def test_past_the_deadline_the_verdict_is_inconclusive_and_names_the_error(self):
        step = after_error(
            Window.of(T0, 10, 20), TransientError("ERP API answered 503"), attempt=7, retryable=True, now=at(20)
        )
        assert isinstance(step, Finish) and step.result.verdict is Verdict.INCONCLUSIVE
        assert step.result.reason == "gave up after 7 attempts: TransientError: ERP API answered 503"

    def test_a_bug_in_the_check_is_inconclusive_at_once_never_a_pass(self):
        step = after_error(Window.of(T0, 10, 20), KeyError("lag"), attempt=1, retryable=False, now=at(10))
        assert isinstance(step, Finish)
        assert (step.result.verdict, step.result.reason) == (Verdict.INCONCLUSIVE, "the check failed: KeyError: 'lag'")

    def test_timeouts_and_refused_connections_count_as_transient(self):
        for exc in (httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), TimeoutError(), ConnectionRefusedError()):
            assert isinstance(exc, RETRYABLE)
        assert not isinstance(ValueError("bad"), RETRYABLE)


class TestReportedMeasurements:
    def test_measurements_become_kpi_results_with_their_own_verdicts(self):
        r = Result.failed(
            "exports late",
            [
                Measurement("erp_lag_s", 95.0, threshold=60, unit="s", passed=False),
                Measurement("exports", 120, unit="orders", samples=120),
                Measurement("erp_errors", None),
            ],
        )
        lag, exports, errors = r.kpis()
        assert (lag.name, lag.candidate, lag.verdict, lag.rule) == ("erp_lag_s", 95.0, Verdict.FAIL, "threshold 60 s")
        assert (exports.verdict, exports.candidate_samples, exports.rule) == (Verdict.FAIL, 120, "reported orders")
        assert (errors.verdict, errors.candidate_samples) == (Verdict.INCONCLUSIVE, 0)

    def test_kpi_results_pass_through_unchanged(self):
        kpi = KpiResult(
            name="x",
            candidate=1.0,
            baseline=0.9,
            candidate_samples=30,
            baseline_samples=40,
            verdict=Verdict.PASS,
            rule="mSPRT",
            test="mSPRT",
            statistic=3.2,
        )
        assert Result.passed("ok", [kpi]).kpis() == [kpi]


class TestFakeRequest:
    def test_gives_a_typed_view_of_the_command(self):
        req = fake_request(environment="production", tenants=["acme"], candidate_version="v7")
        assert (req.environment, req.tenants, req.candidate_version, req.is_final_look) == (
            "production",
            ("acme",),
            "v7",
            True,
        )
        assert req.window_end - req.window_start == timedelta(seconds=req.raw.window_seconds)
        assert req.window_start < req.window_end <= req.deadline


class FakeKpiStore:
    """Counts per version, as the KPI store would return them for the window."""

    def __init__(self, counts: dict[str, Counts]) -> None:
        self.counts_by_version = counts

    async def counts(self, environment, version, start, end, tenants=None) -> Counts:
        return self.counts_by_version.get(version, Counts())

    async def targets(self, service, environment, version) -> list[str]:
        return []


class TestCoreVerifierCheck:
    """services/verifier's judging as an SDK check: decisive verdicts end the window, the rest is pending."""

    THRESHOLDS = {"checkout_success_rate": {"min": 0.85}}

    async def judged(self, candidate: Counts, *, final: bool, ingested: bool = True) -> Result:
        store = FakeKpiStore({"v1": Counts(checkout_succeeded=40), "v2": candidate})
        req = fake_request(thresholds=self.THRESHOLDS, min_samples=15, is_final_look=final)
        caught_up = req.window_end if ingested else req.window_start
        return await BusinessKpis(store, lambda: caught_up).check(req)

    async def test_a_clearly_broken_candidate_fails_at_any_look(self):
        result = await self.judged(Counts(checkout_failed=30), final=False)
        assert result.verdict is Verdict.FAIL and "checkout_success_rate" in result.reason

    async def test_a_healthy_candidate_passes_at_the_final_look_once_events_are_ingested(self):
        assert (await self.judged(Counts(checkout_succeeded=30), final=False)).verdict is None
        assert (await self.judged(Counts(checkout_succeeded=30), final=True)).verdict is Verdict.PASS
        waiting = await self.judged(Counts(checkout_succeeded=30), final=True, ingested=False)
        assert (waiting.verdict, waiting.reason) == (None, "business events not yet ingested up to the window's end")

    async def test_too_few_samples_at_the_window_end_is_pending_so_the_window_runs_to_its_deadline(self):
        result = await self.judged(Counts(checkout_succeeded=3), final=True)
        assert result.verdict is None and "needs >= 15 candidate samples, has 3" in result.reason
