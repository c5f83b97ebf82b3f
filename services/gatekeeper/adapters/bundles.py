"""Reads release bundles (tar.gz) from the artifact store: their files, manifest, migrations, and what changed
between two bundles."""
from __future__ import annotations

import difflib
import fnmatch
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIGRATIONS_DIR = "migrations/"
MAX_FILE_BYTES = 4 << 20


class BundleError(Exception):
    """The bundle cannot be read."""


def read(path: Path) -> dict[str, bytes]:
    """Relative path → content of every regular file in a bundle."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            return {m.name: tar.extractfile(m).read(MAX_FILE_BYTES)  # type: ignore[union-attr]
                    for m in tar.getmembers() if m.isfile()}
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"cannot read bundle {path.name}: {exc}") from None


def manifest(files: dict[str, bytes]) -> dict[str, Any]:
    try:
        return json.loads(files.get("bundle.json", b"{}"))
    except json.JSONDecodeError as exc:
        raise BundleError(f"bundle.json is not JSON: {exc}") from None


def migrations(files: dict[str, bytes]) -> dict[str, str]:
    """Migration file name → SQL, in the order they apply (file name order)."""
    return {name.removeprefix(MIGRATIONS_DIR): files[name].decode("utf-8", "replace")
            for name in sorted(files) if name.startswith(MIGRATIONS_DIR) and name.endswith(".sql")}


@dataclass(frozen=True)
class Change:
    paths: tuple[str, ...]
    lines_changed: int
    domains: tuple[str, ...]
    unclassified: tuple[str, ...]

    def as_input(self) -> dict[str, Any]:
        return {"files_changed": len(self.paths), "lines_changed": self.lines_changed,
                "domains": list(self.domains), "unclassified": list(self.unclassified), "paths": list(self.paths)}


def change(old: dict[str, bytes] | None, new: dict[str, bytes], domains: dict[str, list[str]],
           service_domains: list[str]) -> Change:
    """What a candidate changes relative to the bundle in production (everything, if there is none)."""
    old = old or {}
    paths = sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p))
    lines = 0
    for p in paths:
        before = old.get(p, b"").decode("utf-8", "replace").splitlines()
        after = new.get(p, b"").decode("utf-8", "replace").splitlines()
        lines += sum(1 for line in difflib.unified_diff(before, after, lineterm="", n=0)
                     if line[:1] in "+-" and not line.startswith(("+++", "---")))
    found, unclassified = set(service_domains), []
    for p in paths:
        hits = {d for d, globs in domains.items() if any(fnmatch.fnmatch(p, g) for g in globs)}
        found |= hits
        if not hits:
            unclassified.append(p)
    return Change(tuple(paths), lines, tuple(sorted(found)), tuple(unclassified))
