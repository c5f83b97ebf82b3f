"""`releasegate explain` tells a gate decision in sentences: verdict, policy version, risk, and every rule."""

from releasegate_platform.explain import explain_release

RELEASE = {
    "release_id": "shop-v3-1",
    "service": "shop",
    "version": "v3",
    "state": "awaiting_approval",
    "step": "gate-production",
}


def decision(outcome: str, **over) -> dict:
    d = {
        "step_id": "gate-production",
        "environment": "production",
        "decision": outcome,
        "risk": "high",
        "policy_version": "v1 (sha256:abc)",
        "input_digest": "sha256:" + "f" * 64,
        "decided_at": "2026-11-27T10:00:00",
        "change": {"files_changed": 2, "lines_changed": 9, "baseline_version": "v1", "domains": ["payment"]},
        "rules": [
            {
                "name": "approvals",
                "passed": False,
                "reason": "needs 2 approvals, has 1",
                "evidence": {"outcome": "wait"},
            },
            {
                "name": "tests_passed",
                "passed": True,
                "reason": "upstream tests passed",
                "evidence": {"outcome": "pass"},
            },
        ],
        "warnings": [],
        "refused": ["dev: the author of a change cannot approve it"],
    }
    return {**d, **over}


def test_a_waiting_release_says_what_it_waits_for_and_who_was_refused():
    text = "\n".join(explain_release(RELEASE, [decision("wait")]))
    assert "is awaiting approval at gate-production." in text
    assert "gate-production (production) is waiting" in text and "policy v1 (sha256:abc)" in text
    assert "high risk: 2 files, 9 lines changed against v1, touching payment." in text
    assert "Waiting on approvals: needs 2 approvals, has 1." in text
    assert "Refused approval — dev: the author of a change cannot approve it." in text
    assert "Passed 1 rules: tests_passed (upstream tests passed)." in text


def test_only_the_latest_evaluation_of_a_gate_is_told_with_a_count_of_earlier_ones():
    text = "\n".join(explain_release(RELEASE, [decision("wait"), decision("pass", rules=[], refused=[])]))
    assert "gate-production (production) passed" in text and "(1 earlier evaluation)" in text
    assert "Waiting on" not in text


def test_a_release_no_gate_decided_on_says_so():
    assert explain_release(RELEASE, [])[-1] == "No gate has decided on it yet."


class TestDetectionEvidence:
    """The verifier's evidence for a KPI that must catch a stated drop, as the timeline recorded it."""

    KPI = {
        "name": "checkout_success_rate",
        "verdict": "inconclusive",
        "test": "SPRT for a drop of the stated size (stratified)",
        "rule": "not enough evidence yet to tell a drop of 0.02: 120 candidate samples of the ≈694 a drop of 0.02 "
        "needs to be caught",
        "needs_seconds": 171.4,
    }

    def timeline(self, *kpis):
        return [
            {"step": "verify-canary-10", "reason": "waiting 10s", "evidence": {}},
            {"step": "verify-canary-10", "reason": "inconclusive", "evidence": {"verifier": "business-kpis", "kpis": list(kpis)}},
        ]  # fmt: skip

    def test_a_verdict_on_a_drop_to_catch_says_what_it_saw_and_how_long_a_decision_takes(self):
        lines = explain_release(RELEASE, [decision("wait")], self.timeline(self.KPI))
        assert "Evidence for the drops the catalog says must be caught:" in lines
        line = lines[-1]
        assert line.startswith("  verify-canary-10 (business-kpis): checkout_success_rate inconclusive:")
        assert "120 candidate samples of the ≈694" in line and "A window of ≈171s would decide it" in line

    def test_kpis_judged_otherwise_add_nothing(self):
        other = {**self.KPI, "test": "mSPRT on difference of proportions", "needs_seconds": None}
        assert explain_release(RELEASE, [decision("wait")], self.timeline(other)) == explain_release(
            RELEASE, [decision("wait")]
        )

    def test_evidence_is_told_before_any_gate_decided(self):
        lines = explain_release(RELEASE, [], self.timeline(self.KPI))
        assert "No gate has decided on it yet." in lines and "checkout_success_rate inconclusive" in lines[-1]
