"""Content-addressed artifact store: immutable bundles at `<store>/sha256/<hex>.tar.gz`, referenced by digest."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

DIGEST = re.compile(r"^sha256:(?P<hex>[0-9a-f]{64})$")


class ArtifactError(Exception):
    """The artifact reference is not a digest, is missing, or its content does not match its digest."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        m = DIGEST.match(digest)
        if not m:
            raise ArtifactError(f"artifact must be referenced by sha256 digest, got {digest!r} (tags are refused)")
        return self.root / "sha256" / f"{m['hex']}.tar.gz"

    def verify(self, digest: str) -> Path:
        """Path of the artifact after re-hashing it; raises if it is absent or tampered with."""
        path = self.path(digest)
        if not path.is_file():
            raise ArtifactError(f"artifact {digest} is not in the store {self.root}")
        actual = sha256_file(path)
        if actual != digest:
            raise ArtifactError(f"artifact content hashes to {actual}, not {digest}: refusing a tampered artifact")
        return path
