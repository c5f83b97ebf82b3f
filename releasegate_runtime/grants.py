"""Step grants: the coordinator signs every deploy and compensation command it sends, so the deployer and the
rollback service act only on steps the saga really issued, as issued, and only until the step's time is up. Pure:
signing and checking; the single-use ledger lives with the consumers (`releasegate_runtime.admission`)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.exceptions import Error as SSLibError
from securesystemslib.signer import CryptoSigner, Signature, SSlibKey

from contracts.events import DeployRequested, RollbackRequested, StepGrant
from releasegate_runtime.keys import canonical_json, load_public_key, load_signer, rfc3339

# Part of what is signed, so a grant signature can never be taken for a signature over anything else.
GRANT_TYPE = "https://releasegate.dev/step-grant/v1"
# How far a consumer's clock may lag the coordinator's before a fresh grant looks issued in the future.
CLOCK_SKEW = timedelta(seconds=60)
Command = DeployRequested | RollbackRequested


class GrantKeyError(ValueError):
    """The coordinator's grant key (private for signing, public for checking) cannot be loaded."""


def load_grant_signer(path: Path) -> CryptoSigner:
    try:
        return load_signer(path)
    except (OSError, ValueError) as exc:
        raise GrantKeyError(
            f"cannot load the coordinator's step-grant signing key {path}: {exc}. Without it no "
            "deploy or compensation could be authorized; create it with `python -m "
            "releasegate_runtime.secrets` or set RG_SIGNING_KEY_FILE"
        ) from None


def load_grant_key(path: Path) -> SSlibKey:
    try:
        return load_public_key(path)
    except (OSError, ValueError) as exc:
        raise GrantKeyError(
            f"cannot load the coordinator's public key {path}: {exc}. Without it no step grant "
            "can be checked; set RG_COORDINATOR_PUBLIC_KEY_FILE"
        ) from None


def _time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return rfc3339(moment) if moment.tzinfo is not None else moment.isoformat()


def bound_fields(command: Command) -> dict[str, Any]:
    """What a grant vouches for: every field of the command that changes what its consumer does."""
    common = {
        "command": command.event_type,
        "release_id": command.release_id,
        "step_id": command.step_id,
        "service": command.service,
        "environment": command.environment,
    }
    if isinstance(command, DeployRequested):
        return common | {
            "version": command.version,
            "digest": command.digest,
            "action": command.action.value,
            "weight": command.weight,
            "instances": command.instances,
            "tenants": command.tenants,
            "batch": command.batch,
            "batch_size": command.batch_size,
        }
    return common | {
        "version": command.candidate_version,
        "action": command.compensation,
        "backup_id": command.backup_id,
        "since": _time(command.since),
        # the restore's source: file, digest and database; a grant for one backup cannot restore another
        "backup_point": None if command.backup_point is None else command.backup_point.model_dump(mode="json"),
    }


def payload(command: Command, *, grant_id: str, issued_at: datetime, expires_at: datetime, keyid: str) -> bytes:
    """The canonical bytes the coordinator signs (sorted-key JSON, times in UTC)."""
    return canonical_json(
        {
            "_type": GRANT_TYPE,
            **bound_fields(command),
            "grant_id": grant_id,
            "issued_at": rfc3339(issued_at),
            "expires_at": rfc3339(expires_at),
            "keyid": keyid,
        }
    )


def sign_grant(signer: CryptoSigner, command: Command, *, issued_at: datetime, lifetime: timedelta) -> StepGrant:
    """A fresh, single-use grant for `command`, valid from `issued_at` for `lifetime`."""
    grant_id, keyid = uuid.uuid4().hex, signer.public_key.keyid
    issued_at = issued_at.replace(microsecond=0)
    expires_at = issued_at + lifetime
    signature = signer.sign(
        payload(command, grant_id=grant_id, issued_at=issued_at, expires_at=expires_at, keyid=keyid)
    )
    return StepGrant(
        grant_id=grant_id, issued_at=issued_at, expires_at=expires_at, keyid=keyid, signature=signature.signature
    )


def with_grant(signer: CryptoSigner, command: Command, *, issued_at: datetime, lifetime: timedelta) -> Command:
    return command.model_copy(update={"grant": sign_grant(signer, command, issued_at=issued_at, lifetime=lifetime)})


def verify_grant(public_key: SSlibKey, command: Command, now: datetime) -> str | None:
    """None if `command` carries a grant the coordinator signed for exactly this command and it is valid at `now`;
    else why it is refused. Single use is the consumer's ledger's job."""
    grant = command.grant
    if grant is None:
        return "no step grant: only commands the coordinator issued and signed are carried out"
    if grant.keyid != public_key.keyid:
        return f"step grant {grant.grant_id} is signed by key {grant.keyid[:12]}…, not the coordinator's"
    try:
        signed = payload(
            command, grant_id=grant.grant_id, issued_at=grant.issued_at, expires_at=grant.expires_at, keyid=grant.keyid
        )
        public_key.verify_signature(Signature(grant.keyid, grant.signature), signed)
    except (SSLibError, ValueError):
        return (
            f"step grant {grant.grant_id} does not verify: the command is not the one the coordinator signed "
            "(a bound field was changed) or the signature is not the coordinator's"
        )
    if now > grant.expires_at:
        return f"step grant {grant.grant_id} expired at {rfc3339(grant.expires_at)}"
    if grant.issued_at > now + CLOCK_SKEW:
        return (
            f"step grant {grant.grant_id} is issued at {rfc3339(grant.issued_at)}, more than "
            f"{CLOCK_SKEW.seconds} s in the future"
        )
    return None
