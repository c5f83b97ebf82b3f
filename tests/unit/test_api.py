"""The API's handlers on in-memory ports: who may see and do what, what a refused command leaves (nothing
published), the CI ingress's trust, the OpenAPI document in step with the code."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contracts.events import CandidateSubmitted, OperatorCommand
from releasegate_platform.oidc import Claims, TokenError
from services.api import ci, http, openapi
from services.api.access import Person
from services.api.live import StatusHub

REPO = Path(__file__).resolve().parents[2]
ISSUER = "http://127.0.0.1:19400"
PEOPLE = {
    "alice": ["shop-approvers", "releasegate-operators"],
    "carol": ["shop-approvers", "release-managers", "releasegate-operators"],
    "dev": ["developers", "releasegate-operators"],
    "vic": ["releasegate-viewers"],
    "nobody": [],
}
CI = {
    "gh-main": {"repository": "releasegate/sample-shop", "ref": "refs/heads/main", "ref_type": "branch"},
    "gh-fork": {"repository": "mallory/sample-shop", "ref": "refs/heads/main", "ref_type": "branch"},
    "gh-branch": {"repository": "releasegate/sample-shop", "ref": "refs/heads/wip", "ref_type": "branch"},
    "gl-main": {"project_path": "releasegate/sample-shop", "ref": "main", "ref_type": "branch"},
}
CANDIDATE = json.loads((REPO / "examples" / "candidates" / "shop-v2.json").read_text())


class Tokens:
    """Each token is a name: a person's or a CI job's; anything else is refused."""

    async def verify(self, token: str) -> Claims:
        if token in PEOPLE:
            raw = {"iss": ISSUER, "sub": f"sub-{token}", "preferred_username": token, "groups": PEOPLE[token]}
            return Claims(f"sub-{token}", token, frozenset(PEOPLE[token]), raw)
        if token in CI:
            raw = {"iss": ISSUER, "sub": f"repo:{token}", **CI[token]}
            return Claims(f"repo:{token}", f"repo:{token}", frozenset(), raw)
        raise TokenError("signature does not verify")


class Commands:
    def __init__(self) -> None:
        self.given: list[tuple[str, str, Person, str]] = []
        self.submitted: list[CandidateSubmitted] = []
        self.followups: list[tuple[OperatorCommand, Person]] = []

    async def give(self, action: str, release_id: str, person: Person, reason: str) -> str:
        self.given.append((action, release_id, person, reason))
        return "event-1"

    async def submit(self, candidate: CandidateSubmitted) -> str:
        self.submitted.append(candidate)
        return "event-2"

    async def followup(self, command: OperatorCommand, person: Person) -> str:
        self.followups.append((command, person))
        return "event-3"


def saga(state: str, author: str = "dev") -> dict[str, Any]:
    return {
        "candidate": {"author": author},
        "config": {"approver_group": "shop-approvers"},
        "operators": {
            "abort": ["shop-approvers", "release-managers", "releasegate-operators"],
            "pause": ["shop-approvers", "release-managers", "releasegate-operators"],
            "resume": ["shop-approvers"],
            "promote": ["release-managers"],
            "go": ["shop-approvers"],
        },
        "plan": [{"id": "canary-10"}],
        "waiting_for": "gate-production",
    }


class ReadModels:
    def __init__(self, state: str = "awaiting_approval") -> None:
        self.state = state

    async def releases(self, limit: int, service: str | None = None) -> list[dict[str, Any]]:
        return [{"release_id": "shop-v2-1a2b3c4d", "state": self.state}][:limit]

    async def release(self, release_id: str) -> dict[str, Any] | None:
        if release_id != "shop-v2-1a2b3c4d":
            return None
        return {"release": {"release_id": release_id, "state": self.state}, "timeline": []}

    async def saga_rules(self, release_id: str) -> tuple[str, str, Mapping[str, Any]] | None:
        return ("shop", self.state, saga(self.state)) if release_id == "shop-v2-1a2b3c4d" else None

    async def verifiers(self) -> list[dict[str, Any]]:
        return []

    async def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        return []

    async def pending_approvals(self) -> list[dict[str, Any]]:
        return []


def client(state: str = "awaiting_approval") -> tuple[TestClient, Commands]:
    commands = Commands()

    async def calendar() -> dict[str, Any]:
        return {"calendar": {}}

    ports = http.Ports(
        read_models=ReadModels(state),
        commands=commands,
        tokens=Tokens(),
        ci_trust=lambda: ci.load(REPO / "policies" / "trust-root.yaml"),
        approver_groups=lambda: frozenset({"shop-approvers", "release-managers"}),
        calendar=calendar,
        hub=StatusHub(),
        issuer=ISSUER,
        public_url="http://127.0.0.1:18800",
        dashboard_client="releasegate-dashboard",
        audience="releasegate",
    )
    return TestClient(http.build(ports)), commands


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestAuthentication:
    def test_no_token_is_401_with_a_bearer_challenge(self):
        c, _ = client()
        r = c.get("/v1/releases")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")

    def test_a_refused_token_says_why(self):
        c, _ = client()
        r = c.get("/v1/releases", headers=auth("forged"))
        assert r.status_code == 401 and "signature does not verify" in r.json()["detail"]

    def test_a_person_in_no_group_sees_nothing(self):
        c, _ = client()
        assert c.get("/v1/releases", headers=auth("nobody")).status_code == 403

    def test_a_viewer_reads_releases_and_learns_their_roles(self):
        c, _ = client()
        assert c.get("/v1/releases", headers=auth("vic")).status_code == 200
        assert c.get("/v1/me", headers=auth("vic")).json()["roles"] == ["viewer"]
        assert c.get("/v1/me", headers=auth("carol")).json()["roles"] == ["viewer", "operator", "approver"]

    def test_a_ci_token_cannot_act_as_a_person(self):
        c, commands = client()
        r = c.post("/v1/releases/shop-v2-1a2b3c4d/actions/approve", json={"reason": "x"}, headers=auth("gh-main"))
        assert r.status_code == 403 and "CI token" in r.json()["detail"] and not commands.given

    def test_every_answer_carries_a_strict_content_security_policy(self):
        c, _ = client()
        policy = c.get("/healthz").headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and ISSUER in policy


class TestOperatorCommands:
    def test_an_approver_approves_and_the_command_names_them(self):
        c, commands = client()
        r = c.post("/v1/releases/shop-v2-1a2b3c4d/actions/approve", json={"reason": "reviewed"}, headers=auth("alice"))
        assert r.status_code == 202 and r.json()["command_id"] == "event-1"
        action, release, person, reason = commands.given[0]
        assert (action, release, person.username, reason) == ("approve", "shop-v2-1a2b3c4d", "alice", "reviewed")
        assert "shop-approvers" in person.groups

    def test_the_author_cannot_approve_and_nothing_is_published(self):
        c, commands = client()
        r = c.post("/v1/releases/shop-v2-1a2b3c4d/actions/approve", json={"reason": "mine"}, headers=auth("dev"))
        assert r.status_code == 403 and "author of a change cannot approve" in r.json()["detail"]
        assert commands.given == []

    def test_a_viewer_cannot_abort(self):
        c, commands = client("running")
        r = c.post("/v1/releases/shop-v2-1a2b3c4d/actions/abort", json={"reason": "x"}, headers=auth("vic"))
        assert r.status_code == 403 and "releasegate-operators" in r.json()["detail"] and not commands.given

    def test_an_operator_may_abort_and_pause_but_not_promote(self):
        c, commands = client("running")
        for action, status in (("abort", 202), ("pause", 202), ("promote", 403)):
            r = c.post(f"/v1/releases/shop-v2-1a2b3c4d/actions/{action}", json={"reason": "x"}, headers=auth("dev"))
            assert r.status_code == status, action
        assert [g[0] for g in commands.given] == ["abort", "pause"]

    def test_nothing_can_be_done_on_an_ended_release(self):
        c, commands = client("promoted")
        r = c.post("/v1/releases/shop-v2-1a2b3c4d/actions/abort", json={"reason": "x"}, headers=auth("carol"))
        assert r.status_code == 403 and "ended" in r.json()["detail"] and not commands.given

    def test_the_release_page_lists_the_actions_the_caller_may_take(self):
        c, _ = client()
        assert "approve" in c.get("/v1/releases/shop-v2-1a2b3c4d", headers=auth("alice")).json()["actions"]
        body = c.get("/v1/releases/shop-v2-1a2b3c4d", headers=auth("dev")).json()
        assert "approve" not in body["actions"] and "abort" in body["actions"]
        assert "author" in body["refusals"]["approve"]

    @pytest.mark.parametrize("path", ["/v1/releases/..%2F..%2Fetc/actions/abort", "/v1/releases/SHOP/actions/abort"])
    def test_release_ids_are_validated(self, path):
        c, commands = client("running")
        assert c.post(path, json={"reason": "x"}, headers=auth("carol")).status_code in (404, 422)
        assert not commands.given

    def test_an_unknown_action_is_refused(self):
        c, commands = client("running")
        r = c.post("/v1/releases/shop-v2-1a2b3c4d/actions/deploy", json={"reason": "x"}, headers=auth("carol"))
        assert r.status_code == 422 and not commands.given


class TestCiIngress:
    def test_a_trusted_github_job_submits_and_gets_the_release_url(self):
        c, commands = client()
        r = c.post("/v1/candidates", json=CANDIDATE, headers=auth("gh-main"))
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["release_id"].startswith("shop-v2-") and body["url"].endswith(f"/releases/{body['release_id']}")
        assert commands.submitted[0].release_id == body["release_id"]

    def test_a_trusted_gitlab_job_submits(self):
        c, commands = client()
        assert c.post("/v1/candidates", json=CANDIDATE, headers=auth("gl-main")).status_code == 202

    @pytest.mark.parametrize(
        ("token", "why"), [("gh-fork", "may not submit shop candidates"), ("gh-branch", "may not submit")]
    )
    def test_a_fork_or_another_branch_submits_nothing(self, token, why):
        c, commands = client()
        r = c.post("/v1/candidates", json=CANDIDATE, headers=auth(token))
        assert r.status_code == 403 and why in r.json()["detail"] and not commands.submitted

    def test_a_candidate_claiming_another_source_is_refused(self):
        c, commands = client()
        other = {**CANDIDATE, "source": {**CANDIDATE["source"], "repository": "github.com/mallory/sample-shop"}}
        r = c.post("/v1/candidates", json=other, headers=auth("gh-main"))
        assert r.status_code == 403 and "may only submit builds of" in r.json()["detail"]
        assert not commands.submitted

    def test_a_trusted_pipeline_follows_the_release_it_may_submit_and_a_fork_does_not(self):
        c, _ = client("running")
        body = c.get("/v1/releases/shop-v2-1a2b3c4d", headers=auth("gh-main")).json()
        assert body["release"]["state"] == "running" and body["actions"] == []
        assert c.get("/v1/releases/shop-v2-1a2b3c4d", headers=auth("gh-fork")).status_code == 403
        assert c.get("/v1/releases", headers=auth("gh-main")).status_code == 403  # one release, not the list

    def test_a_person_cannot_submit(self):
        c, commands = client()
        r = c.post("/v1/candidates", json=CANDIDATE, headers=auth("carol"))
        assert r.status_code == 403 and not commands.submitted

    def test_an_invalid_candidate_is_422_with_the_reason(self):
        c, commands = client()
        r = c.post("/v1/candidates", json={**CANDIDATE, "artifact": {"digest": "md5:x"}}, headers=auth("gh-main"))
        assert r.status_code == 422 and "artifact" in r.json()["detail"] and not commands.submitted

    def test_gitlab_refs_are_normalised(self):
        assert ci.token_ref({"ref": "v1.2", "ref_type": "tag"}) == "refs/tags/v1.2"
        assert ci.token_ref({"ref": "main"}) is None


def test_the_committed_openapi_document_is_in_step_with_the_code():
    assert openapi.DOCUMENT.read_text() == openapi.render(), "run `python -m services.api.openapi`"


class TestReadModelShapes:
    def test_a_sequential_kpi_is_charted_against_one_over_alpha_and_a_threshold_against_its_bound(self):
        from services.api.read_models import kpi_row

        seq = kpi_row(
            {
                "rule": "mSPRT on Mann–Whitney AUC: estimate 0.49 vs boundary 0.65, Λ=40.7; fail if Λ ≥ 1/α = 20",
                "statistic": 40.7,
                "verdict": "pass",
                "baseline": 33.0,
                "candidate": 39.0,
                "baseline_samples": 178,
                "candidate_samples": 52,
            }
        )
        assert (seq["boundary"], seq["stable"], seq["stable_n"], seq["candidate_n"], seq["passed"]) == (
            20.0,
            33.0,
            178,
            52,
            True,
        )
        bound = kpi_row(
            {"rule": "checkout_success_rate: candidate 0.31 < min 0.8", "statistic": None, "verdict": "fail"}
        )
        assert bound["boundary"] == 0.8 and bound["passed"] is False

    def test_traffic_is_read_from_what_the_deployer_and_the_rollback_observed(self):
        from services.api.read_models import traffic

        rows = [
            {
                "at": "t1",
                "step": "canary-10",
                "reason": "done",
                "evidence": {"observed": {"weights": {"v1": 90, "v2": 10}}},
            },
            {"at": "t2", "step": "verify-canary-10", "reason": "passed", "evidence": {"kpis": []}},
            {
                "at": "t3",
                "step": "compensate:staging",
                "reason": "done",
                "evidence": {"observed": {"weights": {"v1": 100}}},
            },
        ]
        assert [(p["step"], p["environment"], p["weights"]) for p in traffic(rows)] == [
            ("canary-10", "production", {"v1": 90, "v2": 10}),
            ("compensate:staging", "staging", {"v1": 100}),
        ]


class TestIncidentFollowups:
    """Follow-ups through the API: signed by the API for the login (services/api/commands.py), refused early on the
    coordinator's rule (the catalog's `followup` groups; the author adds, never closes; only rolled-back releases)."""

    URL = "/v1/releases/shop-v2-1a2b3c4d/followups"
    BODY = {"kind": "verifier", "severity": "high", "owner": "shop-approvers", "title": "card mix in staging"}

    def test_an_approver_adds_a_follow_up_and_the_command_names_them(self):
        c, commands = client("rolled_back")
        r = c.post(self.URL, json=self.BODY, headers=auth("alice"))
        assert r.status_code == 202 and r.json()["command_id"] == "event-3"
        ((command, person),) = commands.followups
        assert (command.actor, command.kind, command.severity, command.title) == (
            "alice",
            "verifier",
            "high",
            "card mix in staging",
        )
        assert command.reason == "card mix in staging" and person.username == "alice"

    def test_someone_outside_the_groups_is_refused_and_nothing_is_published(self):
        c, commands = client("rolled_back")
        r = c.post(self.URL, json=self.BODY, headers=auth("vic"))
        assert r.status_code == 403 and "may add follow-ups of shop incidents" in r.json()["detail"]
        assert commands.followups == []

    def test_the_author_may_not_close_one(self):
        c, commands = client("rolled_back")
        r = c.post(f"{self.URL}/1/close", json={"reason": "done"}, headers=auth("dev"))
        assert r.status_code == 403 and "author of a change cannot close" in r.json()["detail"]
        r = c.post(f"{self.URL}/1/close", json={"reason": "done"}, headers=auth("carol"))
        assert r.status_code == 202 and commands.followups[0][0].followup == 1

    def test_a_release_that_was_not_rolled_back_has_no_incident(self):
        c, commands = client("promoted")
        r = c.post(self.URL, json=self.BODY, headers=auth("alice"))
        assert r.status_code == 403 and "only rolled-back releases" in r.json()["detail"] and not commands.followups

    def test_bad_fields_are_refused_before_anything_is_published(self):
        c, commands = client("rolled_back")
        for bad in ({"kind": "rumour"}, {"severity": "critical"}, {"owner": "Not A Name"}, {"title": "x" * 201}):
            assert c.post(self.URL, json={**self.BODY, **bad}, headers=auth("alice")).status_code == 422, bad
        assert c.post(f"{self.URL}/0/close", json={"reason": "r"}, headers=auth("carol")).status_code == 422
        assert commands.followups == []
