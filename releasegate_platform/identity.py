"""Who may act on releases: people, their groups and ed25519 public keys; signed operator commands (approvals,
aborts, pauses, resumes, promotions) that prove a person really gave them; and the refusal to trust the
published demo keys outside the local stack. Key files are the ones `supply_chain.keygen` writes."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from securesystemslib.exceptions import Error as SSLibError
from securesystemslib.signer import Signature, SSlibKey

from contracts.events import ApprovalGiven, Attestation, OperatorCommand
from releasegate_platform.supply_chain import (
    TrustRoot,
    TrustRootError,
    canonical_json,
    load_public_key,
    load_signer,
    rfc3339,
)
from releasegate_runtime.settings import REPO_ROOT, ServiceSettings

# Part of what is signed, so an operator's signature can never be replayed as a signature over anything else;
# the event type is signed too, so an abort's signature is never a resume's.
OPERATOR_COMMAND_TYPE = "https://releasegate.dev/operator-command/v1"
NO_SIGNATURE = "no signature: operator commands must be signed with the operator's key"
# Demo key pairs whose private halves are in the repository: trusted on the local stack only.
DEMO_KEYS = REPO_ROOT / "examples" / "keys"
Command = TypeVar("Command", bound=OperatorCommand)


class IdentityError(Exception):
    """The identities file is missing or malformed."""


class DemoKeyError(IdentityError):
    """A demo key (examples/keys/, private half published) is trusted outside the local stack."""


def new_nonce() -> str:
    """128 random bits in hex: what makes each signed command unique, so a copy of it is seen as a replay."""
    return secrets.token_hex(16)


def command_payload(
    *,
    event_type: str,
    release_id: str,
    actor: str,
    reason: str,
    nonce: str | None,
    signed_at: datetime,
    fields: Mapping[str, Any] | None = None,
    attested: Attestation | None = None,
) -> bytes:
    """The canonical bytes an operator signs: sorted-key JSON of the common fields, `signed_at` in UTC ISO 8601,
    and the command's own `fields` (an approval's `kind`, promote's `full`) beside them. An attested command (the
    API signing for a person it authenticated) also signs the attestation, groups sorted; a person's own signature
    never carries one, so its payload is as it always was."""
    common: dict[str, Any] = {
        "_type": OPERATOR_COMMAND_TYPE,
        "event_type": event_type,
        "release_id": release_id,
        "actor": actor,
        "reason": reason,
        "nonce": nonce,
        "signed_at": rfc3339(signed_at),
    }
    if attested is not None:
        common["attested"] = {**attested.model_dump(mode="json"), "groups": sorted(attested.groups)}
    own = dict(fields or {})
    if own.keys() & common.keys():
        raise ValueError(f"a command's own fields cannot be named {sorted(own.keys() & common.keys())}")
    return canonical_json({**own, **common})


def own_fields(command: OperatorCommand) -> dict[str, Any]:
    """What a command carries beyond every operator command's fields; signed with them."""
    return command.model_dump(mode="json", exclude=set(OperatorCommand.model_fields))


ATTESTED_BY_API = "api"


def payload_of(command: OperatorCommand) -> bytes:
    """The bytes `command`'s signature is over."""
    if command.signed_at is None:
        raise ValueError("the command has no signed_at")
    return command_payload(
        event_type=command.event_type,
        release_id=command.release_id,
        actor=command.actor,
        reason=command.reason,
        nonce=command.nonce,
        signed_at=command.signed_at,
        fields=own_fields(command),
        attested=command.attested,
    )


def attest_command(
    key_path: Path, command: Command, attestation: Attestation, *, now: datetime | None = None
) -> Command:
    """`command`, given by the person `attestation` names (authenticated by its issuer), signed by an attester's
    key (the API's) with a new nonce: what the API publishes for an OIDC login."""
    return sign_command(key_path, command.model_copy(update={"attested": attestation}), now=now)


def sign_command(key_path: Path, command: Command, *, now: datetime | None = None) -> Command:
    """`command` signed with a person's private key, at `now` (default: the current time), with a new nonce."""
    signer = load_signer(key_path)
    unsigned = command.model_copy(
        update={"signed_at": now or datetime.now(UTC), "nonce": new_nonce(), "keyid": None, "signature": None}
    )
    signature = signer.sign(payload_of(unsigned))
    return type(command).model_validate(
        {**unsigned.model_dump(), "keyid": signature.keyid, "signature": signature.signature}
    )


def load_identities(path: Path, attester_keys: Mapping[str, Path]) -> Identities:
    """The identities file, plus each attester whose public key file exists (the API's is written per machine by
    `releasegate_runtime.secrets`); an attester without a key is not trusted."""
    identities = Identities.load(path)
    for name, key_file in attester_keys.items():
        if Path(key_file).exists():
            identities = identities.with_attester(name, load_public_key(key_file))
    return identities


def key_id(key_path: Path) -> str:
    """The key id of a private key file's public half."""
    return load_signer(key_path).public_key.keyid


@dataclass(frozen=True)
class Person:
    name: str
    groups: frozenset[str]
    keys: tuple[SSlibKey, ...]


@dataclass(frozen=True)
class Identities:
    """The people releasegate knows, loaded from an identities YAML file."""

    people: Mapping[str, Person]
    digest: str  # sha256 of the file, so a decision can cite which identities it trusted
    # services that authenticate people by other means (the API: OIDC logins) and sign commands for them, by name
    attesters: Mapping[str, SSlibKey] = field(default_factory=dict)

    def with_attester(self, name: str, key: SSlibKey) -> Identities:
        return Identities(self.people, self.digest, {**self.attesters, name: key})

    def groups_for(self, actor: str, attested: Attestation | None) -> frozenset[str]:
        """The groups of whoever signed: the attested person's as their login stated them, else the file's."""
        return frozenset(attested.groups) if attested is not None else self.groups_of(actor)

    @classmethod
    def load(cls, path: Path) -> Identities:
        try:
            raw = Path(path).read_bytes()
            data = yaml.safe_load(raw)
            people = {str(name): _person(str(name), spec) for name, spec in (data["people"] or {}).items()}
        except (OSError, yaml.YAMLError) as exc:
            raise IdentityError(f"cannot read identities {path}: {exc}") from None
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise IdentityError(f"identities {path} are malformed: {type(exc).__name__}: {exc}") from None
        return cls(people, f"sha256:{hashlib.sha256(raw).hexdigest()}")

    def groups_of(self, name: str) -> frozenset[str]:
        """The groups of a person; none for someone unknown."""
        person = self.people.get(name)
        return person.groups if person else frozenset()

    def members(self, group: str) -> frozenset[str]:
        return frozenset(p.name for p in self.people.values() if group in p.groups)

    def owner(self, keyid: str) -> str | None:
        """The person one of whose keys has this id; None if nobody's."""
        return next((p.name for p in self.people.values() if any(k.keyid == keyid for k in p.keys)), None)


def _person(name: str, spec: Mapping[str, Any]) -> Person:
    groups = spec.get("groups") or []
    if not isinstance(groups, list):
        raise ValueError(f"groups of {name} must be a list")
    return Person(name, frozenset(str(g) for g in groups), tuple(load_public_key(k) for k in spec.get("keys") or []))


def verify_command(identities: Identities, command: OperatorCommand) -> str | None:
    """None if `command` carries its actor's valid signature over all of it, else why it does not."""
    return _verify(
        identities,
        actor=command.actor,
        keyid=command.keyid,
        signature=command.signature,
        signed_at=command.signed_at,
        payload=lambda: payload_of(command),
        attested=command.attested,
    )


def verify_approval(
    identities: Identities,
    *,
    release_id: str,
    actor: str,
    kind: str,
    reason: str,
    signed_at: datetime,
    nonce: str | None,
    keyid: str | None,
    signature: str | None,
    attested: Attestation | None = None,
) -> str | None:
    """None if `signature` is `actor`'s valid signature over this approval (as `ApprovalGiven` carried it), or an
    attester's for them, else why it is not. The gatekeeper re-verifies the approvals a release collected with it."""
    return _verify(
        identities,
        actor=actor,
        keyid=keyid,
        signature=signature,
        signed_at=signed_at,
        payload=lambda: command_payload(
            event_type=ApprovalGiven.event_type,
            release_id=release_id,
            actor=actor,
            reason=reason,
            nonce=nonce,
            signed_at=signed_at,
            fields={"kind": kind},
            attested=attested,
        ),
        attested=attested,
    )


def _verify(
    identities: Identities,
    *,
    actor: str,
    keyid: str | None,
    signature: str | None,
    signed_at: datetime | None,
    payload: Callable[[], bytes],
    attested: Attestation | None = None,
) -> str | None:
    if attested is not None:
        attester = identities.attesters.get(attested.by)
        if attester is None:
            return f"{attested.by} is not a trusted attester: only its public key makes its word count"
        keys: tuple[SSlibKey, ...] = (attester,)
        whose = f"the attester {attested.by}'s key"
    else:
        person = identities.people.get(actor)
        if person is None:
            return f"{actor} is not a known identity"
        keys, whose = person.keys, f"{actor}'s key"
    if not signature or not keyid or signed_at is None:
        return NO_SIGNATURE
    try:
        signed = payload()
    except ValueError:
        return "signed_at has no time zone, so the signed payload cannot be rebuilt"
    for key in keys:
        if key.keyid != keyid:
            continue
        try:
            key.verify_signature(Signature(keyid, signature), signed)
        except SSLibError:
            break
        return None
    return f"signature does not verify with {whose}"


# --- demo keys -------------------------------------------------------------------------------------------


def demo_key_ids(directory: Path = DEMO_KEYS) -> dict[str, str]:
    """Key id → name of each demo public key (`<name>.pub.json`)."""
    return {
        load_public_key(path).keyid: path.name.removesuffix(".pub.json")
        for path in sorted(directory.glob("*.pub.json"))
    }


def refuse_demo_keys(settings: ServiceSettings, demo_keys: Path = DEMO_KEYS) -> None:
    """Raise DemoKeyError when, outside the local stack (`RG_ENV` other than `local`), the identities file or the
    trust root trusts a demo key: anyone can sign with those, so a signature by one proves nothing."""
    if settings.env == "local":
        return
    demo = demo_key_ids(demo_keys)
    found = [
        f"{path} trusts {', '.join(sorted({demo[k] for k in keyids if k in demo}))}"
        for path, keyids in _trusted_key_ids(settings)
        if keyids & demo.keys()
    ]
    if found:
        raise DemoKeyError(
            f"RG_ENV={settings.env}: demo keys of {demo_keys}, whose private halves are public, are "
            f"trusted: {'; '.join(found)}. List your own keys there, or run with RG_ENV=local on "
            "the local stack"
        )


def _trusted_key_ids(settings: ServiceSettings) -> Iterator[tuple[Path, set[str]]]:
    """The key ids each file trusts; a file that is missing or does not load trusts nothing (whoever reads it
    refuses it with its reason)."""
    try:
        people = Identities.load(settings.identities_file).people.values()
        yield settings.identities_file, {k.keyid for p in people for k in p.keys}
    except IdentityError:
        yield settings.identities_file, set()
    try:
        builders = TrustRoot.load(settings.trust_root_file).builders.values()
        yield settings.trust_root_file, {k.keyid for b in builders for k in b.keys}
    except TrustRootError:
        yield settings.trust_root_file, set()
