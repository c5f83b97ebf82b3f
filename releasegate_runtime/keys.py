"""ed25519 key primitives shared by the runtime (step grants, per-machine secrets) and the supply chain: key
files, canonical JSON, RFC 3339 timestamps."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, SSlibKey

ED25519 = "ed25519"


def keygen(directory: Path, name: str) -> tuple[Path, Path]:
    """Create an ed25519 key pair: `<name>.key` (private PEM, owner-only) and `<name>.pub.json` (public key
    dict with its keyid). Refuses to overwrite an existing private key."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub.json"
    signer = CryptoSigner.generate_ed25519()
    # O_EXCL: losing a private key to a typo is worse than an error; 0o600 at creation so it is never readable
    # by others, not even between write and chmod.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(signer.private_bytes)
    os.chmod(private_path, 0o600)  # the umask may have narrowed the mode further, never widened it; be exact
    public_path.write_text(json.dumps(public_key_dict(signer.public_key), indent=2) + "\n")
    return private_path, public_path


def public_key_dict(key: SSlibKey) -> dict[str, Any]:
    """The JSON form of a public key used in key files, the trust root and the identities file."""
    return {"keyid": key.keyid, **key.to_dict()}


def load_signer(key_path: Path) -> CryptoSigner:
    """A signer for the ed25519 private key in a PEM file written by `keygen`."""
    private_key = load_pem_private_key(Path(key_path).read_bytes(), password=None)
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ValueError(f"{key_path} is not an ed25519 private key")
    return CryptoSigner(private_key)


def load_public_key(source: Path | str | Mapping[str, Any]) -> SSlibKey:
    """An ed25519 public key from a `.pub.json` file or its dict. A given keyid must be the key's own
    (securesystemslib default) keyid, so one key cannot pose as two when signatures are counted."""
    data = json.loads(Path(source).read_text()) if isinstance(source, (str, Path)) else source
    if not isinstance(data, Mapping):
        raise ValueError("a public key must be a mapping with keytype, scheme and keyval")
    if data.get("keytype") != ED25519 or data.get("scheme") != ED25519:
        raise ValueError(f"only ed25519 keys are accepted, got {data.get('keytype')}/{data.get('scheme')}")
    keyval = data.get("keyval")
    public_hex = keyval.get("public") if isinstance(keyval, Mapping) else None
    try:
        key = SSlibKey.from_crypto(Ed25519PublicKey.from_public_bytes(bytes.fromhex(str(public_hex))))
    except ValueError:
        raise ValueError("keyval.public is not a hex-encoded ed25519 public key") from None
    if data.get("keyid") not in (None, key.keyid):
        raise ValueError(f"keyid {data['keyid']} does not belong to this key (its keyid is {key.keyid})")
    return key


def rfc3339(moment: datetime) -> str:
    """A timezone-aware datetime as UTC ISO 8601 with `Z`. Naive datetimes are refused: a signer and a
    verifier in different time zones would read them differently."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} has no time zone")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace: the same value always gives the same bytes (and the same signature)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
