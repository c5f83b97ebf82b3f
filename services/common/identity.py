"""Who may approve: people, their groups and ed25519 public keys, and signed approvals that prove a person
really gave one. Key files are the ones `supply_chain.keygen` writes."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from securesystemslib.exceptions import Error as SSLibError
from securesystemslib.signer import Signature, SSlibKey

from services.common.supply_chain import canonical_json, load_public_key, load_signer, rfc3339

# Part of what is signed, so an approval signature can never be replayed as a signature over anything else.
APPROVAL_TYPE = "https://releasegate.dev/approval/v1"


class IdentityError(Exception):
    """The identities file is missing or malformed."""


def approval_payload(*, release_id: str, actor: str, kind: str, reason: str, signed_at: datetime) -> bytes:
    """The canonical bytes an approver signs: sorted-key JSON, `signed_at` in UTC ISO 8601."""
    return canonical_json({"_type": APPROVAL_TYPE, "release_id": release_id, "actor": actor, "kind": kind,
                           "reason": reason, "signed_at": rfc3339(signed_at)})


def sign_approval(key_path: Path, *, release_id: str, actor: str, kind: str, reason: str,
                  signed_at: datetime) -> tuple[str, str]:
    """Sign an approval with a person's private key; returns (keyid, signature hex)."""
    payload = approval_payload(release_id=release_id, actor=actor, kind=kind, reason=reason, signed_at=signed_at)
    signature = load_signer(key_path).sign(payload)
    return signature.keyid, signature.signature


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


def _person(name: str, spec: Mapping[str, Any]) -> Person:
    groups = spec.get("groups") or []
    if not isinstance(groups, list):
        raise ValueError(f"groups of {name} must be a list")
    return Person(name, frozenset(str(g) for g in groups), tuple(load_public_key(k) for k in spec.get("keys") or []))


def verify_approval(identities: Identities, *, release_id: str, actor: str, kind: str, reason: str,
                    signed_at: datetime, keyid: str | None, signature: str | None) -> str | None:
    """None if `signature` is `actor`'s valid signature over this approval, else why it is not."""
    person = identities.people.get(actor)
    if person is None:
        return f"{actor} is not a known identity"
    if not signature or not keyid:
        return "no signature: approvals must be signed with the approver's key"
    try:
        payload = approval_payload(release_id=release_id, actor=actor, kind=kind, reason=reason,
                                   signed_at=signed_at)
    except ValueError:
        return "signed_at has no time zone, so the signed payload cannot be rebuilt"
    for key in person.keys:
        if key.keyid != keyid:
            continue
        try:
            key.verify_signature(Signature(keyid, signature), payload)
        except SSLibError:
            break
        return None
    return f"signature does not verify with {actor}'s key"
