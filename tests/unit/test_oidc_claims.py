"""What a verified token's claims say: a person or a CI pipeline, which repository and ref, and why a token whose
claims are wrong is refused (releasegate_platform.oidc; signatures are exercised against the real provider in
tests/oidc)."""

from __future__ import annotations

import base64
import json

import pytest

from releasegate_platform.oidc import (
    Claims,
    TokenError,
    TokenVerifier,
    check_claims,
    ci_identity,
    claims_of,
    person,
    unverified_header,
)

ISSUER = "https://idp.example.test"
NOW = 1_800_000_000


def github(**changes) -> Claims:
    raw = {
        "sub": "repo:releasegate/sample-shop:ref:refs/heads/main",
        "repository": "releasegate/sample-shop",
        "repository_owner": "releasegate",
        "ref": "refs/heads/main",
        "ref_type": "branch",
        "sha": "3f1c9a7be2d04c58a1e6b7f90d2c4e8a6b1f3d57",
        "actor": "dev",
        "workflow": "release",
        "run_id": "1041",
        "job_workflow_ref": "releasegate/sample-shop/.github/workflows/release.yml@refs/heads/main",
    }
    raw.update(changes)
    return claims_of({k: v for k, v in raw.items() if v is not None})


def gitlab(**changes) -> Claims:
    raw = {
        "sub": "project_path:releasegate/sample-shop:ref_type:branch:ref:main",
        "project_path": "releasegate/sample-shop",
        "namespace_path": "releasegate",
        "ref": "main",
        "ref_type": "branch",
        "ref_protected": "true",
        "pipeline_id": "2041",
        "user_login": "dev",
    }
    raw.update(changes)
    return claims_of({k: v for k, v in raw.items() if v is not None})


def payload(**changes) -> dict:
    base = {"iss": ISSUER, "aud": "releasegate", "sub": "alice", "iat": NOW - 10, "exp": NOW + 300}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def refusal(**changes) -> str:
    with pytest.raises(TokenError) as caught:
        check_claims(payload(**changes), issuer=ISSUER, audience="releasegate", leeway=30, now=NOW)
    return caught.value.reason


class TestCiIdentity:
    def test_a_github_actions_token_names_its_host_qualified_repository_and_ref(self) -> None:
        ci = ci_identity(github())
        assert (ci.shape, ci.repository, ci.ref) == ("github", "github.com/releasegate/sample-shop", "refs/heads/main")
        assert (ci.commit, ci.actor) == ("3f1c9a7be2d04c58a1e6b7f90d2c4e8a6b1f3d57", "dev")
        assert ci.subject == "repo:releasegate/sample-shop:ref:refs/heads/main"

    def test_the_host_comes_from_configuration(self) -> None:
        assert (
            ci_identity(github(), github_host="github.acme.test").repository
            == "github.acme.test/releasegate/sample-shop"
        )
        assert ci_identity(gitlab(), gitlab_host="git.acme.test").repository == "git.acme.test/releasegate/sample-shop"

    def test_a_gitlab_branch_becomes_a_refs_heads_ref(self) -> None:
        ci = ci_identity(gitlab())
        assert (ci.shape, ci.repository, ci.ref, ci.actor) == (
            "gitlab",
            "gitlab.com/releasegate/sample-shop",
            "refs/heads/main",
            "dev",
        )

    def test_a_gitlab_tag_becomes_a_refs_tags_ref(self) -> None:
        claims = gitlab(sub="project_path:releasegate/sample-shop:ref_type:tag:ref:v1.2", ref="v1.2", ref_type="tag")
        assert ci_identity(claims).ref == "refs/tags/v1.2"

    def test_a_gitlab_project_in_a_subgroup_keeps_its_full_path(self) -> None:
        claims = gitlab(
            sub="project_path:acme/retail/shop:ref_type:branch:ref:main",
            project_path="acme/retail/shop",
            namespace_path="acme/retail",
        )
        assert ci_identity(claims).repository == "gitlab.com/acme/retail/shop"

    def test_a_persons_token_is_not_a_ci_token(self) -> None:
        alice = claims_of({"sub": "alice", "preferred_username": "alice", "groups": ["shop-approvers"]})
        with pytest.raises(TokenError, match="not a CI token: neither GitHub Actions"):
            ci_identity(alice)

    def test_a_token_of_both_shapes_is_refused(self) -> None:
        with pytest.raises(TokenError, match="both GitHub"):
            ci_identity(github(project_path="releasegate/sample-shop"))

    def test_a_github_subject_of_another_repository_is_refused(self) -> None:
        with pytest.raises(TokenError, match="is not of repository releasegate/sample-shop"):
            ci_identity(github(sub="repo:mallory/sample-shop:ref:refs/heads/main"))

    def test_a_github_owner_that_does_not_own_the_repository_is_refused(self) -> None:
        with pytest.raises(TokenError, match="does not own"):
            ci_identity(github(repository_owner="mallory"))

    @pytest.mark.parametrize("ref", ["main", "refs/pull/7/merge", ""])
    def test_a_github_ref_that_is_neither_branch_nor_tag_is_refused(self, ref: str) -> None:
        with pytest.raises(TokenError, match="GitHub CI token"):
            ci_identity(github(ref=ref))

    @pytest.mark.parametrize("repository", ["sample-shop", "a/b/c", "releasegate/sample shop", ""])
    def test_a_github_repository_that_is_not_owner_slash_repo_is_refused(self, repository: str) -> None:
        with pytest.raises(TokenError, match="GitHub CI token"):
            ci_identity(github(repository=repository, sub=f"repo:{repository}:ref:refs/heads/main"))

    def test_a_gitlab_ref_type_other_than_branch_or_tag_is_refused(self) -> None:
        with pytest.raises(TokenError, match="neither branch nor tag"):
            ci_identity(gitlab(ref_type="merge_request"))

    def test_a_gitlab_token_without_ref_type_is_refused(self) -> None:
        with pytest.raises(TokenError, match="without a ref_type claim"):
            ci_identity(gitlab(ref_type=None))

    def test_a_gitlab_subject_of_another_project_is_refused(self) -> None:
        with pytest.raises(TokenError, match="is not of project releasegate/sample-shop"):
            ci_identity(gitlab(sub="project_path:mallory/sample-shop:ref_type:branch:ref:main"))

    def test_a_gitlab_namespace_that_does_not_hold_the_project_is_refused(self) -> None:
        with pytest.raises(TokenError, match="does not hold"):
            ci_identity(gitlab(namespace_path="mallory"))

    def test_a_gitlab_ref_given_as_a_full_ref_is_refused(self) -> None:
        with pytest.raises(TokenError, match="bare branch or tag name"):
            ci_identity(gitlab(ref="refs/heads/main"))


class TestPersonOrPipeline:
    def test_a_person_is_named_by_preferred_username_with_their_groups(self) -> None:
        claims = claims_of({"sub": "u-17", "preferred_username": "carol", "groups": ["release-managers"]})
        assert person(claims) is claims
        assert (claims.subject, claims.username, claims.groups) == ("u-17", "carol", frozenset({"release-managers"}))

    def test_without_preferred_username_the_subject_is_the_name(self) -> None:
        assert claims_of({"sub": "u-17"}).username == "u-17"

    def test_a_ci_token_cannot_act_as_a_person(self) -> None:
        with pytest.raises(TokenError, match="a CI token cannot act as a person"):
            person(github())
        with pytest.raises(TokenError, match="a CI token cannot act as a person"):
            person(gitlab())

    @pytest.mark.parametrize("groups", ["shop-approvers", [1, 2], {"a": 1}])
    def test_groups_that_are_not_a_list_of_names_are_refused(self, groups) -> None:
        with pytest.raises(TokenError, match="not a list of names"):
            claims_of({"sub": "alice", "groups": groups})

    def test_the_raw_claims_cannot_be_changed(self) -> None:
        with pytest.raises(TypeError):
            github().raw["repository"] = "mallory/sample-shop"  # type: ignore[index]


class TestRegisteredClaims:
    def test_a_current_token_for_this_audience_passes(self) -> None:
        check_claims(payload(), issuer=ISSUER, audience="releasegate", leeway=30, now=NOW)
        check_claims(payload(aud=["other", "releasegate"]), issuer=ISSUER, audience="releasegate", leeway=30, now=NOW)

    def test_expiry_is_checked_with_the_leeway(self) -> None:
        check_claims(payload(exp=NOW - 29), issuer=ISSUER, audience="releasegate", leeway=30, now=NOW)
        assert refusal(exp=NOW - 31).startswith("token expired")

    def test_another_issuer_is_refused(self) -> None:
        assert refusal(iss="https://evil.example.test").startswith("wrong issuer")

    @pytest.mark.parametrize("aud", ["api", ["api"], None, 7])
    def test_another_audience_is_refused(self, aud) -> None:
        assert refusal(aud=aud).startswith("wrong audience")

    def test_a_token_not_yet_valid_is_refused(self) -> None:
        assert "nbf" in refusal(nbf=NOW + 120)

    def test_a_token_issued_in_the_future_is_refused(self) -> None:
        assert "iat" in refusal(iat=NOW + 120)

    @pytest.mark.parametrize("missing", ["exp", "iat"])
    def test_a_token_without_exp_or_iat_is_refused(self, missing: str) -> None:
        assert refusal(**{missing: None}) == f"token without {missing}"

    def test_a_time_that_is_not_a_number_is_refused(self) -> None:
        assert refusal(exp="tomorrow") == "exp is not a number"
        assert refusal(exp=True) == "exp is not a number"

    def test_a_token_without_subject_is_refused(self) -> None:
        assert refusal(sub=None) == "token without a subject (sub)"


class TestTokenShape:
    def test_a_token_that_is_not_three_segments_is_refused(self) -> None:
        with pytest.raises(TokenError, match="not a signed JWT"):
            unverified_header("abc.def")

    def test_a_header_that_is_not_json_is_refused(self) -> None:
        with pytest.raises(TokenError, match="header is not base64url JSON"):
            unverified_header("!!!.e30.sig")

    def test_an_oversized_token_is_refused_before_parsing(self) -> None:
        with pytest.raises(TokenError, match="longer than"):
            unverified_header("a" * 20_000)

    async def test_unsigned_and_symmetric_algorithms_are_refused_before_any_key_is_fetched(self) -> None:
        verifier = TokenVerifier("http://127.0.0.1:9", "releasegate")  # nothing listens there: no fetch happens
        try:
            for alg, reason in [
                ("none", "alg none"),
                ("HS256", "'HS256' not allowed"),
                ("RS512", "'RS512' not allowed"),
            ]:
                header = base64.urlsafe_b64encode(json.dumps({"alg": alg, "kid": "k"}).encode()).decode().rstrip("=")
                with pytest.raises(TokenError, match=reason):
                    await verifier.verify(f"{header}.e30.")
        finally:
            await verifier.aclose()

    def test_a_verifier_cannot_be_told_to_allow_a_symmetric_algorithm(self) -> None:
        with pytest.raises(ValueError, match="only asymmetric"):
            TokenVerifier(ISSUER, "releasegate", allowed_algs=("RS256", "HS256"))
