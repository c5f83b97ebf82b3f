"""The CI ingress's trust: which CI identities may submit candidates of which service. A CI job proves who it is
with a short-lived OIDC token from its platform (GitHub Actions, GitLab CI); the trust root's `ci_tokens` per
service say which issuer, which claims (the repository or project) and which refs may submit, and for which
source repository. The candidate must then say it was built from that repository at that very ref: a job of a
fork, another branch or another project submits nothing. The gatekeeper still checks the build provenance."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MAX_ENTRIES = 64


class CiTrustError(Exception):
    """The trust root's `ci_tokens` are malformed."""


@dataclass(frozen=True)
class CiTrust:
    issuer: str
    claims: Mapping[str, str]
    refs: tuple[str, ...]
    source: str

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.claims.items()))
        return f"{self.issuer} ({shown}; refs {', '.join(self.refs)})"


def load(path: Path) -> dict[str, tuple[CiTrust, ...]]:
    """Per service, the CI identities the trust root lets submit its candidates (none: no CI may submit)."""
    try:
        data = yaml.safe_load(Path(path).read_bytes()) or {}
        out: dict[str, tuple[CiTrust, ...]] = {}
        for name, spec in (data.get("services") or {}).items():
            entries = spec.get("ci_tokens") or []
            if not isinstance(entries, list) or len(entries) > MAX_ENTRIES:
                raise ValueError(f"services.{name}.ci_tokens must be a list of at most {MAX_ENTRIES}")
            out[str(name)] = tuple(_entry(e) for e in entries)
        return out
    except (OSError, yaml.YAMLError) as exc:
        raise CiTrustError(f"cannot read {path}: {exc}") from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CiTrustError(f"{path}: ci_tokens malformed: {type(exc).__name__}: {exc}") from None


def _entry(spec: Mapping[str, Any]) -> CiTrust:
    claims = spec["claims"]
    if not isinstance(claims, Mapping) or not claims:
        raise ValueError("each ci_tokens entry names the claims a token must carry (repository or project_path)")
    refs = tuple(str(r) for r in spec["refs"])
    if not refs:
        raise ValueError("each ci_tokens entry names the refs it may submit from")
    return CiTrust(str(spec["issuer"]), {str(k): str(v) for k, v in claims.items()}, refs, str(spec["source"]))


def token_ref(claims: Mapping[str, Any]) -> str | None:
    """The git ref a CI token was issued for, as `refs/heads/…` or `refs/tags/…`: GitHub's `ref` is already one,
    GitLab's is a bare name with `ref_type` beside it."""
    ref = claims.get("ref")
    if not isinstance(ref, str) or not ref:
        return None
    if ref.startswith("refs/"):
        return ref
    kind = claims.get("ref_type")
    if kind == "branch":
        return f"refs/heads/{ref}"
    if kind == "tag":
        return f"refs/tags/{ref}"
    return None


def may_read(trusted: tuple[CiTrust, ...], claims: Mapping[str, Any], issuer: str) -> bool:
    """A CI identity trusted to submit a service's candidates (from any ref) may follow its releases."""
    return any(t.issuer == issuer and all(claims.get(k) == v for k, v in t.claims.items()) for t in trusted)


def refusal(
    trusted: tuple[CiTrust, ...], claims: Mapping[str, Any], issuer: str, service: str, source: Mapping[str, Any]
) -> str | None:
    """Why a CI token with `claims` from `issuer` may not submit a candidate of `service` built from `source`
    (the candidate's `source`: repository, ref); None if it may."""
    if not trusted:
        return f"no CI identity may submit {service} candidates: the trust root lists no ci_tokens for it"
    ref = token_ref(claims)
    if ref is None:
        return "the token names no git ref (ref, ref_type): it is not a CI job's token"
    matching = [
        t
        for t in trusted
        if t.issuer == issuer
        and all(claims.get(k) == v for k, v in t.claims.items())
        and any(fnmatch.fnmatchcase(ref, p) for p in t.refs)
    ]
    if not matching:
        who = claims.get("repository") or claims.get("project_path") or claims.get("sub")
        return f"a token of {who} at {ref} from {issuer} may not submit {service} candidates; trusted: " + "; ".join(
            t.describe() for t in trusted
        )
    if not any(source.get("repository") == t.source for t in matching):
        return (
            f"the candidate says it was built from {source.get('repository')}, but this CI identity may only submit "
            f"builds of {', '.join(sorted({t.source for t in matching}))}"
        )
    if source.get("ref") != ref:
        return f"the candidate says it was built from {source.get('ref')}, but the CI job ran at {ref}"
    return None
