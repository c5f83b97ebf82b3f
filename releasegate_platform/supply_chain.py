"""Build provenance for artifacts: ed25519 keys, SLSA v1 provenance in in-toto Statements, DSSE signing, and
checking an attestation against a trust root of builders and allowed sources. Works fully offline."""

from __future__ import annotations

import binascii
import copy
import fnmatch
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import Error as SSLibError
from securesystemslib.signer import SSlibKey

from releasegate_platform.artifacts import DIGEST
from releasegate_runtime.keys import (  # noqa: F401  (re-exported: the supply chain's key API)
    ED25519,
    canonical_json,
    keygen,
    load_public_key,
    load_signer,
    public_key_dict,
    rfc3339,
)

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PROVENANCE_TYPE = "https://slsa.dev/provenance/v1"


class AttestationError(Exception):
    """The artifact's attestation is missing, does not verify, or does not vouch for this artifact and source."""


class TrustRootError(AttestationError):
    """The trust root file is missing or malformed, so no attestation can be judged against it."""


# --- statements and envelopes ---------------------------------------------------------------------------


def source_uri(repository: str, ref: str) -> str:
    return f"git+{repository}@{ref}"


def provenance_statement(
    *,
    artifact_name: str,
    digest: str,
    builder_id: str,
    build_type: str,
    repository: str,
    ref: str,
    commit: str,
    dependencies: list[dict[str, Any]],
    invocation_id: str,
    started_on: datetime,
) -> dict[str, Any]:
    """An in-toto Statement v1 saying builder `builder_id` built `digest` from `repository@ref` (`commit`)."""
    match = DIGEST.match(digest)
    if not match:
        raise ValueError(f"artifact digest must be sha256:<64 hex>, got {digest!r}")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": artifact_name, "digest": {"sha256": match["hex"]}}],
        "predicateType": PROVENANCE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": build_type,
                "externalParameters": {"source": {"repository": repository, "ref": ref}},
                "resolvedDependencies": [
                    {"uri": source_uri(repository, ref), "digest": {"gitCommit": commit}},
                    *dependencies,
                ],
            },
            "runDetails": {
                "builder": {"id": builder_id},
                "metadata": {"invocationId": invocation_id, "startedOn": rfc3339(started_on)},
            },
        },
    }


def sign(statement: dict[str, Any], key_paths: list[Path]) -> dict[str, Any]:
    """The DSSE envelope (JSON-able dict) of `statement`, signed with each private key. ed25519 and canonical
    JSON make the result deterministic."""
    if not key_paths:
        raise ValueError("signing needs at least one key")
    envelope = Envelope(canonical_json(statement), PAYLOAD_TYPE, {})
    for path in key_paths:
        envelope.sign(load_signer(path))
    return envelope.to_dict()


# --- trust root -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Builder:
    """A builder the trust root vouches for: its keys and how many of them must sign."""

    id: str
    keys: tuple[SSlibKey, ...]
    threshold: int


@dataclass(frozen=True)
class AllowedSource:
    """A repository and the refs (fnmatch patterns) that may produce deployable artifacts."""

    repository: str
    refs: tuple[str, ...]

    def allows(self, repository: str, ref: str) -> bool:
        # fnmatchcase: refs are case-sensitive on every OS.
        return repository == self.repository and any(fnmatch.fnmatchcase(ref, p) for p in self.refs)


@dataclass(frozen=True)
class TrustRoot:
    """Which builders are trusted (by key) and which sources each service may be built from."""

    version: int
    builders: Mapping[str, Builder]
    services: Mapping[str, tuple[AllowedSource, ...]]
    digest: str  # sha256 of the file, so a decision can cite exactly which trust root it used

    @classmethod
    def load(cls, path: Path) -> TrustRoot:
        try:
            raw = Path(path).read_bytes()
            return cls.parse(yaml.safe_load(raw), f"sha256:{hashlib.sha256(raw).hexdigest()}")
        except (OSError, yaml.YAMLError) as exc:
            raise TrustRootError(f"cannot read trust root {path}: {exc}") from None
        except TrustRootError as exc:
            raise TrustRootError(f"trust root {path}: {exc}") from None

    @classmethod
    def parse(cls, data: Any, digest: str) -> TrustRoot:
        """A trust root from its parsed YAML; `digest` identifies the document it came from."""
        try:
            version = data["version"]
            if not isinstance(version, int) or isinstance(version, bool):
                raise ValueError("version must be an integer")
            builders = {str(bid): _builder(str(bid), spec) for bid, spec in (data.get("builders") or {}).items()}
            services = {
                str(name): tuple(
                    AllowedSource(str(s["repository"]), tuple(str(r) for r in s["refs"])) for s in spec["sources"]
                )
                for name, spec in (data.get("services") or {}).items()
            }
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise TrustRootError(f"malformed: {type(exc).__name__}: {exc}") from None
        return cls(version, builders, services, digest)


def _builder(builder_id: str, spec: Mapping[str, Any]) -> Builder:
    keys = tuple(load_public_key(k) for k in spec["keys"])
    threshold = spec.get("threshold", 1)
    if len({k.keyid for k in keys}) != len(keys):
        raise ValueError(f"builder {builder_id} lists the same key twice")
    if not isinstance(threshold, int) or not 1 <= threshold <= len(keys):
        raise ValueError(f"builder {builder_id}: threshold must be between 1 and its {len(keys)} key(s)")
    return Builder(builder_id, keys, threshold)


# --- checking an attestation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AttestationFacts:
    """What an attestation proves about one artifact, and in plain sentences what it fails to prove."""

    present: bool = False
    signature_verified: bool = False
    valid_signatures: int = 0
    threshold: int = 0
    subject_digest: str | None = None
    subject_matches: bool = False
    builder_id: str | None = None
    builder_trusted: bool = False
    source_repository: str | None = None
    source_ref: str | None = None
    source_commit: str | None = None
    source_allowed: bool = False
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_input(self) -> dict[str, Any]:
        """The facts as a JSON-able dict, e.g. for a Rego policy input."""
        return {**asdict(self), "problems": list(self.problems)}


def inspect(envelope: Mapping[str, Any] | None, digest: str, service: str, root: TrustRoot) -> AttestationFacts:
    """Judge `envelope` as the attestation of artifact `digest` of `service`. Never raises on bad input:
    whatever is wrong ends up in `problems`."""
    problems: list[str] = []
    artifact = DIGEST.match(digest) if isinstance(digest, str) else None
    if not artifact:
        problems.append(
            f"artifact reference {digest!r} is not a well-formed sha256 digest"
            if str(digest).startswith("sha256:")
            else f"artifact reference {digest!r} is a tag, not a sha256 digest"
        )
    if envelope is None:
        problems.append("the artifact is unsigned: the candidate carries no attestation")
        return AttestationFacts(problems=tuple(problems))

    parsed = _parse(envelope)
    if isinstance(parsed, str):
        return AttestationFacts(present=True, problems=(*problems, parsed))
    dsse, statement = parsed
    # The builder id is read before the signature is checked only to pick the keys to check it with; a forged
    # id simply selects keys that will not verify.
    builder_id = _get(statement, "predicate", "runDetails", "builder", "id")
    if not isinstance(builder_id, str):
        return AttestationFacts(present=True, problems=(*problems, "the attestation names no builder"))
    builder = root.builders.get(builder_id)
    if builder is None:
        problems.append(f"builder {builder_id} is not in the trust root")
        return AttestationFacts(present=True, builder_id=builder_id, problems=tuple(problems))

    valid = _valid_signatures(dsse, builder.keys)
    facts = AttestationFacts(
        present=True,
        builder_id=builder_id,
        builder_trusted=True,
        valid_signatures=valid,
        threshold=builder.threshold,
        signature_verified=valid >= builder.threshold,
    )
    if not facts.signature_verified:
        problems.append(
            f"signature of builder {builder_id} does not verify with the trust root's keys "
            f"({valid} of {builder.threshold} valid)"
        )
        return _with(facts, problems)

    subjects = statement.get("subject")
    claimed = [
        h for s in (subjects if isinstance(subjects, list) else []) if isinstance(h := _get(s, "digest", "sha256"), str)
    ]
    matches = artifact is not None and artifact["hex"] in claimed
    subject = digest if matches else (f"sha256:{claimed[0]}" if claimed else None)
    if artifact and not matches:
        problems.append(
            f"attestation subject {subject} is not the artifact {digest}"
            if subject
            else f"the attestation has no sha256 subject, so it does not vouch for {digest}"
        )

    repository = _get(statement, "predicate", "buildDefinition", "externalParameters", "source", "repository")
    ref = _get(statement, "predicate", "buildDefinition", "externalParameters", "source", "ref")
    commit = _source_commit(statement, repository, ref)
    allowed = False
    if not isinstance(repository, str) or not isinstance(ref, str):
        problems.append("the attestation names no source repository and ref")
        repository = ref = None
    elif service not in root.services:
        problems.append(
            f"source {repository}@{ref} is not allowed for {service}: the trust root lists no sources for {service}"
        )
    else:
        allowed = any(rule.allows(repository, ref) for rule in root.services[service])
        if not allowed:
            problems.append(f"source {repository}@{ref} is not allowed for {service}")
    if allowed and commit is None:
        problems.append(f"the attestation names no commit for its source {repository}@{ref}")
    return _with(
        facts,
        problems,
        subject_digest=subject,
        subject_matches=matches,
        source_repository=repository,
        source_ref=ref,
        source_commit=commit,
        source_allowed=allowed,
    )


def verify(envelope: Mapping[str, Any] | None, digest: str, service: str, root: TrustRoot) -> AttestationFacts:
    """Like `inspect`, but raises AttestationError with the first problem: for callers that must refuse."""
    facts = inspect(envelope, digest, service, root)
    if facts.problems:
        raise AttestationError(facts.problems[0])
    return facts


def _parse(envelope: Mapping[str, Any]) -> tuple[Envelope, dict[str, Any]] | str:
    """The envelope and its statement, or a sentence saying why the attestation cannot be read."""
    if not isinstance(envelope, Mapping):
        return f"the attestation is not a DSSE envelope but a {type(envelope).__name__}"
    try:
        # from_dict rewrites the signature dicts it is given; the caller's candidate must stay as it was.
        dsse = Envelope.from_dict(copy.deepcopy(dict(envelope)))
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error, SSLibError) as exc:
        return f"the attestation is not a valid DSSE envelope ({type(exc).__name__}: {exc})"
    if dsse.payload_type != PAYLOAD_TYPE:
        return f"the attestation's payload type is {dsse.payload_type!r}, not {PAYLOAD_TYPE!r}"
    if not dsse.signatures:
        return "the artifact is unsigned: its attestation carries no signature"
    try:
        statement = json.loads(dsse.payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"the attestation's payload is not JSON ({exc})"
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        return f"the attestation's payload is not an in-toto Statement v1 ({STATEMENT_TYPE})"
    if statement.get("predicateType") != PROVENANCE_TYPE:
        return f"the attestation's predicate is {statement.get('predicateType')!r}, not SLSA provenance v1"
    return dsse, statement


def _valid_signatures(dsse: Envelope, keys: tuple[SSlibKey, ...]) -> int:
    """How many of the builder's keys made a valid signature. Counted here rather than by Envelope.verify,
    which only says pass/fail, so a refusal can tell how far short it fell."""
    pae = dsse.pae()
    valid = 0
    for key in keys:
        signature = dsse.signatures.get(key.keyid)
        if signature is None:
            continue
        try:
            key.verify_signature(signature, pae)
        except SSLibError:
            continue
        valid += 1
    return valid


def _source_commit(statement: dict[str, Any], repository: Any, ref: Any) -> str | None:
    dependencies = _get(statement, "predicate", "buildDefinition", "resolvedDependencies")
    if not isinstance(repository, str) or not isinstance(ref, str) or not isinstance(dependencies, list):
        return None
    for dependency in dependencies:
        commit = _get(dependency, "digest", "gitCommit")
        if _get(dependency, "uri") == source_uri(repository, ref) and isinstance(commit, str):
            return commit
    return None


def _get(value: Any, *path: str) -> Any:
    """`value[p0][p1]…`, or None as soon as a step is not a mapping or lacks the key (the payload is untrusted)."""
    for step in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(step)
    return value


def _with(facts: AttestationFacts, problems: list[str], **changes: Any) -> AttestationFacts:
    return AttestationFacts(**{**asdict(facts), **changes, "problems": tuple(problems)})
