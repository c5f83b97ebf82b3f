"""Incidents: a release the saga rolls back opens an incident with what was learnt, in the decision that ends it;
signed operator commands add and close its follow-ups (refused unsigned, forged, replayed, from outside the
catalog's group, closed by the change's author); the production gate is told the service's open follow-ups."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts.events import (
    AbortRequested,
    FollowupAdded,
    FollowupClosed,
    OpenFollowup,
    ReleaseState,
    RollbackFinished,
    Verdict,
)
from releasegate_cli import incidents as cli_incidents
from releasegate_platform import identity
from services.coordinator import control, incidents
from services.coordinator import saga as domain
from tests.support.gatekeeper import CONTENT_CHANGE, OUTSIDE_FREEZE, World, outcome
from tests.support.saga import ENTRY, KEYS, NOW, PEOPLE, answer, candidate, operate, run_until, signed, with_migrations

RID = "rel-1"


def compensated(d: domain.Decision) -> domain.Decision:
    """Answer each compensation the saga asks for as the rollback service would, until the release ends."""
    while d.saga.state is ReleaseState.ROLLING_BACK:
        comp = next(c for c in d.saga.compensations if c.id == d.saga.waiting_for)
        done = RollbackFinished(
            release_id=d.saga.release_id,
            step_id=comp.id,
            environment=comp.environment,
            succeeded=True,
            reason="traffic back on stable",
        )
        d = domain.handle(d.saga, done, NOW)
    return d


def rolled_back_at(step_id: str = "verify-canary-internal", saga: domain.Saga | None = None) -> domain.Decision:
    saga = run_until(saga or domain.start(candidate(), ENTRY, NOW, {}).saga, step_id)
    return compensated(domain.handle(saga, answer(saga, verdict=Verdict.FAIL), NOW))


def add(actor: str = "alice", *, key: str | None = None, severity: str = "high", owner: str = "shop-approvers"):
    return signed(
        FollowupAdded(
            release_id=RID,
            actor=actor,
            reason="v3 broke non-Visa cards and staging never saw one",
            kind="verifier",
            severity=severity,
            owner=owner,
            title="staging smoke with the production card mix",
        ),
        key=key,
    )


def close(number: int = 1, actor: str = "carol", *, key: str | None = None, at=NOW):
    return signed(
        FollowupClosed(release_id=RID, actor=actor, reason="card-mix verifier in staging", followup=number),
        key=key,
        at=at,
    )


def follow(saga: domain.Saga, command, *, replayed: bool = False, owner_known: bool = True) -> domain.Decision:
    return domain.handle(
        saga,
        command,
        NOW,
        signer=control.signer(PEOPLE, command),
        replayed=replayed,
        owner_known=owner_known,
    )


def assert_refused(d: domain.Decision, before: domain.Saga, actor: str, why: str) -> None:
    """Refused: one audit entry naming the actor and the reason; the saga, its incident and its follow-ups as they
    were, and nothing for the incident tables to write."""
    assert d.saga == before and not d.commands and not d.incident_changed
    (t,) = d.transitions
    assert t.actor == actor and "refused" in t.reason and why in t.reason, t.reason


class TestAnIncidentOpensWithWhatWasLearnt:
    def test_a_canary_rolled_back_by_a_verdict_opens_an_incident_with_the_failing_kpi_and_its_verifier(self):
        d = rolled_back_at("verify-canary-internal")
        s = d.saga
        assert s.state is ReleaseState.ROLLED_BACK and d.incident_changed
        incident = s.incident
        assert incident is not None and incident.outcome is ReleaseState.ROLLED_BACK
        f = incident.findings
        assert f["step"] == "verify-canary-internal" and f["environment"] == "production"
        assert f["verifier"] == "business-kpis"
        assert f["segments"] == ["initech"], "v3 failed while it served only the internal tenant"
        (kpi,) = f["kpis"]
        assert (kpi["name"], kpi["candidate"], kpi["baseline"]) == ("checkout_success_rate", 0.5, 0.98)
        assert f["candidate_version"] == "v2" and f["stable_version"] == "v1"
        # opened in the decision that ended the release: the terminal transition carries it for the timeline
        (end,) = [t for t in d.transitions if t.state is ReleaseState.ROLLED_BACK and t.step is None]
        assert end.evidence["incident"]["findings"]["verifier"] == "business-kpis"
        assert "caught by business-kpis" in end.evidence["incident"]["described"]
        assert "checkout_success_rate 0.5 vs stable 0.98" in end.evidence["incident"]["described"]

    def test_the_weight_the_candidate_had_when_it_failed_is_recorded(self):
        f = rolled_back_at("verify-canary-50").saga.incident.findings
        assert (f["step"], f["weight"]) == ("verify-canary-50", 50)

    def test_the_migrations_the_release_carried_are_named(self):
        f = rolled_back_at("verify-canary-internal", with_migrations()).saga.incident.findings
        assert [m["name"] for m in f["migrations"]] == ["0003_backfill.sql"]

    def test_a_failed_compensation_opens_an_incident_too(self):
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "verify-canary-internal")
        d = domain.handle(saga, answer(saga, verdict=Verdict.FAIL), NOW)
        comp = d.saga.compensations[0]
        failed = RollbackFinished(
            release_id=RID, step_id=comp.id, environment=comp.environment, succeeded=False, reason="haproxy gone"
        )
        d = domain.handle(d.saga, failed, NOW)
        assert d.saga.state is ReleaseState.ROLLBACK_FAILED and d.incident_changed
        assert d.saga.incident.outcome is ReleaseState.ROLLBACK_FAILED
        assert d.saga.incident.findings["verifier"] == "business-kpis"

    def test_a_gate_rejection_and_an_abort_open_none(self):
        saga = domain.start(candidate(), ENTRY, NOW, {}).saga
        rejected = domain.handle(saga, answer(saga, ok=False), NOW)
        assert rejected.saga.state is ReleaseState.REJECTED and rejected.saga.incident is None
        at_canary = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "verify-canary-10")
        aborted = compensated(operate(at_canary, signed(AbortRequested(release_id=RID, actor="carol", reason="r"))))
        assert aborted.saga.state is ReleaseState.ABORTED and aborted.saga.incident is None
        assert not aborted.incident_changed


class TestFollowups:
    def test_an_approver_adds_a_signed_follow_up_and_another_closes_it(self):
        s = rolled_back_at().saga
        d = follow(s, add("alice"))
        assert d.incident_changed and d.saga.state is ReleaseState.ROLLED_BACK
        (f,) = d.saga.incident.followups
        assert (f.id, f.kind, f.severity, f.owner, f.status, f.added_by) == (
            1,
            "verifier",
            "high",
            "shop-approvers",
            "open",
            "alice",
        )
        assert [o.followup for o in incidents.open_followups(RID, d.saga.incident)] == [1]
        assert "follow-up 1 added by alice" in d.transitions[-1].reason
        closed = follow(d.saga, close(1, "carol"))
        (f,) = closed.saga.incident.followups
        assert (f.status, f.closed_by, f.close_reason) == ("closed", "carol", "card-mix verifier in staging")
        assert incidents.open_followups(RID, closed.saga.incident) == []

    def test_an_unsigned_follow_up_is_refused(self):
        s = rolled_back_at().saga
        unsigned = FollowupAdded(
            release_id=RID, actor="alice", reason="r", kind="test", severity="high", owner="alice", title="a test"
        )
        assert_refused(follow(s, unsigned), s, "alice", identity.NO_SIGNATURE)

    def test_a_close_signed_with_someone_elses_key_is_refused(self):
        s = follow(rolled_back_at().saga, add()).saga
        assert_refused(follow(s, close(1, "carol", key="dev")), s, "carol", "signature does not verify")

    def test_a_close_whose_number_was_changed_after_signing_is_refused(self):
        s = follow(follow(rolled_back_at().saga, add()).saga, add(severity="low")).saga
        tampered = FollowupClosed.model_validate({**close(2).model_dump(), "followup": 1})
        assert_refused(follow(s, tampered), s, "carol", "signature does not verify")

    def test_someone_outside_the_catalogs_group_may_neither_add_nor_close(self):
        s = rolled_back_at().saga
        assert_refused(follow(s, add("dev")), s, "dev", "not in the release-managers or shop-approvers group")
        s = follow(s, add()).saga
        assert_refused(follow(s, close(1, "dev")), s, "dev", "may close follow-ups of incidents of shop")

    def test_a_replayed_close_is_refused(self):
        s = follow(rolled_back_at().saga, add()).saga
        assert_refused(follow(s, close(), replayed=True), s, "carol", "replayed command")

    def test_an_old_close_is_refused(self):
        s = follow(rolled_back_at().saga, add()).saga
        old = close(at=NOW - control.COMMAND_VALIDITY - timedelta(seconds=1))
        assert_refused(follow(s, old), s, "carol", "signature expired")

    def test_the_author_of_the_change_may_add_a_follow_up_but_not_close_one(self):
        saga = run_until(domain.start(candidate(author="bob"), ENTRY, NOW, {}).saga, "verify-canary-internal")
        s = compensated(domain.handle(saga, answer(saga, verdict=Verdict.FAIL), NOW)).saga
        s = follow(s, add("bob")).saga
        assert len(s.incident.followups) == 1
        assert_refused(follow(s, close(1, "bob")), s, "bob", "the author of a change cannot close a follow-up of it")

    def test_an_owner_releasegate_does_not_know_is_refused(self):
        s = rolled_back_at().saga
        assert_refused(follow(s, add(owner="mallory"), owner_known=False), s, "alice", "owner mallory is neither")

    def test_a_release_without_an_incident_takes_no_follow_up(self):
        promoted = domain.start(candidate(), ENTRY, NOW, {}).saga
        while not promoted.state.terminal:
            promoted = domain.handle(promoted, answer(promoted), NOW).saga
        assert promoted.state is ReleaseState.PROMOTED
        assert_refused(follow(promoted, add()), promoted, "alice", "has no incident")

    def test_closing_an_unknown_follow_up_is_refused_and_closing_twice_changes_nothing(self):
        s = follow(rolled_back_at().saga, add()).saga
        assert_refused(follow(s, close(7)), s, "carol", "has no such follow-up")
        s = follow(s, close(1)).saga
        again = follow(s, close(1, "alice"))
        assert (
            again.saga == s and not again.incident_changed and "closed already by carol" in again.transitions[0].reason
        )

    @pytest.mark.parametrize(
        ("field", "value", "why"),
        [
            ("kind", "rumour", "kind"),
            ("severity", "critical", "severity"),
            ("owner", "Not A Name", "owner"),
            ("title", "x", "title"),
            ("title", "y" * 201, "title"),
            ("title", "two\nlines", "title"),
        ],
    )
    def test_every_field_is_validated_by_the_contract(self, field, value, why):
        good = {
            "release_id": RID,
            "actor": "alice",
            "reason": "r",
            "kind": "test",
            "severity": "high",
            "owner": "alice",
            "title": "a test",
        }
        with pytest.raises(ValueError, match=why):
            FollowupAdded.model_validate({**good, field: value})


class TestTheCommandLine:
    """`releasegate followup` refuses bad input before anything is signed or sent; `incident` renders the record."""

    def _run(self, *args: str):
        from typer.testing import CliRunner

        from releasegate_cli import main as cli

        return CliRunner().invoke(cli.app, list(args), env={"RELEASEGATE_API": ""})

    def test_an_unknown_kind_or_a_long_title_is_refused_with_the_field_named(self):
        key = str(KEYS / "alice.key")
        common = ["followup", "add", RID, "--owner", "alice", "--key", key, "--actor", "alice"]
        out = self._run(*common, "--kind", "rumour", "--severity", "high", "--title", "a test")
        assert out.exit_code == 2 and "invalid follow-up: kind" in out.output, out.output
        out = self._run(*common, "--kind", "test", "--severity", "high", "--title", "t" * 201)
        assert out.exit_code == 2 and "invalid follow-up: title" in out.output, out.output

    def test_a_follow_up_without_a_key_is_refused(self):
        out = self._run("followup", "close", RID, "1", "--reason", "done")
        assert out.exit_code == 2 and "--key" in out.output

    def test_with_api_the_command_goes_to_the_api_which_signs_it_for_the_login(self, monkeypatch):
        from releasegate_cli import api as remote

        calls = []

        def call(self, method, path, **kwargs):
            calls.append((method, path, kwargs.get("json")))
            return {"command_id": "event-9"}

        monkeypatch.setattr(remote.Api, "_call", call)
        monkeypatch.setenv("RG_API_TOKEN", "a-token")
        api = ("--api", "http://127.0.0.1:18800")
        add = self._run(*api, "followup", "add", RID, "--kind", "test", "--severity", "high", "--owner", "alice",
                        "--title", "a test")  # fmt: skip
        close = self._run(*api, "followup", "close", RID, "2", "--reason", "done")
        assert add.exit_code == 0 and close.exit_code == 0, add.output + close.output
        assert calls == [
            (
                "POST",
                f"/v1/releases/{RID}/followups",
                {"kind": "test", "severity": "high", "owner": "alice", "title": "a test", "reason": None},
            ),
            ("POST", f"/v1/releases/{RID}/followups/2/close", {"reason": "done"}),
        ]

    def test_the_incident_is_rendered_with_its_failure_verifier_kpis_and_follow_ups(self):
        s = follow(rolled_back_at().saga, add()).saga
        incident = s.incident.model_dump(mode="json")
        rows = {
            "release_id": RID,
            "service": "shop",
            "version": "v2",
            "outcome": "rolled_back",
            "summary": incident["summary"],
            "findings": incident["findings"],
            "opened_at": incident["opened_at"],
            "followups": [
                {**f, "followup_id": f["id"], "closed_at": None, "close_reason": None} for f in incident["followups"]
            ],
        }
        text = "\n".join(cli_incidents.render(rows))
        assert "verify-canary-internal in production serving only initech" in text
        assert "Caught by: business-kpis" in text
        assert "Failing KPI checkout_success_rate: candidate 0.5 (30 samples) vs stable 0.98 (200)" in text
        assert "#1 high verifier (shop-approvers): staging smoke with the production card mix — OPEN" in text


class TestTheProductionGate:
    """The gatekeeper's handler (real Rego policy, tests/support/gatekeeper.py) takes the coordinator's fact from
    the command; catalog/shop.yaml blocks production on open follow-ups of severity high."""

    def _told(self, world, *severities: str):
        req = world.request(CONTENT_CHANGE, "production")
        told = [
            OpenFollowup(
                release_id="shop-v3-1a2b3c4d",
                followup=n,
                kind="verifier",
                severity=severity,
                owner="shop-approvers",
                title=f"follow-up {n}",
            )
            for n, severity in enumerate(severities, start=1)
        ]
        return world.decide(req.model_copy(update={"open_followups": told}))

    def test_an_open_high_follow_up_blocks_with_its_incident_and_number_named(self, tmp_path):
        reply = self._told(World(tmp_path, OUTSIDE_FREEZE), "low", "high")
        assert not reply.passed and outcome(reply, "open_followups") == "deny"
        reason = next(c.reason for c in reply.checks if c.name == "open_followups")
        assert "shop-v3-1a2b3c4d#2 (high verifier, shop-approvers: follow-up 2)" in reason
        assert "#1" not in reason, "a low follow-up does not block the shop"

    def test_no_open_follow_up_of_a_blocking_severity_passes_the_rule(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        assert outcome(self._told(world, "low", "medium"), "open_followups") == "pass"
        assert outcome(self._told(world), "open_followups") == "pass"

    def test_a_production_gate_not_told_records_a_warning(self, tmp_path):
        world = World(tmp_path, OUTSIDE_FREEZE)
        reply = world.decide(world.request(CONTENT_CHANGE, "production"))
        assert outcome(reply, "open_followups") == "pass"
        assert any("open incident follow-ups; not checked" in w for w in reply.warnings)
