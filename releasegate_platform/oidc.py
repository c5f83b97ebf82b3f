"""Bearer tokens of an OpenID Connect provider, checked the way a resource server must: the issuer's discovery
document and signing keys (cached, refreshed when a token names a key not seen yet), the signature under an
allow-listed asymmetric algorithm, and iss, aud, exp, nbf and iat. What comes out is a `Claims`; a CI token's
pipeline (GitHub Actions or GitLab CI) is read from it by `ci_identity`. Every refusal is a `TokenError` saying why."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import httpx
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

DISCOVERY_PATH = "/.well-known/openid-configuration"
ASYMMETRIC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})
MAX_TOKEN_BYTES = 16 * 1024  # a token that large is an attack on the parser, not a credential
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC"}
# The two CI token shapes: GitHub Actions (https://token.actions.githubusercontent.com) and GitLab CI (id_tokens).
_GITHUB_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_GITLAB_PROJECT = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+")
_HOST = re.compile(r"[a-z0-9.-]+(:[0-9]+)?")


class TokenError(Exception):
    """A bearer token is refused; `reason` says why in words fit for the caller (never the token itself)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProviderError(TokenError):
    """The issuer's discovery document or keys cannot be had: the token cannot be checked now (retryable)."""


@dataclass(frozen=True)
class Claims:
    """A verified token: who it names and the groups it says they are in."""

    subject: str
    username: str
    groups: frozenset[str]
    raw: Mapping[str, Any]

    @property
    def is_ci(self) -> bool:
        """Issued to a CI pipeline (GitHub Actions or GitLab CI shape), not to a person."""
        return "repository" in self.raw or "project_path" in self.raw


@dataclass(frozen=True)
class CiIdentity:
    """The pipeline a CI token was issued to: the host-qualified repository and the git ref it ran for."""

    shape: Literal["github", "gitlab"]
    repository: str
    ref: str
    subject: str
    commit: str | None = None
    actor: str | None = None


def person(claims: Claims) -> Claims:
    """`claims` if they are a person's; a CI token acting where a person must is refused."""
    if claims.is_ci:
        raise TokenError("a CI token cannot act as a person: sign in as yourself")
    return claims


def ci_identity(claims: Claims, *, github_host: str = "github.com", gitlab_host: str = "gitlab.com") -> CiIdentity:
    """The pipeline of a CI token; TokenError unless the claims are exactly one of the two CI shapes."""
    raw = claims.raw
    for host in (github_host, gitlab_host):
        if not _HOST.fullmatch(host):
            raise ValueError(f"{host!r} is not a host name")
    if "repository" in raw and "project_path" in raw:
        raise TokenError("not a CI token: it has both GitHub (repository) and GitLab (project_path) claims")
    if "repository" in raw:
        return _github(claims, github_host)
    if "project_path" in raw:
        return _gitlab(claims, gitlab_host)
    raise TokenError(
        "not a CI token: neither GitHub Actions (repository, ref) nor GitLab CI (project_path, ref, ref_type) claims"
    )


def _text(raw: Mapping[str, Any], name: str, shape: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise TokenError(f"{shape} CI token without a {name} claim")
    return value


def _optional_text(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return value if isinstance(value, str) and value else None


def _github(claims: Claims, host: str) -> CiIdentity:
    raw = claims.raw
    repository = _text(raw, "repository", "GitHub")
    if not _GITHUB_REPOSITORY.fullmatch(repository):
        raise TokenError(f"GitHub CI token: repository {repository[:100]!r} is not OWNER/REPO")
    ref = _text(raw, "ref", "GitHub")
    if not ref.startswith(("refs/heads/", "refs/tags/")):
        raise TokenError(f"GitHub CI token: ref {ref[:100]!r} is neither a branch nor a tag")
    # GitHub's subject starts with the repository whatever its tail (ref, environment or pull_request)
    if not claims.subject.startswith(f"repo:{repository}:"):
        raise TokenError(f"GitHub CI token: subject {claims.subject[:100]!r} is not of repository {repository}")
    if (owner := raw.get("repository_owner")) is not None and owner != repository.split("/", 1)[0]:
        raise TokenError(f"GitHub CI token: repository_owner {str(owner)[:100]!r} does not own {repository}")
    return CiIdentity(
        shape="github",
        repository=f"{host}/{repository}",
        ref=ref,
        subject=claims.subject,
        commit=_optional_text(raw, "sha"),
        actor=_optional_text(raw, "actor"),
    )


def _gitlab(claims: Claims, host: str) -> CiIdentity:
    raw = claims.raw
    project = _text(raw, "project_path", "GitLab")
    if not _GITLAB_PROJECT.fullmatch(project):
        raise TokenError(f"GitLab CI token: project_path {project[:100]!r} is not GROUP/PROJECT")
    ref = _text(raw, "ref", "GitLab")
    ref_type = _text(raw, "ref_type", "GitLab")
    if ref.startswith("refs/"):
        raise TokenError(f"GitLab CI token: ref {ref[:100]!r} should be a bare branch or tag name")
    match ref_type:
        case "branch":
            full_ref = f"refs/heads/{ref}"
        case "tag":
            full_ref = f"refs/tags/{ref}"
        case _:
            raise TokenError(f"GitLab CI token: ref_type {ref_type[:40]!r} is neither branch nor tag")
    if not claims.subject.startswith(f"project_path:{project}:"):
        raise TokenError(f"GitLab CI token: subject {claims.subject[:100]!r} is not of project {project}")
    if (namespace := raw.get("namespace_path")) is not None and not project.startswith(f"{namespace}/"):
        raise TokenError(f"GitLab CI token: namespace_path {str(namespace)[:100]!r} does not hold {project}")
    return CiIdentity(
        shape="gitlab",
        repository=f"{host}/{project}",
        ref=full_ref,
        subject=claims.subject,
        commit=_optional_text(raw, "sha"),
        actor=_optional_text(raw, "user_login"),
    )


def _b64json(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):
        raise TokenError(f"malformed token: the {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise TokenError(f"malformed token: the {what} is not a JSON object")
    return value


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, read before anything is trusted (to pick the key and refuse bad algs)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError(f"token longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token: not a signed JWT (header.payload.signature)")
    return _b64json(parts[0], "header")


def check_claims(
    payload: Mapping[str, Any], *, issuer: str, audience: str, leeway: int, now: float | None = None
) -> None:
    """iss, aud, exp, nbf and iat of a token whose signature has been verified."""
    now = time.time() if now is None else now
    if payload.get("iss") != issuer:
        raise TokenError(f"wrong issuer {str(payload.get('iss'))[:200]!r}: this API trusts {issuer}")
    aud = payload.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in audiences:
        raise TokenError(f"wrong audience {str(aud)[:200]!r}: the token is not for {audience!r}")
    for name in ("exp", "iat"):
        if name not in payload:
            raise TokenError(f"token without {name}")
    for name in ("exp", "nbf", "iat"):
        if name in payload and (isinstance(payload[name], bool) or not isinstance(payload[name], int | float)):
            raise TokenError(f"{name} is not a number")
    if payload["exp"] + leeway <= now:
        raise TokenError(f"token expired {int(now - payload['exp'])} s ago")
    if "nbf" in payload and payload["nbf"] - leeway > now:
        raise TokenError("token not valid yet (nbf is in the future)")
    if payload["iat"] - leeway > now:
        raise TokenError("token issued in the future (iat): the issuer's or this host's clock is wrong")
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenError("token without a subject (sub)")


def claims_of(payload: Mapping[str, Any], *, groups_claim: str = "groups") -> Claims:
    groups = payload.get(groups_claim, [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise TokenError(f"the {groups_claim} claim is not a list of names")
    username = payload.get("preferred_username")
    return Claims(
        subject=payload["sub"],
        username=username if isinstance(username, str) and username else payload["sub"],
        groups=frozenset(groups),
        raw=MappingProxyType(dict(payload)),
    )


class TokenVerifier:
    """Verifies the access tokens of one issuer for one audience. Keys come from the issuer's discovery document;
    a token naming an unknown key id refreshes them, at most once per `refresh_interval` seconds."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        allowed_algs: Iterable[str] = ("RS256", "ES256"),
        leeway: int = 30,
        groups_claim: str = "groups",
        refresh_interval: float = 30.0,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.allowed_algs = frozenset(allowed_algs)
        refused = self.allowed_algs - ASYMMETRIC_ALGS
        if refused:
            raise ValueError(f"only asymmetric signature algorithms may be allowed, not {sorted(refused)}")
        if not self.allowed_algs:
            raise ValueError("allowed_algs is empty")
        self.leeway = leeway
        self.groups_claim = groups_claim
        self.refresh_interval = refresh_interval
        self._http = http or httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        self._own_http = http is None
        self._clock = clock
        self._jwks_uri: str | None = None
        self._keys: dict[str, RSAKey | ECKey] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def verify(self, token: str) -> Claims:
        """The claims of a valid token; TokenError (ProviderError when the issuer cannot be reached) otherwise."""
        header = unverified_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise TokenError("unsigned token (alg none) refused")
        if alg not in self.allowed_algs:
            raise TokenError(
                f"signature algorithm {alg[:20]!r} not allowed (allowed: {', '.join(sorted(self.allowed_algs))})"
            )
        if "crit" in header or "jku" in header or "x5u" in header or "jwk" in header:
            raise TokenError("token header names keys or extensions this API does not follow (jku, x5u, jwk, crit)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("token without a key id (kid)")
        key = await self._key(kid)
        if key.key_type != _KEY_TYPES[alg[:2]]:
            raise TokenError(f"key {kid[:60]!r} is an {key.key_type} key, not one for {alg}")
        try:
            signed = jws.deserialize_compact(token, key, algorithms=[alg])
        except JoseError as exc:
            raise TokenError(f"signature does not verify with the issuer's key {kid[:60]!r} ({exc.error})") from None
        try:
            payload = json.loads(signed.payload)
        except ValueError:
            raise TokenError("malformed token: the payload is not JSON") from None
        if not isinstance(payload, dict):
            raise TokenError("malformed token: the payload is not a JSON object")
        check_claims(payload, issuer=self.issuer, audience=self.audience, leeway=self.leeway, now=self._clock())
        return claims_of(payload, groups_claim=self.groups_claim)

    async def _key(self, kid: str) -> RSAKey | ECKey:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and self._may_refresh():
                await self._refresh()
        try:
            return self._keys[kid]
        except KeyError:
            raise TokenError(f"unknown signing key {kid[:60]!r}: not among the issuer's published keys") from None

    def _may_refresh(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self.refresh_interval

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, headers={"accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderError(f"cannot read the issuer's {what} at {url}: {exc}") from None
        if not isinstance(document, dict):
            raise ProviderError(f"the issuer's {what} at {url} is not a JSON object")
        return document

    async def _refresh(self) -> None:
        self._fetched_at = self._clock()  # failures count too: an unreachable issuer is not asked in a loop
        if self._jwks_uri is None:
            discovery = await self._get_json(self.issuer + DISCOVERY_PATH, "discovery document")
            if discovery.get("issuer") != self.issuer:
                raise ProviderError(
                    f"the discovery document names issuer {str(discovery.get('issuer'))[:200]!r}, not {self.issuer}"
                )
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise ProviderError("the discovery document has no jwks_uri")
            self._jwks_uri = jwks_uri
        document = await self._get_json(self._jwks_uri, "signing keys (JWKS)")
        keys: dict[str, RSAKey | ECKey] = {}
        for entry in document.get("keys", []):
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or not entry.get("kid"):
                continue
            if entry.get("kty") not in ("RSA", "EC") or "d" in entry:
                continue  # a private or symmetric key in a JWKS is the issuer's mistake, never a key to trust
            try:
                key = KeySet.import_key_set({"keys": [entry]}).keys[0]
            except (JoseError, ValueError, TypeError):
                continue
            if isinstance(key, RSAKey | ECKey):
                keys[str(entry["kid"])] = key
        self._keys = keys


class TrustedIssuers:
    """Several issuers (the people's IdP, GitHub Actions, GitLab): a token goes to the verifier of the issuer it
    names, which then checks everything, that name included."""

    def __init__(self, verifiers: Iterable[TokenVerifier]) -> None:
        self._by_issuer = {v.issuer: v for v in verifiers}

    async def verify(self, token: str) -> Claims:
        unverified_header(token)
        iss = _b64json(token.split(".")[1], "payload").get("iss")
        verifier = self._by_issuer.get(iss) if isinstance(iss, str) else None
        if verifier is None:
            raise TokenError(
                f"issuer {str(iss)[:200]!r} is not trusted (trusted: {', '.join(sorted(self._by_issuer))})"
            )
        return await verifier.verify(token)

    async def aclose(self) -> None:
        for verifier in self._by_issuer.values():
            await verifier.aclose()
