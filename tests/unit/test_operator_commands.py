"""Every operator command is signed: the coordinator acts on one only when its actor's key signed all of it,
recently, once, and the catalog lets that person give it for this release. A refused command changes nothing
but the audit log."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from contracts.events import (
    AbortRequested,
    ApprovalGiven,
    PauseRequested,
    PromoteRequested,
    ReleaseState,
    ResumeRequested,
)
from releasegate_cli import client
from releasegate_cli import main as cli
from releasegate_platform import identity, supply_chain
from releasegate_platform.catalog import Approvers
from releasegate_runtime.settings import ServiceSettings
from services.coordinator import control
from services.coordinator import saga as domain
from tests.support.saga import (
    ENTRY,
    KEYS,
    NOW,
    REPO,
    answer,
    candidate,
    gate_wait,
    operate,
    run_until,
    signed,
)

RID = "rel-1"


def at_canary(**candidate_fields) -> domain.Saga:
    return run_until(domain.start(candidate(**candidate_fields), ENTRY, NOW, {}).saga, "verify-canary-10")


def paused(**candidate_fields) -> domain.Saga:
    saga = operate(at_canary(**candidate_fields), signed(PauseRequested(release_id=RID, actor="dave", reason="r"))).saga
    assert saga.state is ReleaseState.PAUSED
    return saga


def assert_refused(d: domain.Decision, before: domain.Saga, actor: str, why: str) -> None:
    """Refused: recorded in the audit log with the actor and the reason, and nothing else changed."""
    assert d.saga == before and not d.commands and d.deadline is None and not d.clear_deadline
    assert d.ignored is None, "a refusal is recorded, never ignored"
    (t,) = d.transitions
    assert t.actor == actor and " refused: " in t.reason and why in t.reason, t.reason


class TestRefusedCommands:
    def test_an_unsigned_abort_is_refused_and_recorded_with_nothing_else_changed(self):
        saga = at_canary()
        d = operate(saga, AbortRequested(release_id=RID, actor="carol", reason="stop it"))
        assert_refused(d, saga, "carol", f"abort by carol refused: {identity.NO_SIGNATURE}")

    def test_an_abort_without_a_checked_signature_is_refused(self):
        saga = at_canary()
        d = domain.handle(saga, signed(AbortRequested(release_id=RID, actor="carol", reason="stop")), NOW)
        assert_refused(d, saga, "carol", "not checked")

    def test_a_forged_signature_is_refused(self):
        saga = at_canary()
        forged = signed(AbortRequested(release_id=RID, actor="carol", reason="stop"), key="dev")
        assert_refused(operate(saga, forged), saga, "carol", "signature does not verify with carol's key")

    def test_an_abort_signature_replayed_as_a_resume_is_refused(self):
        saga = paused()
        abort = signed(AbortRequested(release_id=RID, actor="alice", reason="go on"))
        resume = ResumeRequested.model_validate(abort.model_dump())
        assert_refused(operate(saga, resume), saga, "alice", "signature does not verify with alice's key")

    def test_a_signature_for_another_release_is_refused(self):
        saga = at_canary()
        other = signed(AbortRequested(release_id="rel-2", actor="carol", reason="stop"))
        moved = AbortRequested.model_validate({**other.model_dump(), "release_id": RID})
        assert_refused(operate(saga, moved), saga, "carol", "signature does not verify")

    def test_a_replayed_nonce_is_refused(self):
        saga = at_canary()
        d = operate(saga, signed(AbortRequested(release_id=RID, actor="carol", reason="stop")), replayed=True)
        assert_refused(d, saga, "carol", "was used before: a replayed command")

    def test_a_command_without_a_nonce_is_refused(self):
        unsigned = AbortRequested(release_id=RID, actor="carol", reason="stop", signed_at=NOW)
        signature = supply_chain.load_signer(KEYS / "carol.key").sign(identity.payload_of(unsigned))
        command = unsigned.model_copy(update={"keyid": signature.keyid, "signature": signature.signature})
        saga = at_canary()
        assert_refused(operate(saga, command), saga, "carol", "no nonce")

    def test_a_command_signed_more_than_a_minute_in_the_future_is_refused(self):
        saga = at_canary()
        ahead = signed(AbortRequested(release_id=RID, actor="carol", reason="stop"), at=NOW + timedelta(minutes=2))
        assert_refused(operate(saga, ahead), saga, "carol", "signed 120 s in the future")

    def test_clocks_may_differ_by_less_than_a_minute(self):
        ahead = signed(PauseRequested(release_id=RID, actor="carol", reason="r"), at=NOW + timedelta(seconds=30))
        assert operate(at_canary(), ahead).saga.state is ReleaseState.PAUSED

    @pytest.mark.parametrize("command", [AbortRequested, PauseRequested, PromoteRequested])
    def test_a_command_signed_longer_ago_than_its_validity_is_refused(self, command):
        saga = at_canary()
        old = signed(
            command(release_id=RID, actor="carol", reason="r"), at=NOW - control.COMMAND_VALIDITY - timedelta(seconds=1)
        )
        assert_refused(operate(saga, old), saga, "carol", "signature expired: signed 601 s ago")

    def test_a_go_signed_longer_ago_than_its_validity_is_refused(self):
        saga = run_until(
            domain.start(
                candidate(), ENTRY.model_copy(update={"dr": ENTRY.dr.model_copy(update={"hold_point": True})}), NOW, {}
            ).saga,
            "hold-production",
        )
        old = signed(ApprovalGiven(release_id=RID, actor="alice", reason="r", kind="go"), at=NOW - timedelta(hours=1))
        assert_refused(operate(saga, old), saga, "alice", "go by alice refused: signature expired")

    def test_an_approval_keeps_its_policy_expiry_which_the_gate_judges(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "gate-production")
        saga = domain.handle(saga, gate_wait(saga), NOW).saga
        approval = signed(ApprovalGiven(release_id=RID, actor="alice", reason="r"), at=NOW - timedelta(hours=1))
        d = operate(saga, approval)
        assert [a.actor for a in d.saga.approvals] == ["alice"] and d.saga.approvals[0].nonce == approval.nonce


class TestWhoMayGiveACommand:
    def test_a_developer_cannot_pause_a_release(self):
        saga = at_canary()
        d = operate(saga, signed(PauseRequested(release_id=RID, actor="dev", reason="r")))
        assert_refused(
            d,
            saga,
            "dev",
            "not in the release-managers or releasegate-operators or shop-approvers group that may pause shop",
        )

    def test_only_release_managers_promote(self):
        saga = at_canary()
        d = operate(saga, signed(PromoteRequested(release_id=RID, actor="alice", reason="r")))
        assert_refused(d, saga, "alice", "not in the release-managers group that may promote shop releases")

    def test_a_release_manager_outside_the_approver_group_cannot_resume(self):
        saga = paused()
        d = operate(saga, signed(ResumeRequested(release_id=RID, actor="dave", reason="r")))
        assert_refused(d, saga, "dave", "not in the shop-approvers group that may resume shop releases")

    def test_the_author_may_abort_and_pause_their_own_release(self):
        saga = at_canary(author="carol")
        assert operate(saga, signed(PauseRequested(release_id=RID, actor="carol", reason="r"))).saga.state is (
            ReleaseState.PAUSED
        )
        assert operate(saga, signed(AbortRequested(release_id=RID, actor="carol", reason="r"))).saga.state is (
            ReleaseState.ROLLING_BACK
        )

    @pytest.mark.parametrize("command,verb", [(ResumeRequested, "resume"), (PromoteRequested, "promote")])
    def test_the_author_cannot_resume_or_promote_their_own_release(self, command, verb):
        saga = paused(author="carol")
        d = operate(saga, signed(command(release_id=RID, actor="carol", reason="r")))
        assert_refused(d, saga, "carol", f"the author of a change cannot {verb} it")

    def test_the_groups_per_action_come_from_the_catalog_entry_the_release_started_with(self):
        entry = ENTRY.model_copy(update={"approvers": Approvers(group="shop-approvers", actions={"pause": ["sre"]})})
        saga = run_until(domain.start(candidate(), entry, NOW, {}).saga, "verify-canary-10")
        pause = signed(PauseRequested(release_id=RID, actor="alice", reason="r"))
        assert_refused(operate(saga, pause), saga, "alice", "not in the sre group that may pause")
        sre = control.Signer(None, frozenset({"sre"}))
        assert domain.handle(saga, pause, NOW, signer=sre).saga.state is ReleaseState.PAUSED

    def test_a_release_started_before_the_catalog_named_groups_gets_the_defaults(self):
        saga = at_canary().model_copy(update={"operators": None})
        assert operate(saga, signed(PromoteRequested(release_id=RID, actor="dave", reason="r"))).saga.promote_full
        assert not operate(saga, signed(PromoteRequested(release_id=RID, actor="alice", reason="r"))).saga.promote_full

    def test_the_hold_point_names_the_group_that_decides(self):
        entry = ENTRY.model_copy(update={"dr": ENTRY.dr.model_copy(update={"hold_point": True})})
        saga = run_until(domain.start(candidate(), entry, NOW, {}).saga, "verify-staging")
        saga = run_until(domain.handle(saga, answer(saga), NOW).saga, "gate-production")
        d = domain.handle(saga, answer(saga), NOW)
        assert d.saga.waiting_for == "hold-production"
        assert any("waiting for a go or no-go from shop-approvers" in t.reason for t in d.transitions)


class TestResumeByApproval:
    def test_an_approval_from_outside_the_resume_group_is_kept_but_does_not_resume(self):
        d = operate(paused(), signed(ApprovalGiven(release_id=RID, actor="dave", reason="r", kind="exception")))
        assert d.saga.state is ReleaseState.PAUSED and not d.commands
        assert [a.actor for a in d.saga.approvals] == ["dave"]
        assert "does not resume the release: not in the shop-approvers group" in d.transitions[-1].reason

    def test_an_approval_too_old_to_resume_is_kept_but_does_not_resume(self):
        old = signed(ApprovalGiven(release_id=RID, actor="alice", reason="r"), at=NOW - timedelta(minutes=11))
        d = operate(paused(), old)
        assert d.saga.state is ReleaseState.PAUSED and [a.actor for a in d.saga.approvals] == ["alice"]
        assert "does not resume the release: signature expired" in d.transitions[-1].reason

    def test_a_fresh_approval_from_the_approver_group_resumes(self):
        d = operate(paused(), signed(ApprovalGiven(release_id=RID, actor="bob", reason="looked fine")))
        assert d.saga.state is ReleaseState.RUNNING and d.transitions[0].reason == "resumed by bob: looked fine"


class TestCatalogGroups:
    def test_by_default_approvers_and_release_managers_stop_approvers_go_on_and_release_managers_promote(self):
        actions = Approvers(group="shop-approvers", exception_group="release-managers").actions
        assert {a: actions.groups(a) for a in ("abort", "pause", "resume", "promote", "go")} == {
            "abort": {"shop-approvers", "release-managers"},
            "pause": {"shop-approvers", "release-managers"},
            "resume": {"shop-approvers"},
            "promote": {"release-managers"},
            "go": {"shop-approvers"},
        }

    def test_the_shop_entry_spells_out_the_defaults_and_lets_the_on_call_operators_stop_a_release(self):
        defaults = Approvers(group=ENTRY.approvers.group, exception_group=ENTRY.approvers.exception_group).actions
        on_call = {"releasegate-operators"}
        assert set(ENTRY.approvers.actions.abort or ()) == set(defaults.abort or ()) | on_call
        assert set(ENTRY.approvers.actions.pause or ()) == set(defaults.pause or ()) | on_call
        for act in ("resume", "promote", "go"):
            assert ENTRY.approvers.actions.groups(act) == defaults.groups(act), act


class TestSignedFieldsInTheContract:
    @pytest.mark.parametrize(
        "field,value", [("nonce", "not-hex"), ("nonce", "ab"), ("nonce", "a" * 65), ("keyid", "k"), ("keyid", "A" * 64)]
    )
    def test_a_nonce_or_key_id_that_is_not_bounded_hex_is_refused(self, field, value):
        with pytest.raises(ValidationError, match=field):
            AbortRequested(release_id=RID, actor="carol", reason="r", **{field: value})


@pytest.fixture
def sent(monkeypatch) -> list:
    """What the CLI would publish on release.control; the policies are the repository's."""
    events: list = []

    async def control_topic(_settings, event) -> None:
        events.append(event)

    monkeypatch.setattr(client, "control", control_topic)
    monkeypatch.setattr(cli, "_settings", lambda: ServiceSettings(policy_dir=REPO / "policies"))
    monkeypatch.setattr(cli, "_wait_for_release", lambda _rid: None)
    monkeypatch.delenv("RG_OPERATOR_KEY", raising=False)
    return events


def run_cli(*args: str):
    return CliRunner().invoke(cli.app, list(args))


class TestCliSigning:
    def test_an_abort_from_the_cli_is_signed_by_the_keys_owner_and_accepted_by_the_coordinator(self, sent):
        result = run_cli("abort", RID, "--reason", "stop it", "--key", str(KEYS / "carol.key"))
        assert result.exit_code == 0, result.output
        (event,) = sent
        assert isinstance(event, AbortRequested) and event.actor == "carol" and len(event.nonce) == 32
        d = operate(at_canary(), event, event.signed_at)
        assert d.saga.state is ReleaseState.ROLLING_BACK

    @pytest.mark.parametrize(
        "args,who,state",
        [(("pause",), "dave", ReleaseState.PAUSED), (("promote", "--full"), "carol", ReleaseState.RUNNING)],
    )
    def test_pause_and_promote_from_the_cli_round_trip(self, sent, args, who, state):
        result = run_cli(args[0], RID, *args[1:], "--reason", "r", "--key", str(KEYS / f"{who}.key"))
        assert result.exit_code == 0, result.output
        (event,) = sent
        d = operate(at_canary(), event, event.signed_at)
        assert d.saga.state is state and "refused" not in d.transitions[0].reason

    def test_resume_from_the_cli_round_trips(self, sent):
        assert run_cli("resume", RID, "--reason", "r", "--key", str(KEYS / "alice.key")).exit_code == 0
        (event,) = sent
        assert operate(paused(), event, event.signed_at).saga.state is ReleaseState.RUNNING

    def test_an_approval_from_the_cli_carries_a_nonce_the_gatekeeper_re_verifies(self, sent):
        result = run_cli("approve", RID, "--reason", "reviewed", "--key", str(KEYS / "bob.key"))
        assert result.exit_code == 0, result.output
        (event,) = sent
        assert event.actor == "bob" and event.nonce
        people = identity.Identities.load(REPO / "policies" / "identities.yaml")
        assert identity.verify_approval(people, release_id=RID, **event.signed().model_dump()) is None

    def test_an_actor_named_with_another_persons_key_is_refused_by_the_coordinator(self, sent):
        assert (
            run_cli("abort", RID, "--reason", "r", "--key", str(KEYS / "carol.key"), "--actor", "alice").exit_code == 0
        )
        (event,) = sent
        saga = at_canary()
        assert_refused(
            operate(saga, event, event.signed_at), saga, "alice", "signature does not verify with alice's key"
        )

    def test_no_control_message_without_a_key(self, sent):
        result = run_cli("abort", RID, "--reason", "r")
        assert result.exit_code != 0 and "--key" in result.output and sent == []

    def test_a_key_nobody_has_needs_an_actor(self, sent, tmp_path):
        key, _ = supply_chain.keygen(tmp_path, "mallory")
        result = run_cli("pause", RID, "--reason", "r", "--key", str(key))
        assert result.exit_code == cli.EXIT_ERROR and "--actor" in result.output and sent == []
