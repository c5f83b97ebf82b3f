"""Saga transitions: given events, expect commands, states and compensations."""

from datetime import timedelta
from pathlib import Path

import pytest

from contracts import topics
from contracts.events import (
    AbortRequested,
    ApprovalGiven,
    BackupPoint,
    CheckResult,
    DeployFinished,
    DeployRequested,
    DRCheckFinished,
    GateCheckFinished,
    PauseRequested,
    PromoteRequested,
    ReleaseState,
    ResumeRequested,
    RollbackFinished,
    RollbackRequested,
    Verdict,
    VerificationRequested,
)
from releasegate_platform.catalog import Catalog, VerifierSet
from services.coordinator import saga as domain
from tests.support.saga import (
    ENTRY,
    NOW,
    answer,
    candidate,
    gate_wait,
    operate,
    run_until,
    signed,
    with_migrations,
)


class TestReleaseSaga:
    def test_plan_follows_the_catalog(self):
        ids = [s.id for s in domain.build_plan(ENTRY)]
        assert ids == [
            "gate-staging",
            "dr-check",
            "deploy-staging",
            "verify-staging",
            "gate-production",
            "canary-start",
            "canary-internal",
            "verify-canary-internal",
            "canary-10",
            "verify-canary-10",
            "canary-50",
            "verify-canary-50",
            "canary-100",
            "verify-canary-100",
            "finalize-production",
            "finalize-staging",
        ]

    def test_submission_requests_the_staging_gate_with_a_deadline(self):
        d = domain.start(candidate(), ENTRY, NOW, {})
        assert [(t, type(c).__name__) for t, c in d.commands] == [(topics.GATE_COMMANDS, "GateCheckRequested")]
        assert d.deadline == ("gate-staging", NOW + timedelta(seconds=domain.STEP_TIMEOUTS["gate"]))
        assert d.saga.state is ReleaseState.RUNNING

    def test_good_release_walks_every_step_and_ends_promoted(self):
        saga = domain.start(candidate(), ENTRY, NOW, {}).saga
        seen = []
        while not saga.state.terminal:
            seen.append(saga.waiting_for)
            d = domain.handle(saga, answer(saga), NOW)
            saga = d.saga
        assert saga.state is ReleaseState.PROMOTED
        assert seen[-1] == "finalize-staging" and "verify-canary-100" in seen
        assert saga.stable == {"staging": "v2", "production": "v2"}

    def test_canary_requests_carry_catalog_weights_and_thresholds(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "canary-50")
        d = domain.handle(saga, answer(saga), NOW)
        ((topic, cmd),) = d.commands
        assert topic == topics.VERIFY_COMMANDS and isinstance(cmd, VerificationRequested)
        assert cmd.stable_version == "v1" and cmd.thresholds["checkout_success_rate"].min == 0.85
        assert cmd.step_id == "verify-canary-50" and cmd.window_seconds == ENTRY.verification.canary_window_seconds

    def test_failed_canary_verification_compensates_production_then_staging(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "verify-canary-50")
        d = domain.handle(saga, answer(saga, verdict=Verdict.FAIL), NOW)
        assert d.saga.state is ReleaseState.ROLLING_BACK
        ((topic, cmd),) = d.commands
        assert topic == topics.ROLLBACK_COMMANDS and isinstance(cmd, RollbackRequested)
        assert cmd.environment == "production"
        saga = d.saga
        d = domain.handle(
            saga,
            RollbackFinished(
                release_id="rel-1",
                step_id="compensate:production",
                environment="production",
                succeeded=True,
                reason="ok",
            ),
            NOW,
        )
        ((_, cmd),) = d.commands
        assert cmd.environment == "staging"
        d = domain.handle(
            d.saga,
            RollbackFinished(
                release_id="rel-1", step_id="compensate:staging", environment="staging", succeeded=True, reason="ok"
            ),
            NOW,
        )
        assert d.saga.state is ReleaseState.ROLLED_BACK
        assert [t for t, c in d.commands] == [topics.ALERTS]

    def test_failed_compensation_ends_rollback_failed_with_critical_alert(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "verify-canary-10")
        saga = domain.handle(saga, answer(saga, verdict=Verdict.FAIL), NOW).saga
        d = domain.handle(
            saga,
            RollbackFinished(
                release_id="rel-1",
                step_id="compensate:production",
                environment="production",
                succeeded=False,
                reason="haproxy down",
            ),
            NOW,
        )
        assert d.saga.state is ReleaseState.ROLLBACK_FAILED
        ((topic, alert),) = d.commands
        assert topic == topics.ALERTS and alert.severity.value == "critical"

    def test_failed_staging_gate_rejects_without_compensation(self):
        saga = domain.start(candidate(), ENTRY, NOW, {}).saga
        d = domain.handle(saga, answer(saga, ok=False), NOW)
        assert d.saga.state is ReleaseState.REJECTED
        assert not [c for t, c in d.commands if t == topics.ROLLBACK_COMMANDS]

    def test_failed_deploy_compensates_its_own_environment(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "deploy-staging")
        d = domain.handle(saga, answer(saga, ok=False), NOW)
        ((topic, cmd),) = d.commands
        assert topic == topics.ROLLBACK_COMMANDS and cmd.environment == "staging"

    def test_missing_verdict_pauses_with_an_alert_never_passes(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "verify-staging")
        d = domain.on_deadline(saga, "verify-staging", NOW)
        assert d.saga.state is ReleaseState.PAUSED
        assert [t for t, _ in d.commands] == [topics.ALERTS]

    def test_a_late_verdict_does_not_move_a_paused_release(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "verify-staging")
        saga = domain.on_deadline(saga, "verify-staging", NOW).saga
        assert domain.handle(saga, answer(saga), NOW).ignored

    def test_approval_resumes_a_paused_release_by_verifying_again(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "verify-staging")
        saga = domain.handle(saga, answer(saga, verdict=Verdict.INCONCLUSIVE), NOW).saga
        d = operate(saga, signed(ApprovalGiven(release_id="rel-1", actor="alice", reason="looked fine")))
        assert d.saga.state is ReleaseState.RUNNING
        assert [type(c) for _, c in d.commands] == [VerificationRequested]

    def test_the_author_cannot_approve_their_own_change(self):
        saga = run_until(domain.start(candidate(author="dev"), ENTRY, NOW, {}).saga, "verify-staging")
        saga = domain.handle(saga, answer(saga, verdict=Verdict.INCONCLUSIVE), NOW).saga
        d = operate(saga, signed(ApprovalGiven(release_id="rel-1", actor="dev", reason="trust me")))
        assert d.saga.state is ReleaseState.PAUSED and "refused" in d.transitions[0].reason

    def test_abort_compensates_and_ends_aborted(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "verify-staging")
        d = operate(saga, signed(AbortRequested(release_id="rel-1", actor="carol", reason="freeze")))
        assert d.saga.state is ReleaseState.ROLLING_BACK
        d = domain.handle(
            d.saga,
            RollbackFinished(
                release_id="rel-1", step_id="compensate:staging", environment="staging", succeeded=True, reason="ok"
            ),
            NOW,
        )
        assert d.saga.state is ReleaseState.ABORTED

    def test_stale_or_duplicate_results_are_ignored(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "deploy-staging")
        stale = GateCheckFinished(
            release_id="rel-1", step_id="gate-staging", environment="staging", passed=True, checks=[]
        )
        assert domain.handle(saga, stale, NOW).ignored

    def test_unknown_service_is_rejected_with_the_reason(self):
        d = domain.reject_unknown(candidate(service="nope"), "rejected: unknown service 'nope'")
        assert d.saga.state is ReleaseState.REJECTED and "unknown service" in d.transitions[0].reason

    def test_extend_policy_verifies_once_more_with_a_doubled_window_then_pauses(self):
        entry = ENTRY.model_copy(
            update={"verification": ENTRY.verification.model_copy(update={"on_inconclusive": "extend"})}
        )
        saga = run_until(domain.start(candidate(), entry, NOW, {}).saga, "verify-canary-10")
        d = domain.handle(saga, answer(saga, verdict=Verdict.INCONCLUSIVE), NOW)
        ((_, cmd),) = d.commands
        assert (
            d.saga.state is ReleaseState.RUNNING and cmd.window_seconds == 2 * entry.verification.canary_window_seconds
        )
        d = domain.handle(d.saga, answer(d.saga, verdict=Verdict.INCONCLUSIVE), NOW)
        assert d.saga.state is ReleaseState.PAUSED

    @staticmethod
    def needing(saga, seconds):
        """An inconclusive verdict whose detection KPI says its evidence needs a window of `seconds`."""
        event = answer(saga, verdict=Verdict.INCONCLUSIVE)
        (kpi,) = event.kpis
        return event.model_copy(update={"kpis": [kpi.model_copy(update={"needs_seconds": seconds})]})

    def extending(self, longest, budget=None):
        verification = ENTRY.verification.model_copy(
            update={"on_inconclusive": "extend", "max_window_seconds": longest, "evidence_weight_max": budget}
        )
        entry = ENTRY.model_copy(update={"verification": verification})
        return run_until(domain.start(candidate(), entry, NOW, {}).saga, "verify-canary-10")

    def test_extend_gives_the_window_the_evidence_needs_at_this_traffic(self):
        saga = self.extending(600)
        d = domain.handle(saga, self.needing(saga, 200.0), NOW)
        ((_, cmd),) = d.commands
        assert d.saga.state is ReleaseState.RUNNING and cmd.window_seconds == 250.0  # 200 s and a 25% margin
        assert any("window extended once to 250s: the evidence needs ≈200s" in t.reason for t in d.transitions)
        assert d.deadline is not None and d.deadline[1] >= NOW + timedelta(seconds=250)

    def test_extend_stops_at_the_catalogs_longest_window(self):
        saga = self.extending(230)
        ((_, cmd),) = domain.handle(saga, self.needing(saga, 200.0), NOW).commands
        assert cmd.window_seconds == 230.0

    def test_evidence_that_needs_more_than_the_catalog_allows_pauses_at_once_with_the_numbers(self):
        saga = self.extending(120)
        d = domain.handle(saga, self.needing(saga, 900.0), NOW)
        assert d.saga.state is ReleaseState.PAUSED and not d.saga.extended
        assert (
            "needs a window of ≈900s at this traffic, longer than the catalog allows (120s)" in d.transitions[-1].reason
        )

    def test_within_the_risk_budget_the_canary_is_raised_to_gather_the_evidence_in_the_longest_window(self):
        saga = self.extending(60, budget=40)
        assert saga.current.id == "verify-canary-10"
        d = domain.handle(saga, self.needing(saga, 150.0), NOW)
        ((_, shift),) = d.commands  # at 10% the evidence needs 150 s; x1.25 margin in 60 s: 10 * 150 * 1.25 / 60
        assert isinstance(shift, DeployRequested) and (shift.action.value, shift.weight) == ("shift", 32)
        assert shift.step_id == "canary-32-evidence" and d.saga.state is ReleaseState.RUNNING
        assert any("canary raised to 32% (the risk budget allows 40%)" in t.reason for t in d.transitions)
        ((_, verify),) = domain.handle(d.saga, answer(d.saga), NOW).commands
        assert (verify.step_id, verify.window_seconds) == ("verify-canary-32-evidence", 60.0)
        after = [st.id for st in d.saga.plan[d.saga.cursor :]]
        assert after[:4] == ["canary-32-evidence", "verify-canary-32-evidence", "canary-50", "verify-canary-50"]

    def test_evidence_beyond_the_risk_budget_pauses_naming_the_weight_it_would_take(self):
        saga = self.extending(60, budget=40)
        d = domain.handle(saga, self.needing(saga, 400.0), NOW)  # would take 84%
        assert d.saga.state is ReleaseState.PAUSED and not d.commands[1:]
        paused = d.transitions[-1]
        assert (
            paused.evidence["evidence_weight_needed"] == 84 and "longer than the catalog allows (60s)" in paused.reason
        )

    def test_an_evidence_step_is_not_raised_again(self):
        saga = self.extending(60, budget=40)
        d = domain.handle(saga, self.needing(saga, 150.0), NOW)
        d = domain.handle(d.saga, answer(d.saga), NOW)  # the raised shift done: verifying at 32%
        d = domain.handle(d.saga, self.needing(d.saga, 150.0), NOW)
        assert d.saga.state is ReleaseState.PAUSED

    @pytest.mark.parametrize("policy,state", [("pause", ReleaseState.PAUSED), ("rollback", ReleaseState.ROLLING_BACK)])
    def test_inconclusive_follows_the_catalog_policy(self, policy, state):
        entry = ENTRY.model_copy(
            update={"verification": ENTRY.verification.model_copy(update={"on_inconclusive": policy})}
        )
        saga = run_until(domain.start(candidate(), entry, NOW, {}).saga, "verify-staging")
        assert domain.handle(saga, answer(saga, verdict=Verdict.INCONCLUSIVE), NOW).saga.state is state

    def test_deploy_command_names_environment_action_and_weight(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "verify-canary-10")
        ((_, cmd),) = domain.handle(saga, answer(saga), NOW).commands
        assert isinstance(cmd, DeployRequested)
        assert (cmd.environment, cmd.action.value, cmd.weight) == ("production", "shift", 50)


class TestOperatorControls:
    def test_pause_holds_the_release_and_records_actor_and_reason(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "verify-canary-10")
        d = operate(saga, signed(PauseRequested(release_id="rel-1", actor="dave", reason="flash sale")))
        assert d.saga.state is ReleaseState.PAUSED and d.clear_deadline
        assert (d.transitions[0].actor, d.transitions[0].reason) == ("dave", "paused by dave: flash sale")
        assert domain.handle(d.saga, answer(d.saga), NOW).ignored

    def test_resume_repeats_the_step_that_was_in_flight(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "verify-canary-10")
        saga = operate(saga, signed(PauseRequested(release_id="rel-1", actor="dave", reason="r"))).saga
        d = operate(saga, signed(ResumeRequested(release_id="rel-1", actor="alice", reason="sale over")))
        assert d.saga.state is ReleaseState.RUNNING
        ((_, cmd),) = d.commands
        assert isinstance(cmd, VerificationRequested) and cmd.step_id == "verify-canary-10"

    def test_promote_full_jumps_to_all_traffic_and_skips_remaining_verification(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "verify-canary-10")
        d = operate(saga, signed(PromoteRequested(release_id="rel-1", actor="dave", reason="hotfix")))
        ((_, cmd),) = d.commands
        assert isinstance(cmd, DeployRequested) and (cmd.step_id, cmd.weight) == ("canary-100", 100)
        d = domain.handle(d.saga, answer(d.saga), NOW)
        assert d.saga.waiting_for == "finalize-production"
        assert any("verify-canary-100 skipped" in t.reason for t in d.transitions)

    def test_promote_full_is_refused_before_the_production_gate(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "verify-staging")
        d = operate(saga, signed(PromoteRequested(release_id="rel-1", actor="dave", reason="hurry")))
        assert not d.commands and "refused" in d.transitions[0].reason


BLUE_GREEN = Catalog(Path(__file__).resolve().parents[2] / "examples" / "catalog-blue-green").get("shop")


class TestBlueGreen:
    def test_green_is_verified_on_a_preview_before_the_switch(self):
        ids = [s.id for s in domain.build_plan(BLUE_GREEN)]
        assert ids[ids.index("gate-production") :] == [
            "gate-production",
            "green-start",
            "verify-preview",
            "switch",
            "verify-switched",
            "keep-blue-warm",
            "finalize-production",
            "finalize-staging",
        ]

    def test_green_starts_without_traffic_and_the_preview_runs_synthetic_journeys(self):
        saga = run_until(domain.start(candidate(), BLUE_GREEN, NOW, {}).saga, "gate-production")
        d = domain.handle(saga, answer(saga), NOW)
        ((_, start),) = d.commands
        assert (start.action.value, start.weight) == ("start", 0)
        ((_, preview),) = domain.handle(d.saga, answer(d.saga), NOW).commands
        assert preview.synthetic is not None and preview.synthetic.profiles == ["visa", "mastercard", "amex"]

    def test_blue_stays_warm_for_the_configured_time_then_retires(self):
        saga = run_until(domain.start(candidate(), BLUE_GREEN, NOW, {}).saga, "verify-switched")
        d = domain.handle(saga, answer(saga), NOW)
        assert d.saga.waiting_for == "keep-blue-warm" and not d.commands
        assert d.deadline == ("keep-blue-warm", NOW + timedelta(seconds=5))
        d = domain.on_deadline(d.saga, "keep-blue-warm", NOW)
        ((_, finalize),) = d.commands
        assert finalize.step_id == "finalize-production"

    def test_failed_preview_switches_nothing_and_stops_green(self):
        saga = run_until(domain.start(candidate(), BLUE_GREEN, NOW, {}).saga, "verify-preview")
        d = domain.handle(saga, answer(saga, verdict=Verdict.FAIL), NOW)
        ((_, cmd),) = d.commands
        assert isinstance(cmd, RollbackRequested) and cmd.environment == "production"

    def test_blue_green_entry_without_a_preview_is_refused(self):
        with pytest.raises(ValueError, match="preview"):
            BLUE_GREEN.model_validate({**BLUE_GREEN.model_dump(), "synthetic": None})


TENANT_PHASED = Catalog(Path(__file__).resolve().parents[2] / "examples" / "catalog-tenant-phased").get("shop")


class TestTenantPhased:
    def test_waves_move_tenants_cumulatively_and_verify_each_wave_on_its_own_tenants(self):
        plan = domain.build_plan(TENANT_PHASED)
        ids = [s.id for s in plan]
        assert ids[ids.index("gate-production") :] == [
            "gate-production",
            "wave-start",
            "wave-internal",
            "verify-wave-internal",
            "wave-pilot",
            "verify-wave-pilot",
            "wave-everyone",
            "verify-wave-everyone",
            "finalize-production",
            "finalize-staging",
        ]
        steps = {s.id: s for s in plan}
        assert steps["wave-pilot"].tenants == ["initech", "acme"]
        assert steps["verify-wave-pilot"].tenants == ["acme"]

    def test_route_command_names_the_tenants(self):
        saga = run_until(domain.start(candidate(), TENANT_PHASED, NOW, {}).saga, "wave-start")
        ((_, cmd),) = domain.handle(saga, answer(saga), NOW).commands
        assert (cmd.action.value, cmd.tenants) == ("route", ["initech"])

    def test_failed_wave_compensates_production_then_staging(self):
        saga = run_until(domain.start(candidate(), TENANT_PHASED, NOW, {}).saga, "verify-wave-internal")
        d = domain.handle(saga, answer(saga, verdict=Verdict.FAIL), NOW)
        ((_, cmd),) = d.commands
        assert isinstance(cmd, RollbackRequested) and cmd.environment == "production"


class TestInternalUsersFirst:
    def test_canary_routes_internal_tenants_before_any_weight_step(self):
        entry = ENTRY.model_copy(update={"rollout": ENTRY.rollout.model_copy(update={"internal_tenants": ["staff"]})})
        ids = [s.id for s in domain.build_plan(entry)]
        assert ids[ids.index("gate-production") : ids.index("canary-10") + 1] == [
            "gate-production",
            "canary-start",
            "canary-internal",
            "verify-canary-internal",
            "canary-10",
        ]
        steps = {s.id: s for s in domain.build_plan(entry)}
        assert steps["canary-internal"].tenants == ["staff"] and steps["canary-10"].action.value == "shift"


ROLLING = Catalog(Path(__file__).resolve().parents[2] / "examples" / "catalog-rolling").get("shop")


class TestRolling:
    def test_batches_replace_instances_each_followed_by_verification(self):
        ids = [s.id for s in domain.build_plan(ROLLING)]
        assert ids[ids.index("gate-production") :] == [
            "gate-production",
            "roll-1",
            "verify-roll-1",
            "roll-2",
            "verify-roll-2",
            "roll-3",
            "verify-roll-3",
            "finalize-production",
            "finalize-staging",
        ]

    def test_roll_command_carries_batch_and_budget(self):
        saga = run_until(domain.start(candidate(), ROLLING, NOW, {}).saga, "gate-production")
        ((_, cmd),) = domain.handle(saga, answer(saga), NOW).commands
        assert (cmd.action.value, cmd.batch, cmd.batch_size, cmd.instances) == ("roll", 1, 1, 3)

    def test_rollback_of_a_roll_is_a_redeploy_by_the_deployer_then_staging_traffic_by_rollback(self):
        saga = run_until(domain.start(candidate(), ROLLING, NOW, {}).saga, "verify-roll-2")
        d = domain.handle(saga, answer(saga, verdict=Verdict.FAIL), NOW)
        ((topic, cmd),) = d.commands
        assert topic == topics.DEPLOY_COMMANDS and cmd.action.value == "restore"
        assert cmd.step_id == "compensate:production"
        d = domain.handle(
            d.saga,
            DeployFinished(
                release_id="rel-1",
                step_id="compensate:production",
                environment="production",
                succeeded=True,
                reason="ok",
            ),
            NOW,
        )
        ((topic, cmd),) = d.commands
        assert topic == topics.ROLLBACK_COMMANDS and cmd.environment == "staging"
        assert d.transitions[0].actor == "deployer"


class TestJourneysDuringSteps:
    def test_every_kpi_step_after_the_preview_also_runs_the_synthetic_journeys(self):
        saga = run_until(domain.start(candidate(), BLUE_GREEN, NOW, {}).saga, "switch")
        ((_, cmd),) = domain.handle(saga, answer(saga), NOW).commands
        assert cmd.step_id == "verify-switched" and cmd.journeys is not None and cmd.synthetic is None

    def test_without_synthetic_journeys_in_the_catalog_steps_judge_customer_traffic_only(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "canary-10")
        ((_, cmd),) = domain.handle(saga, answer(saga), NOW).commands
        assert cmd.journeys is None


def signed_approval(actor: str, kind: str = "approval", *, key: str | None = None) -> ApprovalGiven:
    return signed(ApprovalGiven(release_id="rel-1", actor=actor, reason="reviewed", kind=kind), key=key)


class TestGateWaits:
    def test_a_wait_decision_holds_the_release_at_the_gate_and_says_why(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "gate-production")
        d = domain.handle(saga, gate_wait(saga), NOW)
        assert d.saga.state is ReleaseState.AWAITING_APPROVAL and d.saga.waiting_for == "gate-production"
        assert "needs 2 approvals" in d.transitions[-1].reason
        assert [t for t, _ in d.commands] == [topics.ALERTS]

    def test_an_approval_while_waiting_re_evaluates_the_gate_with_every_approval_so_far(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "gate-production")
        saga = operate(saga, signed_approval("alice")).saga
        saga = domain.handle(saga, gate_wait(saga), NOW).saga
        d = operate(saga, signed_approval("bob"))
        assert d.saga.state is ReleaseState.RUNNING
        ((topic, request),) = d.commands
        assert topic == topics.GATE_COMMANDS and [a.actor for a in request.approvals] == ["alice", "bob"]
        assert request.candidate.author == "dev@shop"

    def test_an_approval_with_a_bad_signature_is_refused_and_not_kept(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "gate-production")
        saga = domain.handle(saga, gate_wait(saga), NOW).saga
        d = operate(saga, signed_approval("alice", key="bob"))
        assert d.saga.approvals == [] and d.saga.state is ReleaseState.AWAITING_APPROVAL
        assert "refused: signature does not verify" in d.transitions[-1].reason and not d.commands

    def test_a_freeze_wait_re_evaluates_when_the_window_ends(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "gate-production")
        opens = NOW + timedelta(hours=3)
        d = domain.handle(saga, gate_wait(saga, rule="business_hours", retry_at=opens), NOW)
        assert d.saga.state is ReleaseState.WAITING_WINDOW and d.deadline == ("gate-production", opens)
        again = domain.on_deadline(d.saga, "gate-production", opens)
        assert again.saga.state is ReleaseState.RUNNING
        assert [t for t, _ in again.commands] == [topics.GATE_COMMANDS]

    def test_a_gate_that_requires_a_dr_check_adds_one_after_it(self):
        entry = ENTRY.model_copy(update={"dr": ENTRY.dr.model_copy(update={"required": False})})
        saga = domain.start(candidate(), entry, NOW, {}).saga
        assert not any(s.kind == "dr" for s in saga.plan)
        passed = GateCheckFinished(
            release_id="rel-1",
            step_id="gate-staging",
            environment="staging",
            passed=True,
            decision="pass",
            checks=[],
            requires=["dr-check"],
        )
        d = domain.handle(saga, passed, NOW)
        assert d.saga.waiting_for == "dr-check"
        assert [t for t, _ in d.commands] == [topics.DR_COMMANDS]


class TestMigrationsInTheSaga:
    def test_each_environment_migrates_before_its_code_starts_and_production_after_a_backup_point(self):
        ids = [s.id for s in with_migrations().plan]
        assert ids.index("migrate-staging") == ids.index("deploy-staging") - 1
        assert ids.index("backup-point") < ids.index("migrate-production") < ids.index("canary-start")
        assert ids.index("gate-production") < ids.index("backup-point")

    def test_a_failed_data_rewrite_compensates_by_restoring_the_backup_point(self):
        saga = run_until(with_migrations(), "verify-canary-internal")
        assert saga.backup_point is not None and saga.migrated == ["staging", "production"]
        d = domain.handle(saga, answer(saga, verdict=Verdict.FAIL), NOW)
        ((topic, command),) = [c for c in d.commands if c[0] == topics.ROLLBACK_COMMANDS]
        assert command.compensation == "restore_data" and command.environment == "production"
        assert command.backup_id == 7 and command.since == NOW

    def test_a_data_restore_names_the_backup_point_the_dr_checker_reported(self):
        saga = run_until(with_migrations(), "backup-point")
        point = BackupPoint(
            backup_id=9,
            database="shop",
            path="/run/backups/shop.dump",
            sha256="sha256:" + "d" * 64,
            bytes=10,
            kind="backup-point",
            taken_at=NOW,
            release_id="rel-1",
        )
        taken = answer(saga).model_copy(update={"backup_point": point})
        saga = run_until(domain.handle(saga, taken, NOW).saga, "verify-canary-internal")
        d = domain.handle(saga, answer(saga, verdict=Verdict.FAIL), NOW)
        ((_, command),) = [c for c in d.commands if c[0] == topics.ROLLBACK_COMMANDS]
        assert command.compensation == "restore_data" and command.backup_point == point
        assert (command.backup_id, command.since) == (9, NOW)

    def test_a_backup_point_that_could_not_be_replayed_waits_and_a_resume_takes_it_again(self):
        saga = run_until(with_migrations(), "backup-point")
        retention = CheckResult(
            name="events_replayable",
            passed=False,
            evidence={"outcome": "wait"},
            reason="shop.events keeps 1 h of events; a release may hold its backup point 24 h",
        )
        d = domain.handle(
            saga, DRCheckFinished(release_id="rel-1", step_id="backup-point", ready=False, checks=[retention]), NOW
        )
        assert d.saga.state is ReleaseState.PAUSED and d.saga.waiting_for == "backup-point"
        assert "migrate-production" not in [s.id for s in d.saga.plan[: d.saga.cursor]]
        assert any(t == topics.ALERTS for t, _ in d.commands) and "keeps 1 h" in d.transitions[-1].reason
        resumed = operate(d.saga, signed(ResumeRequested(release_id="rel-1", actor="alice", reason="retention fixed")))
        assert resumed.saga.state is ReleaseState.RUNNING
        assert [t for t, _ in resumed.commands] == [topics.DR_COMMANDS]

    def test_a_backup_point_that_failed_for_another_reason_fails_the_release(self):
        saga = run_until(with_migrations(), "backup-point")
        d = domain.handle(saga, answer(saga, ok=False), NOW)
        assert d.saga.state is ReleaseState.ROLLING_BACK  # staging already runs v2: it is compensated

    def test_an_expand_only_migration_compensates_by_traffic_and_says_the_schema_stays(self):
        saga = run_until(
            with_migrations([{"name": "0001_add.sql", "kind": "expand", "rewrites_data": False}]),
            "verify-canary-internal",
        )
        d = domain.handle(saga, answer(saga, verdict=Verdict.FAIL), NOW)
        ((topic, command),) = [c for c in d.commands if c[0] == topics.ROLLBACK_COMMANDS]
        assert command.compensation == "restore_traffic"
        assert any(
            "schema of staging, production left in place" in t.reason and "expand migrations only" in t.reason
            for t in d.transitions
        )


class TestHoldPoint:
    ENTRY_HOLD = ENTRY.model_copy(update={"dr": ENTRY.dr.model_copy(update={"hold_point": True})})

    def at_hold(self):
        saga = domain.start(candidate(), self.ENTRY_HOLD, NOW, {}).saga
        saga = run_until(saga, "hold-production")
        assert saga.state is ReleaseState.AWAITING_APPROVAL
        return saga

    def test_go_from_the_approver_group_continues(self):
        d = operate(self.at_hold(), signed_approval("alice", "go"))
        assert d.saga.state is ReleaseState.RUNNING and d.saga.waiting_for != "hold-production"

    def test_go_from_outside_the_group_is_refused(self):
        d = operate(self.at_hold(), signed_approval("dave", "go"))
        assert d.saga.state is ReleaseState.AWAITING_APPROVAL
        assert "not in the shop-approvers group" in d.transitions[-1].reason

    def test_no_go_aborts_and_compensates(self):
        d = operate(self.at_hold(), signed_approval("alice", "no-go"))
        assert d.saga.state is ReleaseState.ROLLING_BACK and d.saga.end_state is ReleaseState.ABORTED


class TestRequiredAndAdvisoryVerifiers:
    ENTRY_V = ENTRY.model_copy(
        update={
            "verification": ENTRY.verification.model_copy(
                update={
                    "by_environment": {
                        "production": VerifierSet(required=["business-kpis", "erp-export"], advisory=["tax"])
                    }
                }
            )
        }
    )
    ALIVE = {"business-kpis": {"*"}, "erp-export": {"shop"}, "tax": {"shop"}}

    def at_canary(self, registry=ALIVE):
        saga = run_until(domain.start(candidate(), self.ENTRY_V, NOW, {}).saga, "verify-canary-internal")
        return saga

    def verdict(self, saga, verifier, verdict=Verdict.PASS):
        v = answer(saga, verdict=verdict)
        return v.model_copy(update={"verifier": verifier})

    def test_the_step_waits_for_every_required_verdict(self):
        saga = self.at_canary()
        d = domain.handle(saga, self.verdict(saga, "business-kpis"), NOW, registry=self.ALIVE)
        assert d.saga.waiting_for == "verify-canary-internal" and not d.clear_deadline
        assert "waiting for erp-export (alive, no verdict yet)" in d.transitions[-1].reason
        d = domain.handle(d.saga, self.verdict(d.saga, "erp-export"), NOW, registry=self.ALIVE)
        assert d.saga.waiting_for == "canary-10"

    def test_a_required_fail_fails_the_step(self):
        saga = self.at_canary()
        d = domain.handle(saga, self.verdict(saga, "erp-export", Verdict.FAIL), NOW, registry=self.ALIVE)
        assert d.saga.state is ReleaseState.ROLLING_BACK and "(verdict of erp-export)" in d.transitions[0].reason

    def test_an_advisory_fail_is_recorded_and_never_blocks(self):
        saga = self.at_canary()
        d = domain.handle(saga, self.verdict(saga, "tax", Verdict.FAIL), NOW, registry=self.ALIVE)
        assert d.saga.state is ReleaseState.RUNNING and "advisory verdict of tax" in d.transitions[-1].reason
        for name in ("business-kpis", "erp-export"):
            d = domain.handle(d.saga, self.verdict(d.saga, name), NOW, registry=self.ALIVE)
        assert d.saga.waiting_for == "canary-10"

    def test_a_verdict_from_an_unexpected_or_unregistered_verifier_is_refused(self):
        saga = self.at_canary()
        d = domain.handle(saga, self.verdict(saga, "rogue", Verdict.FAIL), NOW, registry=self.ALIVE)
        assert "refused: not a required or advisory verifier" in d.transitions[-1].reason
        d = domain.handle(
            saga,
            self.verdict(saga, "erp-export", Verdict.FAIL),
            NOW,
            registry={"business-kpis": {"*"}, "erp-export": {"pricing"}},
        )
        assert "refused: erp-export is not registered for shop" in d.transitions[-1].reason
        assert d.saga.state is ReleaseState.RUNNING

    def test_a_registered_verifiers_verdict_counts_while_its_newer_heartbeats_wait_behind_it(self):
        """Under a backlog the verifier looks dead (its heartbeats are queued behind its verdict); it is registered
        for the service, and its verdict is judged, not refused."""
        saga = self.at_canary()
        d = domain.handle(
            saga,
            self.verdict(saga, "erp-export", Verdict.FAIL),
            NOW,
            registry={"business-kpis": {"*"}},
            registered=self.ALIVE,
        )
        assert d.saga.state is ReleaseState.ROLLING_BACK and "(verdict of erp-export)" in d.transitions[0].reason

    def test_a_required_verifier_that_is_not_alive_is_named_and_the_deadline_follows_the_policy(self):
        saga = run_until(domain.start(candidate(), self.ENTRY_V, NOW, {}).saga, "canary-internal")
        d = domain.handle(saga, answer(saga), NOW, registry={"business-kpis": {"*"}})
        assert any("waiting for erp-export, not alive" in t.reason for t in d.transitions)
        late = domain.on_deadline(d.saga, "verify-canary-internal", NOW, registry={"business-kpis": {"*"}})
        assert late.saga.state is ReleaseState.PAUSED
        assert "erp-export (not alive: no heartbeat within 3 intervals)" in late.transitions[-1].reason
