"""Reads release bundles (tar.gz) from the artifact store: their files, manifest, migrations, and what changed
between two bundles. Reading goes through `releasegate_platform.bundle_reader`, the reader the deployer unpacks with,
so the gatekeeper judges exactly the files (and migrations) that will run."""

from __future__ import annotations

import difflib
import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from releasegate_platform import bundle_reader
from releasegate_platform.bundle_reader import BundleError

__all__ = ["BundleError", "Change", "change", "manifest", "migrations", "read"]


def read(path: Path) -> dict[str, bytes]:
    """Normalized relative path → whole content of every file in a bundle; BundleError for a bundle the
    deployer would refuse too (bad names, links, duplicates, over a size limit, migrations that are not UTF-8)."""
    files = dict(bundle_reader.read(path).files)
    bundle_reader.migrations(files)
    return files


def manifest(files: dict[str, bytes]) -> dict[str, Any]:
    try:
        return json.loads(files.get("bundle.json", b"{}"))
    except json.JSONDecodeError as exc:
        raise BundleError(f"bundle.json is not JSON: {exc}") from None


def migrations(files: dict[str, bytes]) -> dict[str, str]:
    """Migration file name → SQL, in the order they apply (file name order)."""
    return bundle_reader.migrations(files)


@dataclass(frozen=True)
class Change:
    paths: tuple[str, ...]
    lines_changed: int
    domains: tuple[str, ...]
    unclassified: tuple[str, ...]

    def as_input(self) -> dict[str, Any]:
        return {
            "files_changed": len(self.paths),
            "lines_changed": self.lines_changed,
            "domains": list(self.domains),
            "unclassified": list(self.unclassified),
            "paths": list(self.paths),
        }


def change(
    old: dict[str, bytes] | None, new: dict[str, bytes], domains: dict[str, list[str]], service_domains: list[str]
) -> Change:
    """What a candidate changes relative to the bundle in production (everything, if there is none)."""
    old = old or {}
    paths = sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p))
    lines = 0
    for p in paths:
        before = old.get(p, b"").decode("utf-8", "replace").splitlines()
        after = new.get(p, b"").decode("utf-8", "replace").splitlines()
        lines += sum(
            1
            for line in difflib.unified_diff(before, after, lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))
        )
    found, unclassified = set(service_domains), []
    for p in paths:
        hits = {d for d, globs in domains.items() if any(fnmatch.fnmatch(p, g) for g in globs)}
        found |= hits
        if not hits:
            unclassified.append(p)
    return Change(tuple(paths), lines, tuple(sorted(found)), tuple(unclassified))
