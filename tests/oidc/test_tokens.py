"""Tokens of the real local OIDC provider: what people and CI pipelines get, that the API's verifier accepts them,
and that every forged, altered, stale or misdirected token is refused with the reason."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.jwk import RSAKey

from releasegate_platform.oidc import ProviderError, TokenError, TokenVerifier, TrustedIssuers, ci_identity, person
from tests.support.oidc import (
    DASHBOARD,
    DASHBOARD_REDIRECT,
    SignInError,
    ci_token,
    client_secret,
    discovery,
    password,
    person_token,
    pkce_pair,
)

GROUPS = {
    "alice": {"shop-approvers", "releasegate-operators"},
    "bob": {"shop-approvers", "releasegate-operators"},
    "carol": {"shop-approvers", "release-managers", "releasegate-operators"},
    "dave": {"release-managers", "releasegate-operators"},
    "dev": {"developers", "releasegate-operators"},
    "vic": {"releasegate-viewers"},
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parts(token: str) -> tuple[dict, dict]:
    header, payload, _ = token.split(".")
    return tuple(json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in (header, payload))


def provider_key(provider) -> RSAKey:
    return RSAKey.import_key((provider.secrets_dir / "oidc" / "signing-key.pem").read_bytes())


def sign(payload: dict, key: RSAKey, kid: str, alg: str = "RS256") -> str:
    return jws.serialize_compact({"alg": alg, "typ": "at+jwt", "kid": kid}, json.dumps(payload).encode(), key)


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenError) as caught:
        await verifier.verify(token)
    return caught.value.reason


async def login(provider, user: str, **kwargs) -> str:
    return await person_token(user, base=provider.issuer, directory=provider.secrets_dir, **kwargs)


async def ci(provider, client_id: str) -> str:
    return await ci_token(client_id, base=provider.issuer, directory=provider.secrets_dir)


class TestPeople:
    @pytest.mark.parametrize("user", sorted(GROUPS))
    async def test_a_person_signs_in_and_the_api_reads_their_name_and_groups(self, provider, verifier, user) -> None:
        claims = person(await verifier.verify(await login(provider, user)))
        assert (claims.subject, claims.username, claims.groups) == (user, user, frozenset(GROUPS[user]))
        assert not claims.is_ci

    async def test_the_access_token_is_a_short_lived_jwt_for_the_api(self, provider) -> None:
        header, payload = parts(await login(provider, "alice"))
        assert header["alg"] == "RS256" and header["kid"]
        assert (payload["iss"], payload["aud"], payload["client_id"]) == (provider.issuer, "releasegate", DASHBOARD)
        assert 300 <= payload["exp"] - payload["iat"] <= 600

    async def test_the_cli_signs_in_with_its_own_loopback_redirect(self, provider, verifier) -> None:
        token = await login(
            provider, "dave", client_id="releasegate-cli", redirect_uri="http://127.0.0.1:18899/callback"
        )
        claims = await verifier.verify(token)
        assert (claims.username, claims.raw["client_id"]) == ("dave", "releasegate-cli")

    async def test_a_wrong_password_gives_no_code(self, provider) -> None:
        with pytest.raises(SignInError, match=r"login of alice refused \(HTTP 401\)"):
            await login(provider, "alice", user_password=password("bob", provider.secrets_dir))

    async def test_an_unknown_person_gives_no_code(self, provider) -> None:
        with pytest.raises(SignInError, match=r"login of mallory refused \(HTTP 401\)"):
            await login(provider, "mallory", user_password="anything")

    async def test_a_redirect_uri_the_client_does_not_own_is_refused(self, provider) -> None:
        with pytest.raises(SignInError, match="no login form"):
            await login(provider, "alice", redirect_uri="http://127.0.0.1:18800/evil")

    async def test_an_authorization_request_without_pkce_is_refused(self, provider) -> None:
        async with httpx.AsyncClient(follow_redirects=False) as http:
            meta = await discovery(http, provider.issuer)
            response = await http.get(
                meta["authorization_endpoint"],
                params={
                    "client_id": DASHBOARD,
                    "response_type": "code",
                    "redirect_uri": DASHBOARD_REDIRECT,
                    "scope": "openid",
                },
            )
        assert response.status_code in (302, 303)
        assert response.headers["location"].startswith(DASHBOARD_REDIRECT)
        assert "error=invalid_request" in response.headers["location"]
        assert "requires+PKCE" in response.headers["location"]


class TestLoginForm:
    async def _login_page(self, http: httpx.AsyncClient, provider) -> httpx.Response:
        meta = await discovery(http, provider.issuer)
        _, challenge = pkce_pair()
        response = await http.get(
            meta["authorization_endpoint"],
            params={
                "client_id": DASHBOARD,
                "response_type": "code",
                "redirect_uri": DASHBOARD_REDIRECT,
                "scope": "openid profile groups",
                "state": "s",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
        )
        page = await http.get(response.headers["location"])
        assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers["content-security-policy"]
        return page

    async def test_a_login_post_without_the_forms_token_is_refused(self, provider) -> None:
        async with httpx.AsyncClient(base_url=provider.issuer, follow_redirects=False) as http:
            page = await self._login_page(http, provider)
            response = await http.post(
                str(page.url) + "/login",
                data={"username": "alice", "password": password("alice", provider.secrets_dir)},
            )
        assert response.status_code == 403 and "not sent from this page" in response.text
        assert "location" not in response.headers

    async def test_a_login_post_from_another_site_is_refused(self, provider) -> None:
        async with httpx.AsyncClient(base_url=provider.issuer, follow_redirects=False) as http:
            page = await self._login_page(http, provider)
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            response = await http.post(
                str(page.url) + "/login",
                data={"csrf": csrf, "username": "alice", "password": password("alice", provider.secrets_dir)},
                headers={"origin": "http://evil.example.test"},
            )
        assert response.status_code == 403 and "location" not in response.headers

    async def test_a_login_post_without_the_browsers_interaction_cookie_is_refused(self, provider) -> None:
        async with httpx.AsyncClient(base_url=provider.issuer, follow_redirects=False) as http:
            page = await self._login_page(http, provider)
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        async with httpx.AsyncClient(follow_redirects=False) as stranger:
            response = await stranger.post(
                str(page.url) + "/login",
                data={"csrf": csrf, "username": "alice", "password": password("alice", provider.secrets_dir)},
            )
        assert response.status_code == 400 and "expired or was started in another browser" in response.text
        assert "location" not in response.headers


class TestCiTokens:
    async def test_a_github_actions_token_names_the_shops_repository_and_main(self, provider, verifier) -> None:
        token = await ci(provider, "ci-github-shop")
        claims = await verifier.verify(token)
        identity = ci_identity(claims)
        assert (identity.shape, identity.repository, identity.ref) == (
            "github",
            "github.com/releasegate/sample-shop",
            "refs/heads/main",
        )
        assert claims.subject == "repo:releasegate/sample-shop:ref:refs/heads/main"
        for name in ("repository_owner", "sha", "workflow", "run_id", "actor", "job_workflow_ref", "ref_type"):
            assert claims.raw[name], name
        _, payload = parts(token)
        assert payload["exp"] - payload["iat"] <= 300

    async def test_a_gitlab_ci_token_names_the_project_and_its_branch(self, provider, verifier) -> None:
        claims = await verifier.verify(await ci(provider, "ci-gitlab-shop"))
        identity = ci_identity(claims)
        assert (identity.shape, identity.repository, identity.ref) == (
            "gitlab",
            "gitlab.com/releasegate/sample-shop",
            "refs/heads/main",
        )
        assert claims.subject == "project_path:releasegate/sample-shop:ref_type:branch:ref:main"
        assert (claims.raw["ref_protected"], claims.raw["namespace_path"]) == ("true", "releasegate")

    async def test_the_forks_token_names_the_fork(self, provider, verifier) -> None:
        identity = ci_identity(await verifier.verify(await ci(provider, "ci-github-fork")))
        assert identity.repository == "github.com/mallory/sample-shop"

    async def test_a_ci_token_cannot_act_as_a_person(self, provider, verifier) -> None:
        claims = await verifier.verify(await ci(provider, "ci-github-shop"))
        with pytest.raises(TokenError, match="a CI token cannot act as a person"):
            person(claims)

    async def test_a_persons_token_is_no_ci_token(self, provider, verifier) -> None:
        with pytest.raises(TokenError, match="not a CI token"):
            ci_identity(await verifier.verify(await login(provider, "dev")))

    async def test_a_ci_client_with_a_wrong_secret_gets_nothing(self, provider) -> None:
        async with httpx.AsyncClient() as http:
            meta = await discovery(http, provider.issuer)
            response = await http.post(
                meta["token_endpoint"],
                data={"grant_type": "client_credentials"},
                auth=("ci-github-shop", client_secret("ci-github-fork", provider.secrets_dir)),
            )
        assert response.status_code == 401 and response.json()["error"] == "invalid_client"

    async def test_the_dashboard_cannot_mint_tokens_by_client_credentials(self, provider) -> None:
        async with httpx.AsyncClient() as http:
            meta = await discovery(http, provider.issuer)
            response = await http.post(
                meta["token_endpoint"], data={"grant_type": "client_credentials", "client_id": DASHBOARD}
            )
        assert response.status_code in (400, 401)
        assert "access_token" not in response.json()


class TestAttacks:
    async def test_an_expired_token_is_refused(self, provider) -> None:
        token = await login(provider, "alice")
        _, payload = parts(token)
        later = TokenVerifier(provider.issuer, "releasegate", clock=lambda: payload["exp"] + 31)
        try:
            assert (await refused(later, token)).startswith("token expired")
        finally:
            await later.aclose()

    async def test_a_token_for_another_audience_is_refused(self, provider) -> None:
        other = TokenVerifier(provider.issuer, "payments-api")
        try:
            reason = await refused(other, await login(provider, "alice"))
        finally:
            await other.aclose()
        assert reason.startswith("wrong audience 'releasegate'")

    async def test_a_token_of_another_issuer_signed_with_a_trusted_key_is_refused(self, provider, verifier) -> None:
        header, payload = parts(await login(provider, "alice"))
        forged = sign({**payload, "iss": "https://evil.example.test"}, provider_key(provider), header["kid"])
        assert (await refused(verifier, forged)).startswith("wrong issuer 'https://evil.example.test'")

    async def test_an_unsigned_token_is_refused(self, provider, verifier) -> None:
        _, payload = parts(await login(provider, "vic"))
        unsigned = f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64(json.dumps(payload).encode())}."
        assert await refused(verifier, unsigned) == "unsigned token (alg none) refused"

    async def test_a_token_hmac_signed_with_the_public_key_is_refused(self, provider, verifier) -> None:
        header, payload = parts(await login(provider, "vic"))
        # the public key, exactly as a naive verifier would take it for an HMAC secret
        public_pem = provider_key(provider).as_pem(private=False)
        payload = {**payload, "groups": ["releasegate-operators"]}
        signing_input = (
            f"{b64(json.dumps({'alg': 'HS256', 'kid': header['kid']}).encode())}.{b64(json.dumps(payload).encode())}"
        )
        mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        assert "'HS256' not allowed" in await refused(verifier, f"{signing_input}.{b64(mac)}")

    async def test_a_token_signed_by_another_key_under_the_trusted_kid_is_refused(self, provider, verifier) -> None:
        header, payload = parts(await login(provider, "vic"))
        impostor = RSAKey.import_key(
            rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        forged = sign({**payload, "groups": ["releasegate-operators"]}, impostor, header["kid"])
        assert (await refused(verifier, forged)).startswith("signature does not verify")

    async def test_a_tampered_payload_is_refused(self, provider, verifier) -> None:
        token = await login(provider, "vic")
        head, _, signature = token.split(".")
        _, payload = parts(token)
        tampered = b64(json.dumps({**payload, "groups": ["shop-approvers", "releasegate-operators"]}).encode())
        assert (await refused(verifier, f"{head}.{tampered}.{signature}")).startswith("signature does not verify")
        assert (await verifier.verify(token)).groups == frozenset({"releasegate-viewers"})  # the real one still is

    async def test_a_token_naming_an_unknown_key_is_refused_and_refreshes_the_keys_at_most_once(self, provider) -> None:
        fetched = []

        async def count(request: httpx.Request) -> None:
            if request.url.path == "/jwks":
                fetched.append(request.url)

        now = [time.time()]
        async with httpx.AsyncClient(event_hooks={"request": [count]}) as http:
            verifier = TokenVerifier(provider.issuer, "releasegate", http=http, clock=lambda: now[0])
            token = await login(provider, "alice")
            _, payload = parts(token)
            await verifier.verify(token)
            assert len(fetched) == 1
            forged = sign(payload, provider_key(provider), "rotated-key")
            now[0] += verifier.refresh_interval
            assert (await refused(verifier, forged)).startswith("unknown signing key 'rotated-key'")
            assert len(fetched) == 2
            assert (await refused(verifier, forged)).startswith("unknown signing key")
            assert len(fetched) == 2  # a flood of unknown kids does not become a flood of JWKS requests
            await verifier.verify(await login(provider, "bob"))  # known keys keep working meanwhile
            assert len(fetched) == 2

    async def test_a_ci_token_is_refused_where_a_person_is_needed(self, provider, verifier) -> None:
        claims = await verifier.verify(await ci(provider, "ci-gitlab-shop"))
        with pytest.raises(TokenError, match="a CI token cannot act as a person"):
            person(claims)

    async def test_an_unreachable_issuer_is_a_provider_error_not_a_bad_token(self, provider) -> None:
        token = await login(provider, "alice")
        down = TokenVerifier("http://127.0.0.1:9", "releasegate")
        try:
            with pytest.raises(ProviderError, match="cannot read the issuer's discovery document"):
                await down.verify(token)
        finally:
            await down.aclose()

    async def test_concurrent_first_requests_fetch_the_keys_once(self, provider) -> None:
        fetched = []

        async def count(request: httpx.Request) -> None:
            if request.url.path == "/jwks":
                fetched.append(request.url)

        tokens = [await login(provider, user) for user in ("alice", "bob", "carol")]
        async with httpx.AsyncClient(event_hooks={"request": [count]}) as http:
            verifier = TokenVerifier(provider.issuer, "releasegate", http=http)
            claims = await asyncio.gather(*(verifier.verify(t) for t in tokens))
        assert [c.username for c in claims] == ["alice", "bob", "carol"]
        assert len(fetched) == 1


class TestSeveralIssuers:
    async def test_each_token_is_checked_by_the_verifier_of_its_issuer(self, provider) -> None:
        issuers = TrustedIssuers(
            [TokenVerifier(provider.issuer, "releasegate"), TokenVerifier("http://127.0.0.1:9", "releasegate")]
        )
        try:
            assert (await issuers.verify(await login(provider, "carol"))).username == "carol"
            header, payload = parts(await login(provider, "carol"))
            forged = sign({**payload, "iss": "https://evil.example.test"}, provider_key(provider), header["kid"])
            with pytest.raises(TokenError, match="issuer 'https://evil.example.test' is not trusted"):
                await issuers.verify(forged)
        finally:
            await issuers.aclose()
