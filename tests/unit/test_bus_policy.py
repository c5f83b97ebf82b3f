"""The bus policy (deploy/kafka/acls.yaml) and the coordinator's check of who sent a result: least privilege
as data, and a forged result refused for the one reason that matters, its sender."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts import topics
from contracts.events import DeployFinished, GateCheckFinished, Verdict, VerificationFinished, VerifierHeartbeat
from releasegate_runtime.bus import BusPolicy, BusPolicyError
from services.coordinator import senders

POLICY = BusPolicy.load()
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def writers(topic: str) -> set[str]:
    return {
        g.principal
        for g in POLICY.grants()
        if g.resource == "topic"
        and g.operation == "WRITE"
        and (topic.startswith(g.name) if g.prefixed else topic == g.name)
    }


class TestLeastPrivilege:
    def test_only_the_coordinator_writes_commands_and_release_status(self):
        for topic in (
            topics.GATE_COMMANDS,
            topics.DR_COMMANDS,
            topics.DEPLOY_COMMANDS,
            topics.VERIFY_COMMANDS,
            topics.ROLLBACK_COMMANDS,
            topics.STATUS,
        ):
            assert writers(topic) == {"coordinator"}, topic

    def test_ci_writes_candidates_and_nothing_else(self):
        ci = POLICY.principals["ci"]
        assert ci.produce == (topics.CANDIDATES,) and not ci.consume and not ci.groups
        # the API submits what a CI token proved (services/api); nobody else writes candidates
        assert writers(topics.CANDIDATES) == {"ci", "api"}

    def test_only_ops_and_the_api_send_control_and_the_shop_only_its_events(self):
        # the API relays commands an OIDC login proved, signed by the API's own key (services/api)
        assert writers(topics.CONTROL) == {"ops", "api"}
        assert POLICY.principals["shop"].produce == (topics.SHOP_EVENTS,)
        assert writers(topics.SHOP_EVENTS) == {"shop"}

    def test_every_result_topic_has_exactly_one_writer(self):
        producers = POLICY.results_producers()
        assert set(producers) >= {
            topics.results_for(n)
            for n in ("gatekeeper", "dr-checker", "deployer", "rollback", "verifier-business-kpis")
        }
        for topic, principal in producers.items():
            assert writers(topic) == {principal.name}, topic

    def test_a_team_verifier_gets_its_own_result_topic_and_reads_requests(self):
        tax = POLICY.principals["verifier-tax"]
        assert tax.verifier_name == "tax" and tax.results_topic == "release.results.verifier-tax"
        assert tax.consume == (topics.VERIFY_COMMANDS,) and tax.groups == ("releasegate-verifier-tax",)
        registered = POLICY.with_verifier("order-ledger")
        assert registered.produce[0] == "release.results.verifier-order-ledger"

    @pytest.mark.parametrize("name", ["Bad", "a;b", "x" * 65, "verifier-", "-x", "a..b"])
    def test_principal_names_are_validated(self, name):
        with pytest.raises(BusPolicyError):
            POLICY.build(name, {})

    def test_the_api_and_the_notifier_only_read_status_and_write_no_command(self):
        api, notifier = POLICY.principals["api"], POLICY.principals["notifier"]
        assert set(api.produce) == {topics.CANDIDATES, topics.CONTROL} and api.consume == (topics.STATUS,)
        assert set(notifier.consume) == {topics.STATUS, topics.ALERTS}
        assert notifier.produce == (topics.DEADLETTER,)

    def test_the_table_lists_every_principal(self):
        table = POLICY.table()
        assert all(f"| `{name}` |" in table for name in POLICY.principals)

    def test_the_security_docs_show_the_policy_as_it_is(self):
        text = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
        shown = text.split("<!-- principals-table -->\n", 1)[1].split("\n<!-- /principals-table -->", 1)[0]
        assert shown == POLICY.table(), "docs/security.md is stale: paste `python -m releasegate_runtime.bus table`"


def verdict(verifier: str) -> VerificationFinished:
    return VerificationFinished(
        release_id="r1",
        step_id="verify-staging",
        environment="staging",
        verdict=Verdict.PASS,
        reason="ok",
        kpis=[],
        window_start=NOW,
        window_end=NOW,
        verifier=verifier,
    )


def heartbeat(name: str, sent_at: datetime = NOW) -> VerifierHeartbeat:
    return VerifierHeartbeat(
        name=name, version="1", instance="i1", services=["*"], environments=["*"], interval_seconds=5, sent_at=sent_at
    )


class TestWhoMaySendAResult:
    def test_a_verdict_counts_only_from_its_own_verifier_principal(self):
        assert senders.refusal(POLICY.principals["verifier-business-kpis"], verdict("business-kpis"), NOW) is None
        why = senders.refusal(POLICY.principals["verifier-tax"], verdict("business-kpis"), NOW)
        assert why is not None and "only verifier-business-kpis" in why

    def test_a_gate_result_counts_only_from_the_gatekeeper(self):
        gate = GateCheckFinished(
            release_id="r1", step_id="gate-production", environment="production", passed=True, checks=[]
        )
        assert senders.refusal(POLICY.principals["gatekeeper"], gate, NOW) is None
        assert "only gatekeeper" in senders.refusal(POLICY.principals["deployer"], gate, NOW)

    def test_a_deploy_result_counts_only_from_the_deployer(self):
        done = DeployFinished(
            release_id="r1", step_id="canary-10", environment="production", succeeded=True, reason="ok"
        )
        assert "only deployer" in senders.refusal(POLICY.principals["verifier-tax"], done, NOW)

    def test_a_heartbeat_for_another_verifier_or_from_the_future_is_refused(self):
        kpis = POLICY.principals["verifier-business-kpis"]
        assert senders.refusal(kpis, heartbeat("business-kpis"), NOW) is None
        assert senders.refusal(kpis, heartbeat("business-kpis", NOW + timedelta(seconds=30)), NOW) is None
        assert "in the future" in senders.refusal(kpis, heartbeat("business-kpis", NOW + timedelta(days=3)), NOW)
        assert "only verifier-erp-export" in senders.refusal(kpis, heartbeat("erp-export"), NOW)

    def test_a_hostile_verifier_name_is_refused_in_a_short_readable_reason(self):
        # the contract refuses such a name when the record is decoded; the sender check must still quote it
        # shortly if a record ever reaches it built some other way
        with pytest.raises(ValidationError):
            verdict("x;\n" * 5000)
        hostile = verdict("tax").model_copy(update={"verifier": "x;\n" * 5000})
        why = senders.refusal(POLICY.principals["verifier-tax"], hostile, NOW)
        assert why is not None and len(why) < 400 and "\n" not in why
