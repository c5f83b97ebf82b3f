"""Per-machine secrets of the local stack, generated on the first `make stack` and never committed: a random
SCRAM password per Kafka principal (deploy/kafka/acls.yaml, plus the broker's `admin`), a random password per
PostgreSQL role, and the coordinator's ed25519 key pair for step grants. Files are owner-only (0600) in
.run/secrets (0700); an existing secret is never replaced (rotation: docs/security.md).

    python -m services.common.secrets [--dir DIR]      # idempotent; prints what it created
"""
from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from services.common.bus import BusPolicy
from services.common.settings import REPO_ROOT
from services.common.supply_chain import keygen

ADMIN = "admin"  # the broker's super user: inter-broker traffic and the stack's provisioning, nothing else
# One PostgreSQL role per service and per reader (deploy/postgres/roles.sql says what each may do).
PG_ROLES = ["releasegate", "rg_coordinator", "rg_gatekeeper", "rg_dr_checker", "rg_deployer", "rg_verifier",
            "rg_rollback", "rg_ops", "rg_shop"]


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
    return created


def read(directory: Path, kind: str, name: str) -> str:
    return (directory / kind / f"{name}.password").read_text().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".run" / "secrets")
    args = parser.parse_args()
    created = ensure(args.dir, BusPolicy.load())
    print(f"secrets created in {args.dir}: {', '.join(created) or 'none (all present)'}")


if __name__ == "__main__":
    main()
