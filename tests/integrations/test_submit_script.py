"""The shared submit/watch script (integrations/scripts/releasegate_submit.py) against a local server playing the
API: the job's exit status says how the release ended, refusals show the API's reason, tokens never reach the log."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

from tests.integrations.conftest import CANDIDATE, FakeApi, fresh_token, job_env, jwt, release_status, run_script

VERIFYING = ("verifying", "verify-canary-10", "canary at 10%")
PROMOTED = ("promoted", "verify-canary-100", "all steps passed")
ROLLED_BACK = ("rolled_back", "verify-canary-10", "payment_authorization_rate 0.81 below 0.95 (p < 0.001)")


def watching(api: FakeApi, token: str, **extra: str) -> dict[str, str]:
    api.tokens.add(token)
    env = job_env(
        RELEASEGATE_API_URL=api.base,
        RELEASEGATE_CANDIDATE=str(CANDIDATE),
        RELEASEGATE_TOKEN=token,
        RELEASEGATE_POLL_SECONDS="0.05",
        RELEASEGATE_TIMEOUT_MINUTES="1",
    )
    return env | extra


def ends(api: FakeApi, final: tuple[str, str, str]) -> None:
    rid = api.release_id
    api.statuses = [
        (200, release_status(rid, [VERIFYING])),
        (200, release_status(rid, [VERIFYING])),
        (200, release_status(rid, [VERIFYING, final], terminal=True)),
    ]


def output(done) -> str:
    return done.stdout + done.stderr


class TestSubmitAndWatch:
    def test_exits_0_when_the_release_is_promoted(self, api, tmp_path):
        token = fresh_token()
        ends(api, PROMOTED)
        done = run_script(watching(api, token), tmp_path)
        assert done.returncode == 0, output(done)
        assert f"release {api.release_id}: {api.base}/releases/{api.release_id}" in done.stdout
        assert "final state: promoted" in done.stdout
        assert "reason: all steps passed" in done.stdout
        [submitted] = api.requests("POST", "/v1/candidates")
        assert submitted.body == CANDIDATE.read_bytes()
        polls = api.requests("GET", f"/v1/releases/{api.release_id}")
        assert len(polls) == 3
        assert {s.authorization for s in [submitted, *polls]} == {f"Bearer {token}"}
        assert token not in output(done)

    def test_exits_1_and_prints_the_reason_when_rolled_back(self, api, tmp_path):
        token = fresh_token()
        ends(api, ROLLED_BACK)
        done = run_script(watching(api, token), tmp_path)
        assert done.returncode == 1, output(done)
        assert "final state: rolled_back" in done.stdout
        assert f"reason: {ROLLED_BACK[2]}" in done.stdout
        assert token not in output(done)

    def test_a_refusal_exits_non_zero_with_the_apis_detail_and_watches_nothing(self, api, tmp_path):
        token = fresh_token()
        detail = (
            "a token of octo/fork at refs/heads/main from https://token.actions.githubusercontent.com may not "
            "submit shop candidates"
        )
        api.submit_answer = (403, {"detail": detail})
        done = run_script(watching(api, token), tmp_path)
        assert done.returncode == 3, output(done)
        assert f"refused (HTTP 403): {detail}" in done.stderr
        assert api.requests("GET", "/v1/releases/") == []
        assert token not in output(done)

    def test_a_token_the_api_does_not_accept_is_a_clear_error(self, api, tmp_path):
        env = watching(api, fresh_token())
        api.tokens.clear()
        done = run_script(env, tmp_path)
        assert done.returncode == 3, output(done)
        assert "did not accept the token (HTTP 401" in done.stderr
        assert env["RELEASEGATE_TOKEN"] not in output(done)

    def test_without_watching_exits_0_once_the_candidate_is_accepted(self, api, tmp_path):
        done = run_script(watching(api, fresh_token(), RELEASEGATE_WATCH="false"), tmp_path)
        assert done.returncode == 0, output(done)
        assert len(api.requests("POST", "/v1/candidates")) == 1
        assert api.requests("GET", "/v1/releases/") == []

    def test_stops_watching_at_the_timeout_and_says_the_release_carries_on(self, api, tmp_path):
        api.statuses = [(200, release_status(api.release_id, [VERIFYING]))]
        done = run_script(watching(api, fresh_token(), RELEASEGATE_TIMEOUT_MINUTES="0.005"), tmp_path)
        assert done.returncode == 4, output(done)
        assert "is still verifying after 0.005 minutes" in done.stderr

    def test_rides_out_an_unavailable_api_while_watching(self, api, tmp_path):
        rid = api.release_id
        api.statuses = [
            (200, release_status(rid, [VERIFYING])),
            (503, {"detail": "upstream restarting"}),
            (200, release_status(rid, [VERIFYING, PROMOTED], terminal=True)),
        ]
        done = run_script(watching(api, fresh_token()), tmp_path)
        assert done.returncode == 0, output(done)
        assert "HTTP 503: upstream restarting; still watching" in done.stdout

    def test_refuses_to_send_a_token_over_plain_http_to_another_host(self, api, tmp_path):
        env = watching(api, fresh_token(), RELEASEGATE_API_URL="http://releasegate.example.com")
        done = run_script(env, tmp_path)
        assert done.returncode == 2, output(done)
        assert "plain http only to a loopback address" in done.stderr
        assert api.seen == []

    def test_a_candidate_that_is_not_json_is_refused_before_anything_is_sent(self, api, tmp_path):
        bad = tmp_path / "candidate.json"
        bad.write_text("service: shop\n")
        done = run_script(watching(api, fresh_token(), RELEASEGATE_CANDIDATE=str(bad)), tmp_path)
        assert done.returncode == 2, output(done)
        assert "is not JSON" in done.stderr
        assert api.seen == []


class TestShortLivedTokens:
    def test_asks_for_a_new_token_after_a_401_and_carries_on(self, api, tmp_path):
        # a token command the way a CI platform hands out tokens: a new one each time, counted in a file
        issued = tmp_path / "issued"
        mint = tmp_path / "mint.py"
        secret = secrets.token_hex(8)
        mint.write_text(
            "import pathlib, sys\n"
            f"p = pathlib.Path({str(issued)!r})\n"
            "n = len(p.read_text().splitlines()) + 1 if p.exists() else 1\n"
            f"token = 'ci-{secret}-' + str(n)\n"
            "p.write_text((p.read_text() if p.exists() else '') + token + '\\n')\n"
            "print(token)\n"
        )
        first, second = f"ci-{secret}-1", f"ci-{secret}-2"
        ends(api, PROMOTED)
        env = watching(api, first, RELEASEGATE_TOKEN_COMMAND=f"{sys.executable} {mint}")
        del env["RELEASEGATE_TOKEN"]

        # the first token expires after the submission: the API then answers 401 until the job shows a new one
        original = api.answer

        def expiring(seen):
            if seen.method == "GET" and api.tokens == {first}:
                api.tokens = {second}
            return original(seen)

        api.answer = expiring
        done = run_script(env, tmp_path)
        assert done.returncode == 0, output(done)
        assert issued.read_text().split() == [first, second]
        authorizations = [s.authorization for s in api.seen]
        assert authorizations == [f"Bearer {first}", f"Bearer {first}", f"Bearer {second}", f"Bearer {second}"]
        assert first not in output(done) and second not in output(done)

    def test_a_literal_token_that_expired_cannot_be_renewed_and_the_job_says_so(self, api, tmp_path):
        expired = jwt({"aud": "releasegate", "exp": 1})
        done = run_script(watching(api, expired), tmp_path)
        assert done.returncode == 3, output(done)
        assert "expired and cannot be renewed" in done.stderr
        assert api.seen == []
        assert expired not in output(done)


class TestOnGitHubActions:
    def github_env(self, api: FakeApi, tmp_path: Path, **extra: str) -> dict[str, str]:
        env = job_env(
            GITHUB_ACTIONS="true",
            ACTIONS_ID_TOKEN_REQUEST_URL=f"{api.base}/github/token?api-version=2.0",
            ACTIONS_ID_TOKEN_REQUEST_TOKEN=api.github_request_token,
            GITHUB_OUTPUT=str(tmp_path / "output"),
            GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
            RELEASEGATE_API_URL=api.base,
            RELEASEGATE_CANDIDATE=str(CANDIDATE),
            RELEASEGATE_POLL_SECONDS="0.05",
            RELEASEGATE_TIMEOUT_MINUTES="1",
        )
        return env | extra

    def test_gets_the_oidc_token_for_the_audience_and_sets_outputs_and_summary(self, api, tmp_path):
        token = fresh_token()
        api.github_tokens = [token]
        api.tokens.add(token)
        ends(api, ROLLED_BACK)
        done = run_script(self.github_env(api, tmp_path, RELEASEGATE_AUDIENCE="releasegate-prod"), tmp_path)
        assert done.returncode == 1, output(done)
        [asked] = api.requests("GET", "/github/token")
        assert asked.query["audience"] == ["releasegate-prod"]
        assert asked.query["api-version"] == ["2.0"]
        outputs = (tmp_path / "output").read_text().splitlines()
        url = f"{api.base}/releases/{api.release_id}"
        assert outputs[-3:] == [f"release-id={api.release_id}", f"release-url={url}", "state=rolled_back"]
        summary = (tmp_path / "summary.md").read_text()
        assert "rolled_back" in summary and ROLLED_BACK[2] in summary and url in summary
        assert f"::error title=releasegate::release {api.release_id} ended rolled_back" in done.stdout
        # the token appears once: in the command that tells the runner to mask it
        assert [line for line in output(done).splitlines() if token in line] == [f"::add-mask::{token}"]
        assert api.github_request_token not in output(done)

    def test_asks_github_again_when_the_token_is_about_to_expire(self, api, tmp_path):
        # GitHub's tokens live minutes: one that expires within the renewal margin is replaced before use
        tokens = [fresh_token(ttl=10) for _ in range(4)]
        api.github_tokens = list(tokens)
        api.tokens.update(tokens)
        ends(api, PROMOTED)
        done = run_script(self.github_env(api, tmp_path), tmp_path)
        assert done.returncode == 0, output(done)
        assert len(api.requests("GET", "/github/token")) == 4
        assert [s.authorization for s in api.seen if s.path.startswith("/v1/")] == [f"Bearer {t}" for t in tokens]

    def test_without_id_token_permission_says_what_the_job_needs(self, api, tmp_path):
        env = self.github_env(api, tmp_path)
        del env["ACTIONS_ID_TOKEN_REQUEST_URL"], env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]
        done = run_script(env, tmp_path)
        assert done.returncode == 2, output(done)
        assert "permissions: id-token: write" in done.stderr
        assert api.seen == []

    def test_a_refusal_becomes_an_error_annotation_with_the_apis_detail(self, api, tmp_path):
        token = fresh_token()
        api.github_tokens = [token]
        api.tokens.add(token)
        api.submit_answer = (403, {"detail": "the candidate says it was built from refs/heads/dev"})
        done = run_script(self.github_env(api, tmp_path), tmp_path)
        assert done.returncode == 3, output(done)
        assert "::error title=releasegate::submitting the candidate: refused (HTTP 403): the candidate says" in (
            done.stderr
        )
        assert not (tmp_path / "output").exists()


def test_validation_errors_are_listed_field_by_field(api, tmp_path):
    token = fresh_token()
    api.submit_answer = (
        422,
        {"detail": [{"loc": ["body", "artifact", "digest"], "msg": "String should match pattern"}]},
    )
    done = run_script(watching(api, token), tmp_path)
    assert done.returncode == 3, output(done)
    assert "HTTP 422: body.artifact.digest: String should match pattern" in done.stderr
    assert json.loads(api.requests("POST", "/v1/candidates")[0].body)["version"] == "v2"
