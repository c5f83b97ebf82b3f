"""Per-machine secrets of the local stack, generated on the first `make stack` and never committed: a random
SCRAM password per Kafka principal (deploy/kafka/acls.yaml, plus the broker's `admin`), a random password per
PostgreSQL role, the coordinator's ed25519 key pair for step grants, the key pair change records are signed with,
the key HAProxy checks canary cookies with, the edge cache's (Varnish) management secret, and the local OpenID
Connect provider's secrets (a password per person and a client secret per CI client of
deploy/oidc/directory.json, its RSA signing key and its cookie key). Files are owner-only (0600) in .run/secrets (0700); an existing secret is never replaced (rotation:
docs/security.md).

    python -m releasegate_runtime.secrets [--dir DIR] [--notify-sink URL]   # idempotent; prints what it created

`--notify-sink` (deploy/components/sink.sh passes it) also points the shop's Slack route at the local receiver.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from releasegate_runtime.bus import BusPolicy
from releasegate_runtime.keys import keygen
from releasegate_runtime.settings import REPO_ROOT

ADMIN = "admin"  # the broker's super user: inter-broker traffic and the stack's provisioning, nothing else
# One PostgreSQL role per service and per reader (deploy/postgres/roles.sql says what each may do).
PG_ROLES = [
    "releasegate",
    "rg_coordinator",
    "rg_gatekeeper",
    "rg_dr_checker",
    "rg_deployer",
    "rg_verifier",
    "rg_rollback",
    "rg_ops",
    "rg_shop",
    "rg_api",
    "rg_notifier",
]
# The canary cookie `rg_canary=<user>.<mac>`: HAProxy (deploy/haproxy/haproxy.cfg) sends its holder to the candidate
# only if <mac> is HMAC-SHA256(key, <user>) in lower-case hex, cut to 128 bits (unforgeable without the key, short
# enough for a cookie). The key is base64 in the file, as HAProxy's `hmac` converter takes it.
CANARY_COOKIE = "rg_canary"
CANARY_KEY = Path("haproxy") / "canary.key"
CANARY_KEY_BYTES = 32
CANARY_MAC_HEX = 32
# A user as the identities file names people; no `.`, which separates the MAC (HAProxy checks the same pattern).
CANARY_USER = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
# The local OpenID Connect provider (deploy/oidc): who signs in is listed in its directory; only the secrets live here.
OIDC_DIRECTORY = REPO_ROOT / "deploy" / "oidc" / "directory.json"
OIDC_SIGNING_KEY = Path("oidc") / "signing-key.pem"
OIDC_COOKIE_KEY = Path("oidc") / "cookie.key"
# The shop's Slack route (catalog/shop.yaml `notifications:`, route ops-slack) on the local stack: the local receiver
# (deploy/local/notify_sink.py, started by deploy/components/sink.sh) instead of a real incoming webhook.
NOTIFY_SINK_SECRET = Path("notifier") / "ops-slack.url"
NOTIFY_SINK_URL = "http://127.0.0.1:19500/slack/ops"
EDGE_SECRET = Path("varnish") / "secret"


class CanaryError(ValueError):
    """A canary cookie cannot be made: the key is missing or unreadable, or the user name is not one."""


def _write_new(path: Path, value: str) -> bool:
    """Create `path` (0600) holding `value`; False if it already exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return True


def password() -> str:
    return secrets.token_urlsafe(24)


def ensure_kafka_password(directory: Path, principal: str) -> tuple[Path, bool]:
    path = directory / "kafka" / f"{principal}.password"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path, _write_new(path, password())


def ensure(directory: Path, policy: BusPolicy) -> list[str]:
    """Create whatever secret is missing; the names of those created."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    created = []
    for principal in [ADMIN, *policy.principals]:
        if ensure_kafka_password(directory, principal)[1]:
            created.append(f"kafka/{principal}")
    (directory / "postgres").mkdir(mode=0o700, exist_ok=True)
    for role in PG_ROLES:
        if _write_new(directory / "postgres" / f"{role}.password", password()):
            created.append(f"postgres/{role}")
    keys = directory / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    if not (keys / "coordinator.key").exists():
        keygen(keys, "coordinator")
        created.append("keys/coordinator")
    # the API signs the operator commands of people it authenticated (OIDC); the coordinator and the gatekeeper
    # trust its public key as an attester's
    if not (keys / "api.key").exists():
        keygen(keys, "api")
        created.append("keys/api")
    # change records are signed with a key of their own: whoever holds it can vouch for a record, nothing else
    # (it attests no command and grants no step)
    if not (keys / "records.key").exists():
        keygen(keys, "records")
        created.append("keys/records")
    if ensure_canary_key(directory):
        created.append(str(CANARY_KEY))
    # the edge cache's management CLI secret (deploy/varnish): whoever holds it can ban what the edge serves
    (directory / EDGE_SECRET.parent).mkdir(mode=0o700, exist_ok=True)
    if _write_new(directory / EDGE_SECRET, password()):
        created.append(str(EDGE_SECRET))
    created += ensure_oidc(directory)
    return created


def ensure_oidc(directory: Path, listing: Path = OIDC_DIRECTORY) -> list[str]:
    """The OIDC provider's secrets: `oidc/<person>.password`, `oidc/<ci client>.secret`, the signing key (RSA
    2048, PKCS#8 PEM) and the cookie key; the names of those created."""
    entries = json.loads(listing.read_text())
    oidc = directory / "oidc"
    oidc.mkdir(mode=0o700, parents=True, exist_ok=True)
    created = []
    for person in entries["people"]:
        if _write_new(oidc / f"{person}.password", password()):
            created.append(f"oidc/{person}.password")
    for client in entries["ci"]:
        if _write_new(oidc / f"{client}.secret", secrets.token_urlsafe(32)):
            created.append(f"oidc/{client}.secret")
    if not (directory / OIDC_SIGNING_KEY).exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if _write_new(directory / OIDC_SIGNING_KEY, pem.decode().strip()):
            created.append(str(OIDC_SIGNING_KEY))
    if _write_new(directory / OIDC_COOKIE_KEY, secrets.token_urlsafe(32)):
        created.append(str(OIDC_COOKIE_KEY))
    return created


def ensure_notify_sink(directory: Path, url: str = NOTIFY_SINK_URL) -> bool:
    """Point the ops-slack route at the local receiver, unless the operator has put a webhook URL there already;
    True if the file was created. Owner-only file and folder, as the notifier requires of a route secret."""
    path = directory / NOTIFY_SINK_SECRET
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return _write_new(path, url)


def ensure_canary_key(directory: Path) -> bool:
    """Create the canary cookie key (random, base64) unless there is one; True if it was created."""
    path = directory / CANARY_KEY
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return _write_new(path, base64.b64encode(secrets.token_bytes(CANARY_KEY_BYTES)).decode())


def canary_key(directory: Path) -> bytes:
    """The canary cookie key; only the stack's owner can read it, as only HAProxy and the operator need it."""
    path = directory / CANARY_KEY
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise CanaryError(
            f"cannot read the canary key {path}: {exc.strerror or exc} (it is created by "
            "`make stack` and readable by the stack's owner only: run this as that operator)"
        ) from None
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CanaryError(
            f"the canary key {path} is not base64; delete it and run `make stack` to make a new one "
            "(every canary cookie given so far stops working)"
        ) from None
    if len(key) < CANARY_KEY_BYTES:
        raise CanaryError(
            f"the canary key {path} has {len(key)} bytes, fewer than {CANARY_KEY_BYTES}; delete it "
            "and run `make stack` to make a new one"
        )
    return key


def canary_cookie(key: bytes, user: str) -> str:
    """The value of the canary cookie of `user`: `<user>.<mac>`."""
    if not CANARY_USER.fullmatch(user):
        raise CanaryError(
            f"{user[:40]!r} is not a user name: 1-32 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    mac = hmac.new(key, user.encode(), hashlib.sha256).hexdigest()[:CANARY_MAC_HEX]
    return f"{user}.{mac}"


def read(directory: Path, kind: str, name: str) -> str:
    return (directory / kind / f"{name}.password").read_text().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".run" / "secrets")
    parser.add_argument(
        "--notify-sink",
        metavar="URL",
        help=f"also create {NOTIFY_SINK_SECRET} holding URL if absent (the local stack: {NOTIFY_SINK_URL})",
    )
    args = parser.parse_args()
    created = ensure(args.dir, BusPolicy.load())
    if args.notify_sink and ensure_notify_sink(args.dir, args.notify_sink):
        created.append(str(NOTIFY_SINK_SECRET))
    print(f"secrets created in {args.dir}: {', '.join(created) or 'none (all present)'}")


if __name__ == "__main__":
    main()
