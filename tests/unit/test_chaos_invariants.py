"""The chaos soak's invariants (bench/chaos.py, bench/faults.py) on hand-made audit logs: each one catches what it
is meant to, so a soak that prints "ok" has checked something."""

from __future__ import annotations

from bench.chaos import unrecorded_steps
from bench.faults import repeated_effects

PLAN = {"plan": [{"id": "gate-staging"}, {"id": "deploy-staging"}, {"id": "verify-staging"}], "cursor": 2}


def entry(step: str, reason: str) -> dict:
    return {"step": step, "reason": reason}


GOOD = [
    entry("gate-staging", "gate-staging requested"),
    entry("gate-staging", "gate-staging passed: all 1 checks passed"),
    entry("deploy-staging", "deploy-staging requested"),
    entry("deploy-staging", "deploy-staging done: start answered"),
    entry("verify-staging", "verify-staging requested"),
]


def test_a_complete_audit_in_plan_order_has_nothing_missing():
    assert unrecorded_steps(PLAN, GOOD) == []


def test_a_completed_step_without_its_outcome_is_named():
    assert unrecorded_steps(PLAN, [e for e in GOOD if "done" not in e["reason"]]) == ["deploy-staging"]


def test_outcomes_out_of_plan_order_are_named():
    swapped = [GOOD[2], GOOD[3], GOOD[0], GOOD[1]]
    assert unrecorded_steps(PLAN, swapped) == ["out of order: ['deploy-staging', 'gate-staging']"]


def test_a_step_requested_or_done_twice_is_an_effect_twice():
    assert repeated_effects(GOOD) == {}
    twice = [*GOOD, entry("deploy-staging", "deploy-staging done: start answered")]
    assert repeated_effects(twice) == {"deploy-staging done/passed": 2}
    again = [*GOOD, entry("gate-staging", "gate-staging requested")]
    assert repeated_effects(again) == {"gate-staging requested": 2}


def test_a_verification_asked_again_after_a_resume_is_not_an_effect_twice():
    assert repeated_effects([*GOOD, entry("verify-staging", "verify-staging requested")]) == {}


def test_a_gate_asked_again_after_it_waited_for_an_approval_is_not_an_effect_twice():
    waited = [
        entry("gate-production", "gate-production requested"),
        entry("gate-production", "gate-production waiting (high risk): needs 2 approvals from shop-approvers, has 1"),
        entry("gate-production", "approval by bob recorded: reviewed the change; gate-production re-evaluated"),
        entry("gate-production", "gate-production requested"),
        entry("gate-production", "gate-production passed: all 13 checks passed"),
    ]
    assert repeated_effects(waited) == {}
    assert repeated_effects([*waited, entry("gate-production", "gate-production requested")]) == {
        "gate-production requested": 2
    }, "a third request, with no wait before it, is the same evaluation asked twice"
